"""Jobs as the rest of the server sees them (``api.schemas`` turns them into MONAI Label's task objects)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

__all__ = ["ClaimState", "Job", "JobKind", "JobStatus", "LOG_TAIL_LINES"]

#: Lines of a job's log kept for the task object's ``details`` (MONAI Label keeps 20).
LOG_TAIL_LINES = 20


class JobStatus(StrEnum):
    SUBMITTED = "SUBMITTED"
    RUNNING = "RUNNING"
    DONE = "DONE"
    ERROR = "ERROR"
    STOPPED = "STOPPED"


class ClaimState(StrEnum):
    """Where a claim on a job stands, as its worker and its process see it.

    ``HELD``: the job runs under this claim; ``STOP``: it does, and a stop was asked for;
    ``ENDED``: the job reached a final status under this claim; ``LOST``: the claim was revoked
    (the reaper declared the job lost): nothing the holder writes is accepted any more.
    """

    HELD = "held"
    STOP = "stop"
    ENDED = "ended"
    LOST = "lost"


class JobKind(StrEnum):
    TRAIN = "train"
    SCORING = "scoring"
    BATCH_INFER = "batch_infer"


@dataclass(frozen=True)
class Job:
    """One durable job: ``kind`` is train, scoring or batch_infer; ``name`` is the trainer or method."""

    id: str
    kind: JobKind
    name: str
    request: dict[str, Any]
    config: dict[str, Any]
    status: JobStatus
    priority: int
    progress: dict[str, Any]
    metrics: dict[str, Any]
    result: Any
    log_tail: list[str]
    error: str | None
    worker_id: str | None
    pid: int | None
    heartbeat_at: float | None
    cancel_requested: bool
    created_by: str
    created_at: float
    started_at: float | None
    finished_at: float | None
    resume_from: str | None
    #: The token of the claim the job runs under: every write of its worker and process checks it.
    claim_token: str | None = None

    @property
    def active(self) -> bool:
        return self.status in (JobStatus.SUBMITTED, JobStatus.RUNNING)
