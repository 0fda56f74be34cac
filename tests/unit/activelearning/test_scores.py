"""Stored per-image scores: one per (image, method), with the model version and image content behind it."""

from __future__ import annotations

import pytest

from labelloop.activelearning import ScoreStore
from labelloop.tasks import Score
from tests.unit.activelearning.conftest import Lab, LabFactory


@pytest.fixture
def lab(make_lab: LabFactory) -> Lab:
    return make_lab(images=("img1", "img2"))


@pytest.fixture
def store(lab: Lab) -> ScoreStore:
    return ScoreStore(lab.datastore.db, lab.clock)


def put(
    store: ScoreStore,
    image_id: str,
    method: str = "epistemic",
    *,
    value: float | None = 0.5,
    model_version: int | None = 1,
    image_sha256: str = "a" * 64,
    details: dict[str, object] | None = None,
) -> None:
    store.put(
        image_id,
        method,
        model="segmentation",
        model_version=model_version,
        image_sha256=image_sha256,
        value=value,
        details=details or {},
    )


def test_all_is_empty_before_anything_is_scored(store: ScoreStore) -> None:
    assert store.all() == {}


def test_a_stored_score_comes_back_by_image_and_method(store: ScoreStore) -> None:
    put(store, "img1", value=0.25, details={"passes": 8})
    put(store, "img1", "tta", value=0.75, model_version=None)
    put(store, "img2", value=None)
    assert store.all() == {
        "img1": {
            "epistemic": Score("epistemic", 0.25, "segmentation", 1, {"passes": 8}),
            "tta": Score("tta", 0.75, "segmentation", None, {}),
        },
        "img2": {"epistemic": Score("epistemic", None, "segmentation", 1, {})},
    }


def test_putting_a_score_again_replaces_it(store: ScoreStore) -> None:
    put(store, "img1", value=0.25, model_version=1)
    put(store, "img1", value=0.9, model_version=2)
    assert store.all() == {"img1": {"epistemic": Score("epistemic", 0.9, "segmentation", 2, {})}}


def test_fresh_lists_the_images_a_model_version_already_scored_with_their_content(store: ScoreStore) -> None:
    put(store, "img1", model_version=2, image_sha256="1" * 64)
    put(store, "img2", model_version=1, image_sha256="2" * 64)
    put(store, "img2", "tta", model_version=2, image_sha256="3" * 64)
    assert store.fresh("epistemic", 2) == {"img1": "1" * 64}
    assert store.fresh("epistemic", 1) == {"img2": "2" * 64}
    assert store.fresh("epistemic", 3) == {}


def test_a_rescore_by_a_new_version_makes_the_old_one_stale(store: ScoreStore) -> None:
    put(store, "img1", model_version=1)
    put(store, "img1", model_version=2, image_sha256="b" * 64)
    assert store.fresh("epistemic", 1) == {}
    assert store.fresh("epistemic", 2) == {"img1": "b" * 64}


def test_the_active_learning_service_reads_the_same_scores(lab: Lab, store: ScoreStore) -> None:
    put(store, "img2", value=0.4)
    assert lab.activelearning.scores.all()["img2"]["epistemic"].value == 0.4
