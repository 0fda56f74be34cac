"""Queue rescoring when a model's active version changes: scores of the old version are stale."""

from __future__ import annotations

from sqlalchemy import Connection

from labelloop.jobs.queue import JobQueue
from labelloop.jobs.records import Job, JobKind, JobStatus
from labelloop.tasks import App

__all__ = ["RESCORE_PRIORITY", "queue_rescoring_in"]

#: Below training and batch inference; interactive inference never waits on jobs at all.
RESCORE_PRIORITY = -10


def queue_rescoring_in(
    conn: Connection, queue: JobQueue, app: App, model: str, user: str, cause: str
) -> list[Job]:
    """One scoring job per app scoring method that reads ``model``, unless that method already has
    one queued (it will read the active version when it starts, so a second would find nothing new).

    Runs in ``conn``'s write transaction, so the jobs exist exactly when the activation that made
    them necessary does. Scoring is incremental, so the job rescores only images whose stored score
    came from another version (or whose image changed). ``cause`` (a job id, ``activate``,
    ``upload``) is kept in the job's request for the log.
    """
    active = queue.active_in(conn, JobKind.SCORING)
    queued = {job.name for job in active if job.status == JobStatus.SUBMITTED}
    submitted = []
    for name, method in app.scoring.items():
        if method.spec.model != model or name in queued:
            continue
        submitted.append(
            queue.submit_in(
                conn,
                JobKind.SCORING,
                name,
                request={"method": name, "after": cause},
                config={},
                user=user,
                priority=RESCORE_PRIORITY,
            )
        )
    return submitted
