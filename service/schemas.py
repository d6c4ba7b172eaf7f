"""Request and response bodies, one model per direction (all ``extra="forbid"`` on input)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from service.store import JobStatus


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


class JobResults(BaseModel):
    """The JobResult of docs/ARCHITECTURE.md plus the job's id and status; partial until ``complete``."""

    model_config = ConfigDict(extra="allow")

    job_id: str
    status: JobStatus
    complete: bool
    job_name: str
    metric: str
    mode: str
    best_scope: str
    dataset: dict[str, Any] | None
    trials: list[dict[str, Any]]
    best_trial: dict[str, Any] | None
    control_trial_id: str | None
    branches: list[dict[str, Any]]


class DriverEvent(BaseModel):
    """One event of a driver (docs/ARCHITECTURE.md) with the driver's sequence number."""

    model_config = ConfigDict(extra="allow")

    seq: int = Field(ge=0, le=2**62)
    type: str = Field(min_length=1, max_length=32)
    time: float | None = None


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
