"""Fencing on SQLite and PostgreSQL: every write of a job checks its claim; the reaper revokes it.

A job declared lost (no heartbeat, its worker frozen) may still be alive. Once the reaper has
ended it as ERROR, nothing it writes afterwards is accepted: heartbeat, progress, final status.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from labelloop.jobs import Job, JobKind, JobQueue, JobStatus
from labelloop.jobs.records import ClaimState
from labelloop.jobs.rescore import stop_stale_scoring_in
from labelloop.settings import JobSettings
from labelloop.tasks import load_app
from tests.support.servers import APP_DIR


def later(queue: JobQueue, seconds: float = 3600.0) -> JobQueue:
    """The same queue seen by a reaper whose clock is ``seconds`` ahead: every heartbeat looks old."""
    return JobQueue(queue._db, clock=lambda: time.time() + seconds)  # noqa: SLF001


def running(queue: JobQueue, kind: JobKind = JobKind.TRAIN, name: str = "segmentation") -> Job:
    """A job claimed by a worker of this process (alive, on this host); it carries its claim token."""
    queue.submit(kind, name, request={"model": name}, config={}, user="tester")
    job = queue.claim(queue.register_worker())
    assert job is not None and job.status == JobStatus.RUNNING
    return job


def test_each_claim_has_a_token_that_every_write_checks(queue: JobQueue) -> None:
    job = running(queue)
    token = job.claim_token
    assert token and queue.get(job.id).claim_token == token
    assert queue.heartbeat(job.id, token) == ClaimState.HELD
    assert queue.heartbeat(job.id, "0" * 32) == ClaimState.LOST, "somebody else's claim"
    assert not queue.report(job.id, claim="0" * 32, progress={"epoch": 1})
    assert not queue.finish(job.id, JobStatus.DONE, claim="0" * 32, result={"stolen": True})
    assert queue.report(job.id, claim=token, progress={"epoch": 2}, lines=["epoch 2"])
    assert queue.finish(job.id, JobStatus.DONE, claim=token, result={"ok": 1})
    final = queue.get(job.id)
    assert (final.status, final.result, final.progress) == (JobStatus.DONE, {"ok": 1}, {"epoch": 2})
    assert queue.claim_state(job.id, token) == ClaimState.ENDED


def test_a_job_declared_lost_has_its_claim_revoked_and_every_later_write_refused(queue: JobQueue) -> None:
    job = running(queue)
    token = job.claim_token
    assert later(queue, 10).reap(stale_after_s=60) == [], "ten seconds of silence is not death"
    [lost] = later(queue).reap(stale_after_s=60)
    assert lost.id == job.id and lost.status == JobStatus.ERROR and lost.claim_token is None
    assert "no heartbeat" in (lost.error or "") and lost.log_tail[-1].startswith("ERROR")
    # The job was alive after all: it comes back and goes on as if nothing happened.
    assert queue.claim_state(job.id, token) == ClaimState.LOST
    assert queue.heartbeat(job.id, token) == ClaimState.LOST
    assert not queue.report(job.id, claim=token, progress={"epoch": 9}, lines=["epoch 9"])
    assert not queue.finish(job.id, JobStatus.DONE, claim=token, result={"model_version": 2})
    final = queue.get(job.id)
    assert final.status == JobStatus.ERROR and final.result is None and final.progress == {}
    assert final.heartbeat_at == lost.heartbeat_at and final.log_tail == lost.log_tail
    queue.note(job.id, "its result was refused")
    assert queue.get(job.id).log_tail[-1] == "its result was refused", "a note explains; it changes nothing"
    assert queue.get(job.id).status == JobStatus.ERROR


def test_a_reaper_and_a_finishing_job_never_both_win(queue: JobQueue) -> None:
    reaper = later(queue)
    for i in range(12):
        job = running(queue, JobKind.BATCH_INFER, f"m{i}")
        with ThreadPoolExecutor(2) as pool:
            finishing = pool.submit(
                queue.finish, job.id, JobStatus.DONE, claim=job.claim_token, result={"i": i}
            )
            reaping = pool.submit(reaper.reap, 60.0)
            finished, reaped = finishing.result(), reaping.result()
        assert finished != bool(reaped), f"round {i}: finished={finished}, reaped={reaped}"
        final = queue.get(job.id)
        assert final.status == (JobStatus.DONE if finished else JobStatus.ERROR)
        assert (final.result is not None) == finished


def test_the_default_stale_timeout_leaves_room_for_many_late_beats() -> None:
    defaults = JobSettings()
    assert defaults.stale_after_s >= 30 * defaults.heartbeat_interval_s
    with pytest.raises(ValueError, match="at least 5 heartbeat intervals"):
        JobSettings(heartbeat_interval_s=10, stale_after_s=30)
    assert JobSettings(heartbeat_interval_s=0.5, stale_after_s=2.5).stale_after_s == 2.5


def test_a_change_of_active_version_stops_scoring_that_scores_with_another(queue: JobQueue) -> None:
    app = load_app(APP_DIR)
    stale = running(queue, JobKind.SCORING, "epistemic")
    current = running(queue, JobKind.SCORING, "tta")
    unrecorded = running(queue, JobKind.SCORING, "epistemic")  # it reads the active version when it starts
    dice = running(queue, JobKind.SCORING, "dice")  # reads no model
    for job, version in ((stale, 2), (current, 1)):
        queue.report(
            job.id, claim=job.claim_token, metrics={"model": "segmentation", "model_version": version}
        )
    queued = queue.submit(JobKind.SCORING, "tta", request={}, config={}, user="tester")
    with queue._db.write() as conn:  # noqa: SLF001 - the activation's transaction
        stopped = stop_stale_scoring_in(conn, queue, app, "segmentation", 1, "curator")
    assert [job.id for job in stopped] == [stale.id]
    assert queue.heartbeat(stale.id, stale.claim_token) == ClaimState.STOP
    assert "segmentation version 2, and the active version is 1" in queue.get(stale.id).log_tail[-1]
    for job in (current, unrecorded, dice):
        assert queue.heartbeat(job.id, job.claim_token) == ClaimState.HELD
    assert queue.get(queued.id).status == JobStatus.SUBMITTED, "a queued job scores the active version"
    with queue._db.write() as conn:  # noqa: SLF001 - the model retired: no version is active
        stopped = stop_stale_scoring_in(conn, queue, app, "segmentation", None, "curator")
    assert [job.id for job in stopped] == [current.id]
