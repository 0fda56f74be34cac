"""The wire shapes of domain records: MONAI Label's task object, label saves, next sample."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from labelloop.activelearning import Handout, Lease
from labelloop.api import schemas
from labelloop.datastore import Datastore
from labelloop.db import Database
from labelloop.jobs import JobKind, JobQueue, JobStatus
from tests.support.volumes import make_image


@pytest.fixture
def queue(tmp_path: Path) -> Iterator[JobQueue]:
    db = Database(f"sqlite:///{tmp_path / 'jobs.db'}")
    db.migrate()
    yield JobQueue(db)
    db.dispose()


def _submit(queue: JobQueue) -> str:
    job = queue.submit(JobKind.TRAIN, "segmentation", request={"model": "segmentation"}, config={}, user="t")
    return job.id


def test_a_finished_task_has_end_ts_details_and_result(queue: JobQueue) -> None:
    job_id = _submit(queue)
    queue.claim(queue.register_worker())
    assert queue.finish(job_id, JobStatus.DONE, result={"ok": 1})
    view = schemas.task_json(queue.get(job_id))
    assert view["status"] == "DONE" and "end_ts" in view and view["details"]
    assert view["result"] == {"ok": 1} and "error" not in view


def test_a_submitted_task_view_has_no_details_yet(queue: JobQueue) -> None:
    view = schemas.task_json(queue.get(_submit(queue)))
    assert view["status"] == "SUBMITTED" and "details" not in view and "end_ts" not in view
    assert len(view["start_ts"]) == 19  # YYYY-mm-dd HH:MM:SS
    assert set(view) == {"id", "status", "request", "start_ts", "kind", "name", "created_by"}


def test_a_stopped_task_without_log_lines_still_has_details(queue: JobQueue) -> None:
    """Slicer reads ``details[-1]`` of a stopped task; an empty list would crash it."""
    job_id = _submit(queue)
    queue.claim(queue.register_worker())
    queue.finish(job_id, JobStatus.ERROR, error="boom")
    job = queue.get(job_id)
    view = schemas.task_json(job)
    assert view["details"][-1] == (job.log_tail[-1] if job.log_tail else "boom") and view["error"] == "boom"


def _handout(tmp_path: Path) -> Handout:
    db = Database(f"sqlite:///{tmp_path / 'ds.db'}")
    db.migrate()
    datastore = Datastore(db, tmp_path / "data")
    make_image(tmp_path / "ct1.nii.gz")
    info = {"site": None, "PatientID": "p1"}
    image = datastore.images.add(
        tmp_path / "ct1.nii.gz", filename="ct1.nii.gz", image_id=None, info=info, user="u"
    )
    lease = Lease("ct1", "alice", "random", 100.0, 160.0)
    return Handout(
        image, datastore.images.file(image), lease, renewed=False, reason="random order", score=None
    )


def test_next_sample_keeps_every_info_key_and_weights_only_random(tmp_path: Path) -> None:
    handout = _handout(tmp_path)
    random = schemas.next_sample("random", handout).model_dump(exclude_unset=True)
    assert random["site"] is None and random["PatientID"] == "p1" and random["name"] == "ct1.nii.gz"
    assert random["id"] == "ct1" and random["path"] == str(handout.path) and isinstance(random["weight"], int)
    assert random["lease"] == {"holder": "alice", "expires_ts": 160.0, "renewed": False}
    assert "score" not in random and random["checksum"] == handout.image.checksum
    first = schemas.next_sample("first", handout).model_dump(exclude_unset=True)
    assert "weight" not in first and first == {k: v for k, v in random.items() if k != "weight"}
    assert schemas.next_sample("random", None).model_dump(exclude_unset=True) == {}
