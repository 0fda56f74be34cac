"""Jobs as the rest of the server sees them, and MONAI Label's task-object view of them."""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

__all__ = ["Job", "JobKind", "JobStatus", "format_ts", "LOG_TAIL_LINES"]

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


def format_ts(ts: float) -> str:
    """MONAI Label's task timestamp: local time ``YYYY-mm-dd HH:MM:SS``."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


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

    def task_view(self) -> dict[str, Any]:
        """The task object of MONAI Label section 2.14 (plus our ``kind``, ``progress``, ``result``)."""
        view: dict[str, Any] = {
            "id": self.id,
            "status": self.status.value,
            "request": self.request,
            "start_ts": format_ts(self.started_at or self.created_at),
            "kind": self.kind.value,
            "name": self.name,
        }
        if self.status != JobStatus.SUBMITTED:
            details = list(self.log_tail)
            if not details:
                # Slicer reads details[-1] of a stopped task: never leave it empty.
                details = [self.error or f"{self.kind.value} job {self.status.value.lower()}"]
            view["details"] = details
        if self.finished_at is not None:
            view["end_ts"] = format_ts(self.finished_at)
        if self.progress:
            view["progress"] = self.progress
        if self.result is not None:
            view["result"] = self.result
        if self.error:
            view["error"] = self.error
        return view
