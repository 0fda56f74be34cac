"""The job queue on SQLite and PostgreSQL: atomic claims, exclusive submits, cancel, reaping."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import update

from labelloop.errors import AlreadyRunningError
from labelloop.jobs import Job, JobKind, JobQueue, JobStatus
from labelloop.jobs.models import workers
from labelloop.jobs.records import ClaimState


def make_job(
    queue: JobQueue, kind: JobKind = JobKind.TRAIN, name: str = "segmentation", **kwargs: object
) -> Job:
    return queue.submit(kind, name, request={"model": name}, config={}, user="tester", **kwargs)  # type: ignore[arg-type]


def test_concurrent_workers_claim_each_job_exactly_once(queue: JobQueue) -> None:
    for i in range(24):
        make_job(queue, JobKind.BATCH_INFER, f"m{i}")
    workers = [queue.register_worker() for _ in range(8)]

    def drain(worker_id: str) -> list[str]:
        taken = []
        while (job := queue.claim(worker_id)) is not None:
            taken.append(job.id)
        return taken

    with ThreadPoolExecutor(8) as pool:
        claimed = [job_id for batch in pool.map(drain, workers) for job_id in batch]
    assert len(claimed) == 24 and len(set(claimed)) == 24
    assert all(job.status == JobStatus.RUNNING for job in queue.recent(JobKind.BATCH_INFER))


def test_exclusive_submits_race_and_only_one_wins(queue: JobQueue) -> None:
    def submit(_: int) -> str:
        try:
            return make_job(queue, exclusive=True).id
        except AlreadyRunningError as exc:
            assert "Train Task is Already Running" in exc.message
            return "refused"

    with ThreadPoolExecutor(12) as pool:
        outcomes = list(pool.map(submit, range(12)))
    assert outcomes.count("refused") == 11
    assert len(queue.active(JobKind.TRAIN)) == 1


def test_enqueue_allows_queueing_behind_a_running_job(queue: JobQueue) -> None:
    first = make_job(queue, exclusive=True)
    second = make_job(queue, exclusive=False)
    assert [j.id for j in queue.active(JobKind.TRAIN)] == [first.id, second.id]


def test_exclusive_per_name_refuses_only_the_same_name(queue: JobQueue) -> None:
    make_job(queue, JobKind.SCORING, "epistemic", priority=-10)
    dice = make_job(queue, JobKind.SCORING, "dice", exclusive=True, exclusive_per_name=True)
    with pytest.raises(AlreadyRunningError, match="'dice'"):
        make_job(queue, JobKind.SCORING, "dice", exclusive=True, exclusive_per_name=True)
    with pytest.raises(AlreadyRunningError):
        make_job(queue, JobKind.SCORING, "tta", exclusive=True)  # per kind: anything active refuses
    assert [j.name for j in queue.active(JobKind.SCORING)] == ["epistemic", dice.name]


def test_claim_takes_priority_then_age(queue: JobQueue) -> None:
    low = make_job(queue, JobKind.SCORING, "dice", priority=-10)
    old = make_job(queue, JobKind.TRAIN)
    new = make_job(queue, JobKind.BATCH_INFER, "segmentation")
    worker = queue.register_worker()
    order = [queue.claim(worker), queue.claim(worker), queue.claim(worker)]
    assert [j.id for j in order if j] == [old.id, new.id, low.id]
    assert queue.claim(worker) is None


def test_cancel_stops_queued_jobs_at_once_and_flags_running_ones(queue: JobQueue) -> None:
    running = make_job(queue)
    queued = make_job(queue)
    worker = queue.register_worker()
    assert queue.claim(worker) is not None
    asked, cancelled = queue.cancel(JobKind.TRAIN, "curator")
    assert [j.id for j in asked] == [running.id] and [j.id for j in cancelled] == [queued.id]
    assert queue.get(running.id).cancel_requested and queue.get(running.id).status == JobStatus.RUNNING
    stopped = queue.get(queued.id)
    assert stopped.status == JobStatus.STOPPED and stopped.finished_at is not None
    assert "curator" in stopped.log_tail[-1]
    assert queue.heartbeat(running.id) == ClaimState.STOP, (
        "the running job learns it must stop from its heartbeat"
    )


def test_log_tail_keeps_the_last_twenty_lines(queue: JobQueue) -> None:
    job = make_job(queue)
    queue.claim(queue.register_worker())
    for i in range(30):
        queue.report(job.id, lines=[f"line {i}"])
    tail = queue.get(job.id).log_tail
    assert tail == [f"line {i}" for i in range(10, 30)]


def test_a_job_whose_worker_process_died_is_reaped_as_error(queue: JobQueue) -> None:
    job = make_job(queue)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    # A worker row for a process that no longer exists on this host.
    worker = queue.register_worker()
    with queue._db.write() as conn:  # noqa: SLF001 - a row as a crashed worker leaves it
        conn.execute(update(workers).where(workers.c.id == worker).values(pid=dead.pid))
    assert queue.claim(worker) is not None
    reaped = queue.reap(stale_after_s=3600)
    assert [j.id for j in reaped] == [job.id]
    final = queue.get(job.id)
    assert final.status == JobStatus.ERROR and "gone" in (final.error or "")
    assert final.log_tail[-1].startswith("ERROR")


def test_a_job_without_heartbeat_is_reaped(queue: JobQueue) -> None:
    clock = [1000.0]
    stale = JobQueue(queue._db, clock=lambda: clock[0])  # noqa: SLF001
    job = make_job(stale)
    stale.claim(stale.register_worker())
    with stale._db.write() as conn:  # noqa: SLF001 - a worker on another host, which we cannot probe
        conn.execute(update(workers).values(host="elsewhere"))
    clock[0] += 10
    assert stale.reap(stale_after_s=30) == []
    clock[0] += 60
    assert [j.id for j in stale.reap(stale_after_s=30)] == [job.id]
    assert "heartbeat" in (stale.get(job.id).error or "")


def test_finish_is_once_only(queue: JobQueue) -> None:
    job = make_job(queue)
    queue.claim(queue.register_worker())
    assert queue.finish(job.id, JobStatus.DONE, result={"ok": 1})
    assert not queue.finish(job.id, JobStatus.ERROR, error="late")
    final = queue.get(job.id)
    assert final.status == JobStatus.DONE and final.result == {"ok": 1} and final.error is None
    assert final.finished_at is not None
