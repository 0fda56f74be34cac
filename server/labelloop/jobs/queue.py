"""The durable job queue in the database: submit, claim, heartbeat, progress, finish, cancel, reap.

Fencing: each claim gets a fresh token (``jobs.claim_token``). Every write a job's worker or process
makes (heartbeat, progress, finish, and the publish of a model version, which finishes the job in
its own transaction) checks, in the same transaction, that the job is still ``RUNNING`` under that
token. When the reaper declares a job lost it ends it as ``ERROR`` and clears the token in one
transaction, so whatever the lost job still tries to write afterwards is refused.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy import ColumnElement, Connection, RowMapping, bindparam, desc, func, insert, select, update

from labelloop.db import Database
from labelloop.errors import AlreadyRunningError, JobNotFoundError
from labelloop.jobs.census import JobCensus, job_census
from labelloop.jobs.models import jobs, workers
from labelloop.jobs.records import LOG_TAIL_LINES, ClaimState, Job, JobKind, JobStatus
from labelloop.processes import pid_alive

__all__ = ["JobQueue"]

logger = logging.getLogger(__name__)


_ACTIVE = (JobStatus.SUBMITTED.value, JobStatus.RUNNING.value)
#: A process of a job on this host that died is reaped after this long at most (not ``stale_after_s``).
_DEAD_PROCESS_S = 5.0


def _held(job_id: str, claim: str | None) -> list[ColumnElement[bool]]:
    """The job is running, under ``claim`` when one is given."""
    held = [jobs.c.id == job_id, jobs.c.status == JobStatus.RUNNING.value]
    if claim is not None:
        held.append(jobs.c.claim_token == claim)
    return held


def _state(row: Any, claim: str | None) -> ClaimState:
    """What a row with ``status``, ``claim_token`` and ``cancel_requested`` says of ``claim``."""
    if row is None or (claim is not None and row.claim_token != claim):
        return ClaimState.LOST
    if row.status in _ACTIVE:
        return ClaimState.STOP if row.cancel_requested else ClaimState.HELD
    return ClaimState.ENDED


def _holder(busy: list[Job]) -> str:
    """Which job holds an exclusive slot, and how to free it (the 429's detail after MONAI Label's words)."""
    job = next((j for j in busy if j.status == JobStatus.RUNNING), busy[0])
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(job.started_at or job.created_at))
    state = "running since" if job.status == JobStatus.RUNNING else "queued at"
    more = f" (and {len(busy) - 1} more queued)" if len(busy) > 1 else ""
    path = _STOP_PATHS[job.kind]
    behind = ", or queue behind it with ?enqueue=true" if job.kind == JobKind.TRAIN else ""
    return (
        f"{job.kind.value} job {job.id} for '{job.name}', asked for by {job.created_by}, {state} {when}"
        f"{more}. Stop it with DELETE {path}{behind}"
    )


#: Where a person stops the jobs of a kind (the 429's hint).
_STOP_PATHS = {JobKind.TRAIN: "/train/", JobKind.SCORING: "/scoring/", JobKind.BATCH_INFER: "/batch/infer"}


def _clock_text(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


# Built once (read on every /info/); the values are bound per call.
_NEWEST = select(jobs).where(jobs.c.kind == bindparam("kind")).order_by(desc(jobs.c.created_at)).limit(1)
_RANKED = (
    select(
        jobs.c.name,
        jobs.c.progress,
        func.row_number()
        .over(partition_by=jobs.c.name, order_by=(desc(jobs.c.created_at), desc(jobs.c.id)))
        .label("rank"),
    )
    .where(jobs.c.kind == bindparam("kind"), jobs.c.name.in_(bindparam("names", expanding=True)))
    .subquery()
)
_LATEST_PROGRESS = (
    select(_RANKED.c.name, _RANKED.c.progress)
    .where(_RANKED.c.rank <= bindparam("depth"))
    .order_by(_RANKED.c.rank)
)


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
            claim_token=row["claim_token"],
        )

    def _get_in(self, conn: Connection, job_id: str) -> Job:
        row = conn.execute(select(jobs).where(jobs.c.id == job_id)).mappings().first()
        if row is None:
            raise JobNotFoundError(f"Task '{job_id}' not found")
        return self._record(row)

    def census(self) -> JobCensus:
        """Jobs by kind and status, and the run times of the finished ones (``GET /metrics``)."""
        return job_census(self._db)

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
        replaces: Callable[[Job], bool] | None = None,
    ) -> Job:
        """Queue a job. With ``exclusive``, refuse if a job of this kind (with
        ``exclusive_per_name``: of this kind and name) is queued or running, unless every such job
        is queued and ``replaces`` says this one may take its place (it is then cancelled, saying
        by which job).

        The check and the insert are one transaction, so two requests at once cannot both pass
        (MONAI Label's race, its bug 4). The refusal names the job that holds the slot.
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
                replaces=replaces,
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
        replaces: Callable[[Job], bool] | None = None,
    ) -> Job:
        """``submit`` in ``conn``'s write transaction (the job exists once that commits)."""
        job_id = str(uuid.uuid4())
        self._db.lock(conn, f"jobs:{kind.value}")
        if exclusive:
            same = [jobs.c.kind == kind.value, jobs.c.status.in_(_ACTIVE)]
            if exclusive_per_name:
                same.append(jobs.c.name == name)
            busy = [
                self._record(r)
                for r in conn.execute(select(jobs).where(*same).order_by(jobs.c.created_at)).mappings()
            ]
            replaceable = replaces is not None and all(
                job.status == JobStatus.SUBMITTED and replaces(job) for job in busy
            )
            if busy and not replaceable:
                what = f"{kind.value.capitalize()} Task" + (f" '{name}'" if exclusive_per_name else "")
                # MONAI Label's wording first (clients match it), then which job holds the slot.
                raise AlreadyRunningError(f"++++++++++ {what} is Already Running: {_holder(busy)}")
            for job in busy:
                self._end_queued_in(conn, job, f"replaced by job {job_id}, which {user} asked for")
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

    def newest(self, kind: JobKind) -> Job | None:
        """The newest job of ``kind``, if any."""
        with self._db.read() as conn:
            row = conn.execute(_NEWEST, {"kind": kind.value}).mappings().first()
        return self._record(row) if row is not None else None

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

    def latest_progress(self, kind: JobKind, names: list[str], depth: int = 5) -> dict[str, dict[str, Any]]:
        """Per name, the progress of the newest of its last ``depth`` jobs of ``kind`` that reported
        any (``{}`` when none did), in one query."""
        found: dict[str, dict[str, Any]] = {}
        values = {"kind": kind.value, "names": names, "depth": depth}
        with self._db.read() as conn:
            for name, progress in conn.execute(_LATEST_PROGRESS, values):
                if progress and name not in found:
                    found[name] = dict(progress)
        return {name: found.get(name, {}) for name in names}

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
        with self._db.read() as conn:
            return self._live_workers_in(conn, stale_after_s)

    def _live_workers_in(self, conn: Connection, stale_after_s: float) -> int:
        since = self._clock() - stale_after_s
        query = select(func.count()).where(workers.c.stopped_at.is_(None), workers.c.heartbeat_at >= since)
        return int(conn.execute(query).scalar_one())

    def worker_stopped(self, worker_id: str) -> None:
        with self._db.write() as conn:
            conn.execute(update(workers).where(workers.c.id == worker_id).values(stopped_at=self._clock()))

    # ------------------------------------------------------------ running

    def claim(self, worker_id: str, kinds: tuple[JobKind, ...] = tuple(JobKind)) -> Job | None:
        """Take the most urgent queued job (highest priority, then oldest), or ``None``.

        The job comes back with a new ``claim_token``: pass it to every later write for the job.
        """
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
                .values(
                    status=JobStatus.RUNNING.value,
                    worker_id=worker_id,
                    started_at=now,
                    heartbeat_at=now,
                    claim_token=uuid.uuid4().hex,
                )
            )
            if taken.rowcount != 1:
                return None
            return self._get_in(conn, row.id)

    def started(self, job_id: str, pid: int, claim: str | None = None) -> None:
        with self._db.write() as conn:
            conn.execute(
                update(jobs).where(*_held(job_id, claim)).values(pid=pid, heartbeat_at=self._clock())
            )

    def cancel_requested(self, job_id: str) -> bool:
        """Whether a stop was asked for (one column, cheap enough to poll)."""
        with self._db.read() as conn:
            row = conn.execute(select(jobs.c.cancel_requested).where(jobs.c.id == job_id)).first()
        return bool(row is not None and row.cancel_requested)

    def _state_in(self, conn: Connection, job_id: str, claim: str | None) -> ClaimState:
        row = conn.execute(
            select(jobs.c.status, jobs.c.claim_token, jobs.c.cancel_requested).where(jobs.c.id == job_id)
        ).first()
        return _state(row, claim)

    def heartbeat(self, job_id: str, claim: str | None = None) -> ClaimState:
        """Refresh a running job's heartbeat if it still runs under ``claim``; returns where the claim
        stands (``STOP``: a stop was asked for; ``LOST``: the job was declared lost)."""
        with self._db.write() as conn:
            conn.execute(update(jobs).where(*_held(job_id, claim)).values(heartbeat_at=self._clock()))
            return self._state_in(conn, job_id, claim)

    def claim_state(self, job_id: str, claim: str | None = None) -> ClaimState:
        """Where ``claim`` on the job stands, read only (a job's process polls it: no write lock)."""
        with self._db.read() as conn:
            return self._state_in(conn, job_id, claim)

    def report(
        self,
        job_id: str,
        *,
        claim: str | None = None,
        progress: dict[str, Any] | None = None,
        metrics: dict[str, Any] | None = None,
        lines: list[str] | None = None,
    ) -> bool:
        """Record progress, metrics and log lines of a running job (the tail keeps the last 20 lines).

        Refused (False) once the job no longer runs under ``claim``.
        """
        with self._db.write() as conn:
            values: dict[str, Any] = {"heartbeat_at": self._clock()}
            if progress is not None:
                values["progress"] = progress
            if metrics is not None:
                values["metrics"] = metrics
            if lines:
                current = conn.execute(
                    select(jobs.c.log_tail).where(jobs.c.id == job_id).with_for_update()
                ).scalar_one_or_none()
                values["log_tail"] = (list(current or []) + lines)[-LOG_TAIL_LINES:]
            done = conn.execute(update(jobs).where(*_held(job_id, claim)).values(**values))
            return done.rowcount == 1

    def note(self, job_id: str, line: str) -> None:
        """Append ``line`` to a job's log tail whatever its status: why a lost job's result was refused."""
        with self._db.write() as conn:
            current = conn.execute(
                select(jobs.c.log_tail).where(jobs.c.id == job_id).with_for_update()
            ).scalar_one_or_none()
            tail = (list(current or []) + [line])[-LOG_TAIL_LINES:]
            conn.execute(update(jobs).where(jobs.c.id == job_id).values(log_tail=tail))

    def finish(
        self,
        job_id: str,
        status: JobStatus,
        *,
        claim: str | None = None,
        result: Any = None,
        error: str | None = None,
        line: str | None = None,
    ) -> bool:
        """Move a running (or queued) job to a final status; False if it had already ended or no
        longer runs under ``claim``."""
        with self._db.write() as conn:
            done = self.finish_in(conn, job_id, status, claim=claim, result=result, error=error, line=line)
        if done:
            logger.info("job %s %s%s", job_id, status.value, f": {error}" if error else "")
        return done

    def finish_in(
        self,
        conn: Connection,
        job_id: str,
        status: JobStatus,
        *,
        claim: str | None = None,
        result: Any = None,
        error: str | None = None,
        line: str | None = None,
        lines: list[str] | None = None,
        progress: dict[str, Any] | None = None,
        metrics: dict[str, Any] | None = None,
        revoke: bool = False,
    ) -> bool:
        """``finish`` in ``conn``'s write transaction (a publish finishes its job in its own), with the
        job's last ``progress`` and ``metrics`` and log ``lines`` after ``line``; ``revoke`` clears the
        claim (the job was lost).

        The row is locked first (``FOR UPDATE``), so a reaper and a finishing job cannot both win.
        """
        row = conn.execute(select(jobs).where(jobs.c.id == job_id).with_for_update()).mappings().first()
        if row is None:
            raise JobNotFoundError(f"Task '{job_id}' not found")
        job = self._record(row)
        if not job.active or (claim is not None and job.claim_token != claim):
            return False
        values: dict[str, Any] = {"status": status.value, "finished_at": self._clock()}
        if result is not None:
            values["result"] = result
        if error is not None:
            values["error"] = error
        added = ([line] if line else []) + list(lines or [])
        if added:
            values["log_tail"] = (job.log_tail + added)[-LOG_TAIL_LINES:]
        if progress is not None:
            values["progress"] = progress
        if metrics is not None:
            values["metrics"] = metrics
        if revoke:
            values["claim_token"] = None
        done = conn.execute(
            update(jobs).where(jobs.c.id == job_id, jobs.c.status.in_(_ACTIVE)).values(**values)
        )
        return done.rowcount == 1

    def lock_in(self, conn: Connection, kind: JobKind) -> None:
        """Serialise writers on jobs of ``kind`` until ``conn``'s transaction ends, as ``submit`` and
        ``cancel`` do: take it before any job row, so that lock order is always kind, then rows."""
        self._db.lock(conn, f"jobs:{kind.value}")

    def request_stop_in(self, conn: Connection, job_id: str, line: str) -> bool:
        """Ask a running job to stop (its worker ends its process) in ``conn``'s transaction, with
        ``line`` in its log tail; False if it no longer runs."""
        row = conn.execute(select(jobs).where(*_held(job_id, None)).with_for_update()).mappings().first()
        if row is None:
            return False
        tail = (list(row["log_tail"] or []) + [line])[-LOG_TAIL_LINES:]
        conn.execute(update(jobs).where(jobs.c.id == job_id).values(cancel_requested=True, log_tail=tail))
        return True

    def _end_queued_in(self, conn: Connection, job: Job, line: str) -> None:
        """End a job that never started as STOPPED, with ``line`` in its log."""
        conn.execute(
            update(jobs)
            .where(jobs.c.id == job.id)
            .values(
                status=JobStatus.STOPPED.value,
                finished_at=self._clock(),
                cancel_requested=True,
                log_tail=(job.log_tail + [f"cancelled before it started; {line}"])[-LOG_TAIL_LINES:],
            )
        )

    def cancel(self, kind: JobKind, user: str) -> tuple[list[Job], list[Job]]:
        """Stop every job of ``kind``: queued ones end now, running ones are asked to stop.

        Returns ``(running jobs asked to stop, queued jobs cancelled)``. The worker running a
        job sees the request, stops the job's process tree and marks it ``STOPPED``.
        """
        now = self._clock()
        line = f"stopped by {user} at {_clock_text(now)}"
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
                    self.request_stop_in(conn, job.id, f"stop requested by {user} at {_clock_text(now)}")
                    running.append(job)
                else:
                    self._end_queued_in(conn, job, line)
                    queued.append(job)
        return running, queued

    def preempt(self, for_job: Job, *, below: int, stale_after_s: float) -> Job | None:
        """Free a worker for ``for_job`` when every live worker runs a job, one of them of priority
        lower than ``below``: that job is asked to stop (its log says for which job) and the same
        work is queued again at its own priority, so it runs once the workers are free. Returns the
        requeued job, or ``None`` when a worker is free or nothing may yield."""
        with self._db.write() as conn:
            for kind in sorted(JobKind, key=lambda k: k.value):  # lock order: kinds, then rows
                self._db.lock(conn, f"jobs:{kind.value}")
            running = [
                self._record(r)
                for r in conn.execute(
                    select(jobs).where(jobs.c.status == JobStatus.RUNNING.value).order_by(jobs.c.priority)
                ).mappings()
            ]
            live = self._live_workers_in(conn, stale_after_s)
            victims = [j for j in running if j.priority < below and not j.cancel_requested]
            if live == 0 or len(running) < live or not victims:
                return None
            victim = victims[0]
            again = self.submit_in(
                conn,
                victim.kind,
                victim.name,
                request=victim.request,
                config=victim.config,
                user=victim.created_by,
                priority=victim.priority,
            )
            self.request_stop_in(
                conn,
                victim.id,
                f"yielded to {for_job.kind.value} job {for_job.id}, which {for_job.created_by} asked for; "
                f"requeued as job {again.id}",
            )
            return again

    def reap(self, stale_after_s: float) -> list[Job]:
        """Declare lost, and end as ERROR, the running jobs whose worker died: no heartbeat for
        ``stale_after_s``, or a worker process on this host that no longer exists (a server restart,
        kill -9). Their claim is revoked in the same transaction, so a lost job that is in fact still
        alive (a frozen worker) cannot publish afterwards; its worker kills it when it sees that.

        Each verdict is checked again on the locked row, so a heartbeat that arrived meanwhile wins;
        only suspects take the write lock.
        """
        now = self._clock()
        host = socket.gethostname()
        suspects: list[tuple[str, int | None]] = []
        with self._db.read() as conn:
            rows = conn.execute(
                select(jobs, workers.c.host, workers.c.pid.label("worker_pid"))
                .outerjoin(workers, workers.c.id == jobs.c.worker_id)
                .where(jobs.c.status == JobStatus.RUNNING.value)
            ).mappings()
            for row in rows:
                local_pid = row["worker_pid"] if row["host"] == host else None
                if self._verdict(self._record(row), local_pid, now, stale_after_s) is not None:
                    suspects.append((row["id"], local_pid))
        reaped = []
        for job_id, local_pid in suspects:
            with self._db.write() as conn:
                locked = (
                    conn.execute(select(jobs).where(jobs.c.id == job_id).with_for_update()).mappings().first()
                )
                if locked is None or locked["status"] != JobStatus.RUNNING.value:
                    continue
                job = self._record(locked)
                reason = self._verdict(job, local_pid, now, stale_after_s)
                if reason is None:
                    continue  # it beat meanwhile
                lost = self.finish_in(
                    conn,
                    job.id,
                    JobStatus.ERROR,
                    claim=job.claim_token,
                    error=f"Worker lost: {reason}",
                    line=f"ERROR: {reason}",
                    revoke=True,
                )
            if lost:
                logger.warning("job %s declared lost and marked ERROR: %s", job.id, reason)
                reaped.append(self.get(job.id))
        return reaped

    @staticmethod
    def _verdict(job: Job, local_worker_pid: int | None, now: float, stale_after_s: float) -> str | None:
        """Why ``job`` is lost, or ``None``; ``local_worker_pid`` is given when its worker is on this host."""
        beat = job.heartbeat_at or job.started_at or job.created_at
        if local_worker_pid is not None and not pid_alive(local_worker_pid):
            return f"its worker (process {local_worker_pid}) is gone: server restart or crash"
        if local_worker_pid is not None and job.pid is not None and not pid_alive(job.pid):
            if now - beat > min(stale_after_s, _DEAD_PROCESS_S):
                return f"its process {job.pid} died without finishing"
            return None
        if now - beat > stale_after_s:
            return f"no heartbeat for {now - beat:.0f} s: its worker died or stalls"
        return None
