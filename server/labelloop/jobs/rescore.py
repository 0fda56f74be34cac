"""When a model's active version changes: stop scoring with the old version, queue rescoring.

Scores of the old version are stale; a scoring job still running with it would only write more of
them (strategies rank by the active version's scores alone, and ``ScoreStore`` refuses a score whose
version is no longer active, so such a job stops at its next image anyway: asking it to stop here
frees the worker at once).
"""

from __future__ import annotations

from sqlalchemy import Connection

from labelloop.jobs.queue import JobQueue
from labelloop.jobs.records import Job, JobKind, JobStatus
from labelloop.tasks import App

__all__ = ["RESCORE_PRIORITY", "queue_rescoring_in", "stop_stale_scoring_in"]

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


def stop_stale_scoring_in(
    conn: Connection, queue: JobQueue, app: App, model: str, version: int | None, user: str
) -> list[Job]:
    """Ask the running scoring jobs that score ``model`` with a version other than ``version`` (the
    one active now; ``None``: no version is) to stop, in ``conn``'s write transaction.

    A scoring job records the version it scores with in its ``metrics`` when it starts. Queued ones
    are left alone: they score whichever version is active when they start. One that started but has
    not recorded its version yet finds its scores refused (``ScoreStore.put``) and stops by itself.
    """
    methods = {name for name, method in app.scoring.items() if method.spec.model == model}
    queue.lock_in(conn, JobKind.SCORING)
    stopped = []
    for job in queue.active_in(conn, JobKind.SCORING):
        scored = job.metrics.get("model_version")
        if job.status != JobStatus.RUNNING or job.cancel_requested or job.name not in methods:
            continue
        if job.metrics.get("model") != model:
            continue
        if scored is None or scored == version:
            continue
        now = version if version is not None else "none"
        line = f"stopped by {user}: it scores with {model} version {scored}, and the active version is {now}"
        if queue.request_stop_in(conn, job.id, line):
            stopped.append(job)
    return stopped
