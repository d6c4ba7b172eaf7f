"""Request and response bodies, one model per direction (all ``extra="forbid"`` on input)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, StringConstraints, Tag, model_validator

from jobs.results import JobResult
from service.status import JobStatus


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorInfo(_Out):
    code: str
    message: str
    details: Any = None


class ErrorResponse(_Out):
    error: ErrorInfo


class BestSoFar(_Out):
    trial_id: str
    branch: str | None
    epoch: int | None
    value: float


class Progress(_Out):
    trials_total: int
    trials_done: int
    trials_running: int
    epochs_reported: int
    metric: str
    mode: Literal["max", "min"]
    best: BestSoFar | None


class JobLinks(_Out):
    self: str
    results: str
    events: str
    logs: str
    cancel: str
    model: str | None = None
    predict: str | None = None


class JobRead(_Out):
    id: str
    name: str
    owner: str
    status: JobStatus
    created_at: float
    started_at: float | None
    finished_at: float | None
    error: str | None
    progress: Progress
    spec: dict[str, Any] = Field(description="The JobSpec as submitted (validated, defaults filled in).")
    links: JobLinks
    resumes: int = Field(0, description="Times the job resumed from its checkpoints after its Ray cluster lost it.")
    resume_history: list[dict[str, Any]] = Field(
        default_factory=list, description="Each resume: its time and reason, oldest first."
    )


class JobList(_Out):
    items: list[JobRead]
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page; null on the last page.")


class JobResults(JobResult):
    """The JobResult (``jobs.results.JobResult``) plus the job's id and status; partial until ``complete``."""

    job_id: str
    status: JobStatus
    complete: bool


# -- driver events (POST /internal/jobs/{id}/events) -------------------------------------------------------------
# Every event is validated against the model of its type, so that a malformed one is a 422 naming the field, never
# a 500 in the store. Unknown types (a newer driver) are kept as they are: they only need a seq and a type.
_Id = Annotated[str, StringConstraints(min_length=1, max_length=128)]
_Text = Annotated[str, StringConstraints(max_length=20_000)]
_SmallInt = Annotated[int, Field(ge=-1, le=1_000_000)]


class _EventBase(BaseModel):
    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

    seq: int = Field(ge=0, le=2**62)
    time: float | None = Field(None, ge=0, le=1e11)


class TrialStarted(_EventBase):
    type: Literal["trial_started"]
    trial_id: _Id
    branch: Annotated[str, StringConstraints(max_length=128)] | None = None
    branch_index: _SmallInt | None = None
    is_control: bool = False
    config: dict[str, Any] | None = None
    config_id: Annotated[str, StringConstraints(max_length=256)] | None = None
    seed: Annotated[int, Field(ge=0, le=2**32 + 1000)] | None = None


class EpochEvent(_EventBase):
    type: Literal["epoch"]
    trial_id: _Id
    epoch: Annotated[int, Field(ge=0, le=1_000_000)]
    metrics: dict[str, Any] = Field(default_factory=dict)
    checkpoint_path: Annotated[str, StringConstraints(max_length=4096)] | None = None


class TrialFinished(_EventBase):
    type: Literal["trial_finished"]
    trial_id: _Id
    status: Annotated[str, StringConstraints(min_length=1, max_length=32)] | None = None
    error: _Text | None = None


class _TrialBestIn(BaseModel):
    model_config = ConfigDict(extra="allow")

    epoch: _SmallInt | None = None
    value: float | None = None


class _TrialResultIn(BaseModel):
    model_config = ConfigDict(extra="allow")

    trial_id: _Id
    branch: Annotated[str, StringConstraints(max_length=128)] | None = None
    branch_index: _SmallInt | None = None
    is_control: bool = False
    config: dict[str, Any] | None = None
    status: Annotated[str, StringConstraints(max_length=32)] | None = None
    error: _Text | None = None
    best: _TrialBestIn | None = None
    history: list[dict[str, Any]] | None = None


class _JobResultIn(BaseModel):
    model_config = ConfigDict(extra="allow")

    trials: list[_TrialResultIn] = Field(default_factory=list, max_length=100_000)


class JobFinished(_EventBase):
    type: Literal["job_finished"]
    result: _JobResultIn | None = None


class JobFailed(_EventBase):
    type: Literal["job_failed"]
    error: _Text | None = None


class OtherEvent(_EventBase):
    type: Annotated[str, StringConstraints(min_length=1, max_length=32, pattern=r"^[a-z][a-z0-9_]*$")]


_KNOWN_EVENTS = ("trial_started", "epoch", "trial_finished", "job_finished", "job_failed")
EVENT_TAGS = frozenset({*_KNOWN_EVENTS, "other"})


def _event_kind(value: Any) -> str:
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    return kind if kind in _KNOWN_EVENTS else "other"


DriverEvent = Annotated[
    Annotated[TrialStarted, Tag("trial_started")]
    | Annotated[EpochEvent, Tag("epoch")]
    | Annotated[TrialFinished, Tag("trial_finished")]
    | Annotated[JobFinished, Tag("job_finished")]
    | Annotated[JobFailed, Tag("job_failed")]
    | Annotated[OtherEvent, Tag("other")],
    Discriminator(_event_kind),
]


class EventBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    events: list[DriverEvent] = Field(max_length=10_000)


class IngestResult(_Out):
    accepted: int
    duplicates: int


class Health(_Out):
    status: Literal["ok"]
    auth: bool = Field(description="Whether the API needs a bearer token (so a client can ask for one first).")


class Readiness(_Out):
    status: Literal["ready", "unready"]
    store: str
    ray: str


_Finite = Annotated[float, Field(allow_inf_nan=False)]
MAX_PREDICT_ROWS = 4096  # the schema's bound; settings.max_predict_rows is the service's (lower) limit
MAX_ROW_VALUES = 1 << 16


class PredictRequest(BaseModel):
    """Rows to classify with a job's model (the best finished trial at its selected epoch, or ``trial_id``'s)."""

    model_config = ConfigDict(extra="forbid")

    rows: list[Annotated[list[_Finite], Field(min_length=1, max_length=MAX_ROW_VALUES)]] | None = Field(
        None,
        min_length=1,
        max_length=MAX_PREDICT_ROWS,
        description="One list of numbers per input: the model's input shape, flattened (the manifest's input.shape).",
    )
    images: list[Annotated[str, StringConstraints(min_length=1, max_length=1 << 20)]] | None = Field(
        None,
        min_length=1,
        max_length=MAX_PREDICT_ROWS,
        description="Image models: base64 image files (PNG, JPEG, ...), preprocessed as the model's manifest says.",
    )
    trial_id: Annotated[str, StringConstraints(min_length=1, max_length=128)] | None = None
    posthoc: Literal["auto", "none"] | Annotated[float, Field(ge=0, le=10, allow_inf_nan=False)] = Field(
        "auto", description='"auto" (the adjustment chosen on validation), "none" (raw), or a logit-adjustment tau'
    )
    top_k: int = Field(5, ge=1, le=1000)

    @model_validator(mode="after")
    def _one_kind_of_input(self) -> PredictRequest:
        if (self.rows is None) == (self.images is None):
            raise ValueError("give either rows or images")
        return self


class TopClass(_Out):
    index: int
    name: str
    probability: float


class Prediction(_Out):
    top: list[TopClass]


class PredictResponse(_Out):
    job_id: str
    trial_id: str
    epoch: int
    posthoc: dict[str, Any]
    predictions: list[Prediction]


class DeleteResponse(_Out):
    job_id: str
    deleted: bool
    removed: list[str] = Field(description="The job's folders removed under the storage path")
