"""The MONAI Label Python client logs in as 3D Slicer does, then runs the whole loop with auth on:
next sample, infer, save, train (admin only), with every step recorded under the user's name."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from monailabel.client import MONAILabelClient
from monailabel.client.client import MONAILabelClientException

from labelloop.auth import ADMIN, ANNOTATOR, UserStore
from labelloop.db import Database
from labelloop.imaging import write_volume
from labelloop.sampledata.synthetic import generate_case
from labelloop.settings import AuthSettings, JobSettings
from tests.conftest import ServerFactory

SHAPE, SPACING = (48, 48, 24), (3.0, 3.0, 4.0)
QUICK = {"max_epochs": 1, "samples_per_image": 1, "train_batch_size": 1, "val_split": 0.5}
JOBS = JobSettings(
    workers=1, heartbeat_interval_s=0.5, poll_interval_s=0.2, cancel_grace_s=5, autotrain_after=0
)


def _logged_in(url: str, name: str, password: str, tmp_path: Path) -> MONAILabelClient:
    """What Slicer's MONAI Label module does: ask whether auth is on, log in, use the token."""
    client = MONAILabelClient(url, tmpdir=str(tmp_path), client_id=f"slicer-{name}")
    assert client.auth_enabled() is True
    client.update_auth(client.auth_token(name, password))
    assert client.auth_valid_token() is True
    return client


@pytest.mark.slow
def test_client_logs_in_and_runs_the_loop_with_auth_on(make_server: ServerFactory, tmp_path: Path) -> None:
    server = make_server(auth=AuthSettings(enabled=True), jobs=JOBS)
    db = Database(server.settings.resolved_database_url)
    try:
        store = UserStore(db)
        store.add("ann", [ANNOTATOR], "annotator password")
        store.add("boss", [ADMIN], "administrator password")
    finally:
        db.dispose()

    anonymous = MONAILabelClient(server.url, tmpdir=str(tmp_path))
    with pytest.raises(MONAILabelClientException) as refused:
        anonymous.info()
    assert refused.value.status_code == 401
    with pytest.raises(MONAILabelClientException) as bad:
        anonymous.auth_token("ann", "not the password")
    assert bad.value.status_code == 401

    annotator = _logged_in(server.url, "ann", "annotator password", tmp_path)
    for i in range(4):
        image, label, affine = generate_case(np.random.default_rng([7, i]), shape=SHAPE, spacing=SPACING)
        write_volume(tmp_path / f"case{i}.nii.gz", image, affine)
        write_volume(tmp_path / f"case{i}_label.nii.gz", label, affine)
        annotator.upload_image(str(tmp_path / f"case{i}.nii.gz"), f"case{i}")
        if i < 3:
            annotator.save_label(f"case{i}", str(tmp_path / f"case{i}_label.nii.gz"))

    assert annotator.info()["datastore"]["completed"] == 3
    sample = annotator.next_sample("random", {})
    assert sample["id"] == "case3"
    _, params = annotator.infer(
        "random_walker", sample["id"], {"foreground": [[20, 20, 10]], "background": []}
    )
    assert params is not None
    saved = annotator.save_label(sample["id"], str(tmp_path / "case3_label.nii.gz"))
    assert saved["image"] == "case3"

    with pytest.raises(MONAILabelClientException) as forbidden:
        annotator.train_start("segmentation", dict(QUICK))
    assert "Status: 403" in str(forbidden.value)  # train_start does not set status_code

    admin = _logged_in(server.url, "boss", "administrator password", tmp_path)
    started = admin.train_start("segmentation", dict(QUICK))
    assert started["status"] == "SUBMITTED"
    done = _wait_done(server.url, admin._headers)
    assert done["status"] == "DONE", done

    headers = admin._headers
    history = requests.get(
        f"{server.url}/datastore/label/versions?image=case3&tag=final", headers=headers, timeout=30
    ).json()
    newest = history[-1] if isinstance(history, list) else history["versions"][-1]
    assert newest["author"] == "ann" and newest["client_id"] == "slicer-ann"
    audit = requests.get(f"{server.url}/audit/", headers=headers, timeout=30).json()["events"]
    did = {(e["user"], e["action"], e["outcome"]) for e in audit}
    assert {
        ("ann", "login", "success"),
        ("ann", "login", "failure"),
        ("ann", "image.upload", "success"),
        ("ann", "image.assign", "success"),
        ("ann", "image.infer", "success"),
        ("ann", "label.save", "success"),
        ("ann", "training.start", "failure"),
        ("boss", "training.start", "success"),
    } <= did, did


def _wait_done(url: str, headers: dict[str, str], timeout: float = 240) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    task: dict[str, Any] = {}
    while time.monotonic() < deadline:
        task = requests.get(f"{url}/train/", headers=headers, timeout=10).json()
        if task.get("status") not in ("SUBMITTED", "RUNNING"):
            return task
        time.sleep(0.25)
    raise AssertionError(f"timed out; last task: {task}")
