"""Durable jobs in the database (train, scoring, batch inference), worker processes, runners."""

from labelloop.jobs.census import JobCensus
from labelloop.jobs.execute import execute_job
from labelloop.jobs.queue import JobQueue
from labelloop.jobs.records import Job, JobKind, JobStatus
from labelloop.jobs.runner import RunHandle, Runner, SubprocessRunner, die_with_parent
from labelloop.jobs.service import AUTOTRAIN_USER, STOP_ANSWER_S, JobService
from labelloop.jobs.worker import Worker

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
]
