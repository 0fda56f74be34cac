"""A training job declared lost while it is in fact alive: it runs to the end, and its version is refused.

The job runs in this process through ``execute_job``, as a worker's job process runs it. Its
heartbeat has stopped (nobody beats for it, and its own claim watch looks only every ten minutes);
at its first progress report a reaper declares it lost. It goes on training, evaluates and tries
to publish: the database refuses the version, and its status stays what the reaper wrote.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from labelloop.api import Services
from labelloop.datastore import DEFAULT_TAG, LabelFile, Provenance
from labelloop.db import Database
from labelloop.imaging import write_volume
from labelloop.jobs import Job, JobKind, JobQueue, JobStatus, execute_job
from labelloop.sampledata.synthetic import generate_case
from labelloop.server import build_services
from labelloop.settings import InferenceSettings, JobSettings, Settings
from tests.support.servers import APP_DIR

#: One quick epoch on small cases: the point is the machinery, not the Dice.
QUICK = {"max_epochs": 1, "samples_per_image": 1, "train_batch_size": 1, "val_split": 0.5}
#: Nothing beats for the job within a test: the stopped heartbeat of a live job.
SILENT = JobSettings(workers=0, heartbeat_interval_s=600, stale_after_s=3600, autotrain_after=0)


class ReapedMidway(JobQueue):
    """The job's queue; at the job's first progress report, a reaper whose clock runs an hour ahead
    (the job's heartbeat is an hour old to it) declares the job lost. The job is not told."""

    def __init__(self, db: Database, *, reap: bool) -> None:
        super().__init__(db)
        self.reap_midway = reap
        self.reaped: list[Job] = []

    def report(self, job_id: str, **kwargs: Any) -> bool:
        kept = super().report(job_id, **kwargs)
        if self.reap_midway and kwargs.get("progress") and not self.reaped:
            self.reaped = JobQueue(self._db, clock=lambda: time.time() + 3600).reap(SILENT.stale_after_s)
        return kept


@pytest.fixture
def services(database_url: str | None, tmp_path: Path) -> Iterator[Services]:
    settings = Settings(
        app=APP_DIR,
        data_dir=tmp_path / "data",
        database_url=database_url,
        jobs=SILENT,
        inference=InferenceSettings(warmup=False),
    )
    built = build_services(settings)
    for i in range(3):
        image, label, affine = generate_case(
            np.random.default_rng([7, i]), shape=(48, 48, 24), spacing=(3, 3, 4)
        )
        write_volume(tmp_path / f"case{i}.nii.gz", image, affine)
        write_volume(tmp_path / f"case{i}_label.nii.gz", label, affine)
        built.datastore.images.add(
            tmp_path / f"case{i}.nii.gz",
            filename=f"case{i}.nii.gz",
            image_id=f"case{i}",
            info={},
            user="setup",
        )
        built.datastore.labels.save(
            f"case{i}",
            DEFAULT_TAG,
            LabelFile(tmp_path / f"case{i}_label.nii.gz"),
            Provenance(author="annotator"),
        )
    yield built
    built.datastore.db.dispose()


def _run(services: Services, *, reap: bool) -> tuple[int, Job, ReapedMidway]:
    queue = ReapedMidway(services.datastore.db, reap=reap)
    submitted = services.jobs.submit_train("segmentation", QUICK, "ml-staff")
    claimed = queue.claim(queue.register_worker())
    assert claimed is not None and claimed.id == submitted.id
    sigterm = signal.getsignal(signal.SIGTERM)  # execute_job installs the job process's handler
    try:
        code = execute_job(
            claimed.id,
            app=services.app,
            datastore=services.datastore,
            registry=services.registry,
            inference=services.inference,
            queue=queue,
            settings=services.settings.jobs,
            jobs_dir=services.settings.data_dir / "jobs",
        )
    finally:
        signal.signal(signal.SIGTERM, sigterm)
    return code, queue.get(claimed.id), queue


def _weights_files(services: Services) -> list[Path]:
    models = services.settings.data_dir / "models"
    return sorted(models.rglob("*.pt")) if models.exists() else []


def test_a_live_job_declared_lost_finishes_training_and_its_version_is_refused(services: Services) -> None:
    code, job, queue = _run(services, reap=True)
    assert [j.id for j in queue.reaped] == [job.id], "the reaper declared it lost mid-training"
    assert code == 1
    assert job.status == JobStatus.ERROR and "no heartbeat" in (job.error or "")
    assert job.result is None and job.claim_token is None
    assert "its model version was refused" in job.log_tail[-1], job.log_tail
    assert services.registry.versions("segmentation") == [], "no version from a job the database calls failed"
    assert services.registry.active("segmentation") is None
    assert _weights_files(services) == [], "the refused version's weights file is gone too"
    assert services.jobs.queue.active(JobKind.SCORING) == [], "nor the rescoring a promotion queues"


def test_a_job_that_keeps_its_claim_publishes_and_finishes_in_one_transaction(services: Services) -> None:
    code, job, _ = _run(services, reap=False)
    assert code == 0
    assert job.status == JobStatus.DONE and job.result["model_version"] == 1 and job.result["promoted"]
    assert job.log_tail[-2:] == [
        f"model segmentation version 1: promoted ({job.result['reason']})",
        "train segmentation done",
    ]
    assert job.metrics == job.result["metrics"] and job.progress == job.result["train_stats"]
    [version] = services.registry.versions("segmentation")
    assert version.active and version.params["job"] == job.id
    assert len(_weights_files(services)) == 1
