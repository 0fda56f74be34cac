"""Jobs as the rest of the server sees them (``api.schemas`` turns them into MONAI Label's task objects)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

__all__ = ["Job", "JobKind", "JobStatus", "LOG_TAIL_LINES"]

#: Lines of a job's log kept for the task object's ``details`` (MONAI Label keeps 20).
LOG_TAIL_LINES = 20


class JobStatus(StrEnum):
    SUBMITTED = "SUBMITTED"
    RUNNING = "RUNNING"
    DONE = "DONE"
    ERROR = "ERROR"
    STOPPED = "STOPPED"


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

    @property
    def active(self) -> bool:
        return self.status in (JobStatus.SUBMITTED, JobStatus.RUNNING)
