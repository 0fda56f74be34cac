"""Durable jobs in the database (train, scoring, batch inference), worker processes, runners.

The worker loop (``Worker``, ``JobQueue``, the runners) is imported at once and needs only the
database: an idle ``labelloop worker`` holds no torch, MONAI, datastore or app. What runs jobs or
submits them (``execute_job``, ``JobService``) is imported on first use, in the job's process or the
server.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from labelloop.jobs.census import JobCensus
from labelloop.jobs.queue import JobQueue
from labelloop.jobs.records import Job, JobKind, JobStatus
from labelloop.jobs.runner import RunHandle, Runner, SubprocessRunner, die_with_parent
from labelloop.jobs.settings_file import write_settings_file
from labelloop.jobs.worker import Worker

if TYPE_CHECKING:
    from labelloop.jobs.execute import execute_job
    from labelloop.jobs.service import AUTOTRAIN_USER, STOP_ANSWER_S, JobService

__all__ = [
    "AUTOTRAIN_USER",
    "STOP_ANSWER_S",
    "Job",
    "JobCensus",
    "JobKind",
    "JobQueue",
    "JobService",
    "JobStatus",
    "RunHandle",
    "Runner",
    "SubprocessRunner",
    "Worker",
    "die_with_parent",
    "execute_job",
    "write_settings_file",
]

#: Names imported on first use: their modules pull the datastore, the inference service and the tasks.
_LAZY = {
    "execute_job": "labelloop.jobs.execute",
    "AUTOTRAIN_USER": "labelloop.jobs.service",
    "STOP_ANSWER_S": "labelloop.jobs.service",
    "JobService": "labelloop.jobs.service",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
