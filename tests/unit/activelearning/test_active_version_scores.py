"""Only the active model version's scores count, on SQLite and PostgreSQL.

After a rollback from version 2 to 1, version 2's scores are not what strategies rank by, and a
scoring job still running with version 2 cannot store any more of them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from labelloop.activelearning import ScoreStore
from labelloop.registry import Registry
from tests.unit.activelearning.conftest import Lab, LabFactory


@pytest.fixture
def lab(make_lab: LabFactory, database_url: str | None) -> Lab:
    return make_lab(database_url, images=("img1", "img2", "img3"))


@pytest.fixture
def registry(lab: Lab, tmp_path: Path) -> Registry:
    registry = Registry(lab.datastore.db, lab.datastore.blobs)
    for version in (1, 2):
        weights = tmp_path / f"w{version}.pt"
        weights.write_bytes(b"weights %d" % version)
        registry.publish("segmentation", weights, source="upload", user="ml-staff", activate=True)
    return registry


def put(store: ScoreStore, image_id: str, version: int | None, value: float, **kwargs: bool) -> bool:
    return store.put(
        image_id,
        "epistemic",
        model="segmentation",
        model_version=version,
        image_sha256="a" * 64,
        value=value,
        details={},
        **kwargs,
    )


def versions(store: ScoreStore) -> dict[str, int | None]:
    return {image: s["epistemic"].model_version for image, s in store.all().items()}


def test_strategies_see_only_the_active_versions_scores(lab: Lab, registry: Registry) -> None:
    store = lab.activelearning.scores
    put(store, "img1", 1, 0.9)
    put(store, "img2", 2, 0.5)
    put(store, "img3", None, 0.7)  # unversioned: not the active version of a model that has versions
    assert versions(store) == {"img2": 2}
    registry.activate("segmentation", 1)  # the rollback
    assert versions(store) == {"img1": 1}
    registry.retire_active("segmentation")
    assert versions(store) == {}, "no version serves: no score is current"


def test_scores_of_a_model_without_versions_all_count(lab: Lab, registry: Registry) -> None:
    store = lab.activelearning.scores
    store.put(
        "img1", "walker", model="randomwalk", model_version=None, image_sha256="b" * 64, value=0.3, details={}
    )
    assert store.all()["img1"]["walker"].value == 0.3


def test_a_score_of_a_version_no_longer_active_is_refused(lab: Lab, registry: Registry) -> None:
    store = lab.activelearning.scores
    assert put(store, "img1", 2, 0.4, only_if_active=True)
    registry.activate("segmentation", 1)
    assert not put(store, "img2", 2, 0.8, only_if_active=True), "version 2's scoring job outlived it"
    assert not put(store, "img1", 2, 0.8, only_if_active=True)
    assert put(store, "img2", 1, 0.6, only_if_active=True)
    assert store.fresh("epistemic", 2) == {"img1": "a" * 64}, "the refused score changed nothing"
    assert versions(store) == {"img2": 1}
    assert put(store, "img3", 2, 0.1), "without only_if_active a score is stored as it comes"
