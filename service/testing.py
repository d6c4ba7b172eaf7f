"""Test doubles: a ``FakeDispatcher`` that records submissions instead of talking to Ray.

A test reads ``fake.submissions`` (each with its per-job secret) and drives a job by POSTing driver events to
``/internal/jobs/{id}/events`` (see ``driver_events``), or sets what the "cluster" says with ``set_state``.
"""

from __future__ import annotations

from typing import Any

from service.dispatcher import DriverInfo, DriverState, Submission
from service.errors import Unavailable


class FakeDispatcher:
    def __init__(self, nodes: list[dict[str, float]] | None = None) -> None:
        self.nodes = nodes if nodes is not None else [{"CPU": 2.0, "GPU": 0.0}]
        self.submissions: list[Submission] = []
        self.cancelled: list[str] = []
        self.states: dict[str, DriverInfo] = {}
        self.log_text: dict[str, str] = {}
        self.available = True
        self.started = False

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.started = False

    def node_resources(self) -> list[dict[str, float]]:
        return list(self.nodes)

    async def refresh(self) -> None:
        self._check()

    async def submit(self, submission: Submission) -> None:
        self._check()
        self.submissions.append(submission)
        self.states[submission.submission_id] = DriverInfo(DriverState.RUNNING)

    async def cancel(self, submission_id: str) -> None:
        self._check()
        self.cancelled.append(submission_id)
        if submission_id in self.states:
            self.states[submission_id] = DriverInfo(DriverState.STOPPED, "stopped")

    async def get_driver(self, submission_id: str) -> DriverInfo:
        self._check()
        return self.states.get(submission_id, DriverInfo(DriverState.UNKNOWN, "unknown"))

    async def logs(self, submission_id: str) -> str:
        self._check()
        return self.log_text.get(submission_id, "")

    async def ready(self) -> str | None:
        return None if self.available else "fake cluster down"

    # -- helpers for tests -----------------------------------------------------------------------------------------
    def _check(self) -> None:
        if not self.available:
            raise Unavailable("fake cluster down")

    def set_state(self, submission_id: str, state: DriverState, message: str = "") -> None:
        self.states[submission_id] = DriverInfo(state, message)

    def submission(self, job_id: str) -> Submission:
        return next(s for s in self.submissions if s.job_id == job_id)


def driver_events(
    trial_ids: list[str],
    epochs: int = 2,
    *,
    metric: str = "balanced_accuracy",
    start_seq: int = 1,
    control: str | None = None,
) -> list[dict[str, Any]]:
    """A plausible event stream of a job (trial_started, epochs, trial_finished per trial), with seq numbers."""
    events: list[dict[str, Any]] = []
    seq = start_seq
    for i, trial_id in enumerate(trial_ids):
        is_control = trial_id == control
        branch = "ce" if is_control else f"loss{i}"
        events.append(
            {
                "seq": seq,
                "type": "trial_started",
                "trial_id": trial_id,
                "branch": branch,
                "branch_index": -1 if is_control else i,
                "is_control": is_control,
                "config": {"loss": branch, "lr": 0.1},
                "time": 1000.0 + seq,
            }
        )
        seq += 1
        for epoch in range(1, epochs + 1):
            value = round(0.1 * epoch + 0.05 * i, 4)
            events.append(
                {
                    "seq": seq,
                    "type": "epoch",
                    "trial_id": trial_id,
                    "epoch": epoch,
                    "time": 1000.0 + seq,
                    "metrics": {
                        metric: value,
                        f"val_{metric}": round(value - 0.02, 4),  # the validation split's, chosen on by default
                        "accuracy": value,
                        "train_loss": 1.0 / epoch,
                        "per_class_accuracy": [value, value],
                    },
                }
            )
            seq += 1
        events.append(
            {
                "seq": seq,
                "type": "trial_finished",
                "trial_id": trial_id,
                "status": "succeeded",
                "error": None,
                "time": 1000.0 + seq,
            }
        )
        seq += 1
    return events
