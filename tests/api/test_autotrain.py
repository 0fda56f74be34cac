"""Automatic training (issue 17, item 1): only labels people save count; what it will do is in /info/.

A studies folder arrives with final labels already; before, they counted as new final labels and the
first save queued a full-length run of every trainer.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from monailabel.client import MONAILabelClient

from labelloop.errors import InvalidParamsError
from labelloop.imaging import write_volume
from labelloop.sampledata.synthetic import generate_case
from labelloop.server import build_services
from labelloop.settings import JobSettings, Settings
from labelloop.tasks import load_app
from tests.support.servers import APP_DIR, LiveServer, free_port

SHAPE, SPACING = (24, 24, 16), (3.0, 3.0, 4.0)


def _case(folder: Path, name: str, index: int, label_dir: Path | None = None) -> tuple[Path, Path]:
    image, label, affine = generate_case(np.random.default_rng([11, index]), shape=SHAPE, spacing=SPACING)
    image_path = folder / f"{name}.nii.gz"
    write_volume(image_path, image, affine)
    label_path = (label_dir or folder) / (f"{name}.nii.gz" if label_dir else f"{name}_label.nii.gz")
    label_path.parent.mkdir(parents=True, exist_ok=True)
    write_volume(label_path, label, affine)
    return image_path, label_path


def _studies(root: Path, labelled: int) -> Path:
    studies = root / "studies"
    studies.mkdir()
    for i in range(labelled):
        _case(studies, f"imported{i}", i, label_dir=studies / "labels" / "final")
    return studies


def _train_tasks(server: LiveServer) -> list[dict[str, Any]]:
    r = requests.get(f"{server.url}/train/", params={"all": "true"}, timeout=10)
    return [] if r.status_code == 404 else list(r.json())


def test_imported_labels_do_not_count_and_the_plan_is_in_info(
    make_server: Callable[..., LiveServer], tmp_path: Path
) -> None:
    jobs = JobSettings(
        workers=0,
        heartbeat_interval_s=0.2,
        autotrain_after=2,
        autotrain_models=["segmentation"],
        autotrain_options={"max_epochs": 3},
    )
    server = make_server(studies=str(_studies(tmp_path, labelled=4)), jobs=jobs)
    info = requests.get(f"{server.url}/info/", timeout=10).json()
    assert info["datastore"]["label_tags"]["final"] == 4, "the studies' labels were imported"
    plan = info["autotrain"]
    assert plan["after"] == 2 and plan["enabled"] is True and plan["new_final_labels"] == 0
    assert plan["models"] == ["segmentation"]
    assert plan["options"]["segmentation"]["max_epochs"] == 3
    time.sleep(1.0)  # several housekeeping rounds
    assert _train_tasks(server) == [], "4 imported labels queued training"

    client = MONAILabelClient(server.url, client_id="ann")
    image, label = _case(tmp_path, "mine0", 20)
    client.upload_image(str(image), "mine0")
    client.save_label("mine0", str(label))
    time.sleep(1.0)
    assert _train_tasks(server) == [], "one save by a person is below the threshold of 2"
    assert requests.get(f"{server.url}/info/", timeout=10).json()["autotrain"]["new_final_labels"] == 1

    image, label = _case(tmp_path, "mine1", 21)
    client.upload_image(str(image), "mine1")
    client.save_label("mine1", str(label))
    deadline = time.monotonic() + 20
    while not _train_tasks(server) and time.monotonic() < deadline:
        time.sleep(0.2)
    tasks = _train_tasks(server)
    assert [t["request"]["model"] for t in tasks] == ["segmentation"], "only the configured trainer"
    assert tasks[0]["request"]["max_epochs"] == 3 and tasks[0]["created_by"] == "autotrain"
    assert requests.get(f"{server.url}/info/", timeout=10).json()["autotrain"]["new_final_labels"] == 0


@pytest.mark.parametrize(
    ("jobs", "message"),
    [
        (JobSettings(workers=0, autotrain_models=["segmentaton"]), "segmentaton"),
        (JobSettings(workers=0, autotrain_options={"max_epochs": -1}), "max_epochs"),
    ],
)
def test_a_bad_autotrain_setting_stops_the_start(jobs: JobSettings, message: str, tmp_path: Path) -> None:
    load_app(APP_DIR)
    settings = Settings(app=APP_DIR, data_dir=tmp_path / "data", port=free_port(), jobs=jobs)
    with pytest.raises(InvalidParamsError, match=message):
        build_services(settings)
