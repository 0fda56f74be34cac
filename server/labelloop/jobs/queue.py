"""The durable job queue in the database: submit, claim, heartbeat, progress, finish, cancel, reap."""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection, RowMapping, desc, func, insert, select, update

from labelloop.datastore import pid_alive
from labelloop.db import Database
from labelloop.errors import AlreadyRunningError, JobNotFoundError
from labelloop.jobs.models import jobs, workers
from labelloop.jobs.records import LOG_TAIL_LINES, Job, JobKind, JobStatus

__all__ = ["JobQueue"]

logger = logging.getLogger(__name__)

_ACTIVE = (JobStatus.SUBMITTED.value, JobStatus.RUNNING.value)


class JobQueue:
    """Jobs live in the ``jobs`` table; every state change is one transaction.

    Claiming is atomic: on PostgreSQL ``FOR UPDATE SKIP LOCKED`` so two workers never take
    the same job; on SQLite the ``BEGIN IMMEDIATE`` write lock does the same.
    """

    def __init__(self, db: Database, clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self._clock = clock

    @staticmethod
    def _record(row: RowMapping) -> Job:
        return Job(
            id=row["id"],
            kind=JobKind(row["kind"]),
            name=row["name"],
            request=dict(row["request"] or {}),
            config=dict(row["config"] or {}),
            status=JobStatus(row["status"]),
            priority=int(row["priority"]),
            progress=dict(row["progress"] or {}),
            metrics=dict(row["metrics"] or {}),
            result=row["result"],
            log_tail=list(row["log_tail"] or []),
            error=row["error"],
            worker_id=row["worker_id"],
            pid=row["pid"],
            heartbeat_at=row["heartbeat_at"],
            cancel_requested=bool(row["cancel_requested"]),
            created_by=row["created_by"],
            created_at=float(row["created_at"]),
            started_at=row["started_at"],
            finished_at=row["finished_at"],
            resume_from=row["resume_from"],
        )

    def _get_in(self, conn: Connection, job_id: str) -> Job:
        row = conn.execute(select(jobs).where(jobs.c.id == job_id)).mappings().first()
        if row is None:
            raise JobNotFoundError(f"Task '{job_id}' not found")
        return self._record(row)

    # ------------------------------------------------------------ submitting and reading

    def submit(
        self,
        kind: JobKind,
        name: str,
        *,
        request: dict[str, Any],
        config: dict[str, Any],
        user: str,
        priority: int = 0,
        exclusive: bool = False,
        exclusive_per_name: bool = False,
        resume_from: str | None = None,
    ) -> Job:
        """Queue a job. With ``exclusive``, refuse if a job of this kind (with
        ``exclusive_per_name``: of this kind and name) is queued or running.

        The check and the insert are one transaction, so two requests at once cannot both pass
        (MONAI Label's race, its bug 4).
        """
        with self._db.write() as conn:
            job = self.submit_in(
                conn,
                kind,
                name,
                request=request,
                config=config,
                user=user,
                priority=priority,
                exclusive=exclusive,
                exclusive_per_name=exclusive_per_name,
                resume_from=resume_from,
            )
        logger.info("job %s queued: %s %s", job.id, kind.value, name)
        return job

    def submit_in(
        self,
        conn: Connection,
        kind: JobKind,
        name: str,
        *,
        request: dict[str, Any],
        config: dict[str, Any],
        user: str,
        priority: int = 0,
        exclusive: bool = False,
        exclusive_per_name: bool = False,
        resume_from: str | None = None,
    ) -> Job:
        """``submit`` in ``conn``'s write transaction (the job exists once that commits)."""
        job_id = str(uuid.uuid4())
        self._db.lock(conn, f"jobs:{kind.value}")
        if exclusive:
            same = [jobs.c.kind == kind.value, jobs.c.status.in_(_ACTIVE)]
            if exclusive_per_name:
                same.append(jobs.c.name == name)
            busy = conn.execute(select(jobs.c.id).where(*same).limit(1)).first()
            if busy is not None:
                what = f"{kind.value.capitalize()} Task" + (f" '{name}'" if exclusive_per_name else "")
                raise AlreadyRunningError(f"++++++++++ {what} is Already Running")
        conn.execute(
            insert(jobs).values(
                id=job_id,
                kind=kind.value,
                name=name,
                request=request,
                config=config,
                status=JobStatus.SUBMITTED.value,
                priority=priority,
                progress={},
                metrics={},
                result=None,
                log_tail=[],
                cancel_requested=False,
                created_by=user,
                created_at=self._clock(),
                resume_from=resume_from,
            )
        )
        return self._get_in(conn, job_id)

    def get(self, job_id: str) -> Job:
        with self._db.read() as conn:
            return self._get_in(conn, job_id)

    def recent(self, kind: JobKind, *, name: str | None = None, limit: int | None = None) -> list[Job]:
        """Jobs of ``kind``, newest first."""
        query = select(jobs).where(jobs.c.kind == kind.value)
        if name is not None:
            query = query.where(jobs.c.name == name)
        query = query.order_by(desc(jobs.c.created_at))
        if limit is not None:
            query = query.limit(limit)
        with self._db.read() as conn:
            return [self._record(r) for r in conn.execute(query).mappings()]

    def active(self, kind: JobKind) -> list[Job]:
        """Queued and running jobs of ``kind``, oldest first."""
        with self._db.read() as conn:
            return self.active_in(conn, kind)

    def active_in(self, conn: Connection, kind: JobKind) -> list[Job]:
        """``active`` in ``conn``'s transaction."""
        rows = conn.execute(
            select(jobs)
            .where(jobs.c.kind == kind.value, jobs.c.status.in_(_ACTIVE))
            .order_by(jobs.c.created_at)
        ).mappings()
        return [self._record(r) for r in rows]

    # ------------------------------------------------------------ workers

    def register_worker(self) -> str:
        worker_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        now = self._clock()
        with self._db.write() as conn:
            conn.execute(
                insert(workers).values(
                    id=worker_id, host=socket.gethostname(), pid=os.getpid(), started_at=now, heartbeat_at=now
                )
            )
        return worker_id

    def worker_heartbeat(self, worker_id: str) -> None:
        with self._db.write() as conn:
            conn.execute(update(workers).where(workers.c.id == worker_id).values(heartbeat_at=self._clock()))

    def live_workers(self, stale_after_s: float) -> int:
        """Workers of any server on this database that heartbeat in the last ``stale_after_s`` seconds."""
        since = self._clock() - stale_after_s
        with self._db.read() as conn:
            query = select(func.count()).where(
                workers.c.stopped_at.is_(None), workers.c.heartbeat_at >= since
            )
            return int(conn.execute(query).scalar_one())

    def worker_stopped(self, worker_id: str) -> None:
        with self._db.write() as conn:
            conn.execute(update(workers).where(workers.c.id == worker_id).values(stopped_at=self._clock()))

    # ------------------------------------------------------------ running

    def claim(self, worker_id: str, kinds: tuple[JobKind, ...] = tuple(JobKind)) -> Job | None:
        """Take the most urgent queued job (highest priority, then oldest), or ``None``."""
        now = self._clock()
        with self._db.write() as conn:
            row = conn.execute(
                select(jobs.c.id)
                .where(jobs.c.status == JobStatus.SUBMITTED.value, jobs.c.kind.in_([k.value for k in kinds]))
                .order_by(desc(jobs.c.priority), jobs.c.created_at)
                .limit(1)
                .with_for_update(skip_locked=True)
            ).first()
            if row is None:
                return None
            taken = conn.execute(
                update(jobs)
                .where(jobs.c.id == row.id, jobs.c.status == JobStatus.SUBMITTED.value)
                .values(status=JobStatus.RUNNING.value, worker_id=worker_id, started_at=now, heartbeat_at=now)
            )
            if taken.rowcount != 1:
                return None
            return self._get_in(conn, row.id)

    def started(self, job_id: str, pid: int) -> None:
        with self._db.write() as conn:
            conn.execute(update(jobs).where(jobs.c.id == job_id).values(pid=pid, heartbeat_at=self._clock()))

    def cancel_requested(self, job_id: str) -> bool:
        """Whether a stop was asked for (one column, cheap enough to poll)."""
        with self._db.read() as conn:
            row = conn.execute(select(jobs.c.cancel_requested).where(jobs.c.id == job_id)).first()
        return bool(row is not None and row.cancel_requested)

    def heartbeat(self, job_id: str) -> bool:
        """Refresh a running job's heartbeat; returns whether it was asked to stop."""
        with self._db.write() as conn:
            conn.execute(
                update(jobs)
                .where(jobs.c.id == job_id, jobs.c.status == JobStatus.RUNNING.value)
                .values(heartbeat_at=self._clock())
            )
            row = conn.execute(select(jobs.c.cancel_requested).where(jobs.c.id == job_id)).first()
        return bool(row is not None and row.cancel_requested)

    def report(
        self,
        job_id: str,
        *,
        progress: dict[str, Any] | None = None,
        metrics: dict[str, Any] | None = None,
        lines: list[str] | None = None,
    ) -> None:
        """Record progress, metrics and log lines of a running job (the tail keeps the last 20 lines)."""
        with self._db.write() as conn:
            values: dict[str, Any] = {"heartbeat_at": self._clock()}
            if progress is not None:
                values["progress"] = progress
            if metrics is not None:
                values["metrics"] = metrics
            if lines:
                current = conn.execute(
                    select(jobs.c.log_tail).where(jobs.c.id == job_id)
                ).scalar_one_or_none()
                values["log_tail"] = (list(current or []) + lines)[-LOG_TAIL_LINES:]
            conn.execute(update(jobs).where(jobs.c.id == job_id).values(**values))

    def finish(
        self,
        job_id: str,
        status: JobStatus,
        *,
        result: Any = None,
        error: str | None = None,
        line: str | None = None,
    ) -> bool:
        """Move a running (or queued) job to a final status; False if it had already ended."""
        with self._db.write() as conn:
            job = self._get_in(conn, job_id)
            if not job.active:
                return False
            values: dict[str, Any] = {"status": status.value, "finished_at": self._clock()}
            if result is not None:
                values["result"] = result
            if error is not None:
                values["error"] = error
            if line:
                values["log_tail"] = (job.log_tail + [line])[-LOG_TAIL_LINES:]
            conn.execute(update(jobs).where(jobs.c.id == job_id).values(**values))
        logger.info("job %s %s%s", job_id, status.value, f": {error}" if error else "")
        return True

    def cancel(self, kind: JobKind, user: str) -> tuple[list[Job], list[Job]]:
        """Stop every job of ``kind``: queued ones end now, running ones are asked to stop.

        Returns ``(running jobs asked to stop, queued jobs cancelled)``. The worker running a
        job sees the request, stops the job's process tree and marks it ``STOPPED``.
        """
        now = self._clock()
        line = f"stopped by {user} at {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(now))}"
        with self._db.write() as conn:
            self._db.lock(conn, f"jobs:{kind.value}")
            rows = [
                self._record(r)
                for r in conn.execute(
                    select(jobs).where(jobs.c.kind == kind.value, jobs.c.status.in_(_ACTIVE))
                ).mappings()
            ]
            running, queued = [], []
            for job in rows:
                if job.status == JobStatus.RUNNING:
                    conn.execute(update(jobs).where(jobs.c.id == job.id).values(cancel_requested=True))
                    running.append(job)
                else:
                    conn.execute(
                        update(jobs)
                        .where(jobs.c.id == job.id)
                        .values(
                            status=JobStatus.STOPPED.value,
                            finished_at=now,
                            cancel_requested=True,
                            log_tail=(job.log_tail + [f"cancelled before it started; {line}"])[
                                -LOG_TAIL_LINES:
                            ],
                        )
                    )
                    queued.append(job)
        return running, queued

    def reap(self, stale_after_s: float) -> list[Job]:
        """Mark ERROR the running jobs whose worker died: no heartbeat for ``stale_after_s``, or a
        worker process on this host that no longer exists (a server restart, kill -9)."""
        now = self._clock()
        host = socket.gethostname()
        dead: list[tuple[Job, str]] = []
        with self._db.read() as conn:
            rows = conn.execute(
                select(jobs, workers.c.host, workers.c.pid.label("worker_pid"))
                .outerjoin(workers, workers.c.id == jobs.c.worker_id)
                .where(jobs.c.status == JobStatus.RUNNING.value)
            ).mappings()
            for row in rows:
                job = self._record(row)
                beat = job.heartbeat_at or job.started_at or job.created_at
                if row["host"] == host and row["worker_pid"] is not None and not pid_alive(row["worker_pid"]):
                    dead.append(
                        (job, f"its worker (process {row['worker_pid']}) is gone: server restart or crash")
                    )
                elif job.pid is not None and row["host"] == host and not pid_alive(job.pid):
                    if now - beat > min(stale_after_s, 5.0):
                        dead.append((job, f"its process {job.pid} died without finishing"))
                elif now - beat > stale_after_s:
                    dead.append((job, f"no heartbeat for {now - beat:.0f} s: its worker died"))
        reaped = []
        for job, reason in dead:
            if self.finish(job.id, JobStatus.ERROR, error=f"Worker lost: {reason}", line=f"ERROR: {reason}"):
                logger.warning("job %s marked ERROR: %s", job.id, reason)
                reaped.append(self.get(job.id))
        return reaped
