"""The model registry on SQLite and PostgreSQL: versions, their files, the one active version."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from labelloop.datastore import Datastore
from labelloop.db import Database
from labelloop.errors import InvalidIdError, ModelNotFoundError
from labelloop.registry import ModelVersion, Registry


@pytest.fixture
def make_registry(database_url: str | None, tmp_path: Path) -> Iterator[Callable[..., Registry]]:
    """``make_registry(clock=...)``: registries as ``build_services`` makes them, on one database."""
    db = Database(database_url or f"sqlite:///{tmp_path / 'labelloop.db'}")
    db.migrate()
    blobs = Datastore(db, tmp_path / "data").blobs

    def make(clock: Callable[[], float] = time.time) -> Registry:
        return Registry(db, blobs, clock=clock)

    yield make
    db.dispose()


@pytest.fixture
def registry(make_registry: Callable[..., Registry]) -> Registry:
    return make_registry()


def publish(
    registry: Registry,
    tmp_path: Path,
    model: str = "segmentation",
    *,
    content: bytes = b"weights",
    activate: bool = True,
    **kwargs: Any,
) -> ModelVersion:
    source = tmp_path / "upload.pt"
    source.write_bytes(content)
    return registry.publish(model, source, source="upload", user="tester", activate=activate, **kwargs)


def stored_files(tmp_path: Path) -> list[Path]:
    """Every file under the data directory (the SQLite database lies outside it)."""
    return sorted(p for p in (tmp_path / "data").rglob("*") if p.is_file())


# ------------------------------------------------------------ publish


def test_versions_count_up_per_model(registry: Registry, tmp_path: Path) -> None:
    numbers = [publish(registry, tmp_path, model).version for model in ("seg", "seg", "deepedit", "seg")]
    assert numbers == [1, 2, 1, 3]


def test_publish_stores_a_copy_of_the_file_with_its_sha256(registry: Registry, tmp_path: Path) -> None:
    content = b"\x00state dict\x01" * 1000
    version = publish(registry, tmp_path, content=content)
    source = tmp_path / "upload.pt"
    assert version.path != source and version.path.is_relative_to(tmp_path / "data")
    assert version.path.read_bytes() == content and source.read_bytes() == content
    assert version.sha256 == hashlib.sha256(content).hexdigest()
    assert version.checksum == f"SHA256:{version.sha256}" and version.size_bytes == len(content)
    assert registry.get("segmentation", 1).path == version.path


def test_publish_keeps_metrics_params_and_training_set(registry: Registry, tmp_path: Path) -> None:
    training_set = [{"image": "ct1", "version": 2, "sha256": "ab" * 32}]
    publish(
        registry,
        tmp_path,
        metrics={"val_mean_dice": 0.81},
        params={"max_epochs": 3},
        training_set=training_set,
        duration_s=12.5,
    )
    stored = registry.get("segmentation", 1)
    assert (stored.metrics, stored.params, stored.training_set) == (
        {"val_mean_dice": 0.81},
        {"max_epochs": 3},
        training_set,
    )
    assert (stored.created_by, stored.duration_s) == ("tester", 12.5)


def test_the_file_is_in_place_before_the_row_is_written(
    make_registry: Callable[..., Registry], tmp_path: Path
) -> None:
    content = b"weights that must exist before their row"
    seen: list[list[bytes]] = []

    def clock() -> float:  # publish reads the clock inside the transaction that inserts the row
        seen.append([p.read_bytes() for p in stored_files(tmp_path)])
        return 1000.0

    publish(make_registry(clock), tmp_path, content=content)
    assert seen and all(content in files for files in seen)


def test_a_failed_publish_leaves_no_blob_and_no_version(
    make_registry: Callable[..., Registry], tmp_path: Path
) -> None:
    def broken_clock() -> float:
        raise RuntimeError("clock failed mid-transaction")

    registry = make_registry(broken_clock)
    with pytest.raises(RuntimeError, match="mid-transaction"):
        publish(registry, tmp_path)
    assert stored_files(tmp_path) == []
    assert registry.versions("segmentation") == [] and registry.active("segmentation") is None


@pytest.mark.parametrize("name", ["../escape", "", "a/b", "-leading-dash", "x" * 129])
def test_an_invalid_model_name_is_an_id_error_and_stores_nothing(
    registry: Registry, tmp_path: Path, name: str
) -> None:
    with pytest.raises(InvalidIdError, match="model name"):
        publish(registry, tmp_path, name)
    assert stored_files(tmp_path) == []


# ------------------------------------------------------------ the active version


def test_an_untrained_model_has_no_active_version(registry: Registry, tmp_path: Path) -> None:
    publish(registry, tmp_path, "other")
    assert registry.active("segmentation") is None
    assert registry.versions("segmentation") == []


def test_publishing_with_activate_replaces_the_active_version(registry: Registry, tmp_path: Path) -> None:
    publish(registry, tmp_path)
    publish(registry, tmp_path)
    active = registry.active("segmentation")
    assert active is not None and active.version == 2 and active.activated_at is not None
    assert [(v.version, v.active) for v in registry.versions("segmentation")] == [(2, True), (1, False)]


def test_publishing_without_activate_leaves_the_active_version(registry: Registry, tmp_path: Path) -> None:
    publish(registry, tmp_path)
    candidate = publish(registry, tmp_path, activate=False)
    assert not candidate.active and candidate.activated_at is None
    active = registry.active("segmentation")
    assert active is not None and active.version == 1


def test_activating_an_older_version_rolls_back_with_one_active(registry: Registry, tmp_path: Path) -> None:
    first = publish(registry, tmp_path)
    for _ in range(2):
        publish(registry, tmp_path)
    rolled = registry.activate("segmentation", 1)
    assert rolled.version == 1 and rolled.active and rolled.path == first.path
    assert [(v.version, v.active) for v in registry.versions("segmentation")] == [
        (3, False),
        (2, False),
        (1, True),
    ]
    active = registry.active("segmentation")
    assert active is not None and active.version == 1


def test_activation_is_per_model(registry: Registry, tmp_path: Path) -> None:
    publish(registry, tmp_path, "segmentation")
    publish(registry, tmp_path, "segmentation")
    publish(registry, tmp_path, "deepedit")
    registry.activate("segmentation", 1)
    active = registry.active("deepedit")
    assert active is not None and active.version == 1


def test_activating_an_unknown_version_raises_and_changes_nothing(registry: Registry, tmp_path: Path) -> None:
    publish(registry, tmp_path)
    with pytest.raises(ModelNotFoundError, match="no version 7"):
        registry.activate("segmentation", 7)
    active = registry.active("segmentation")
    assert active is not None and active.version == 1


def test_getting_an_unknown_version_or_model_raises_model_not_found(
    registry: Registry, tmp_path: Path
) -> None:
    publish(registry, tmp_path)
    with pytest.raises(ModelNotFoundError, match="'segmentation' has no version 2"):
        registry.get("segmentation", 2)
    with pytest.raises(ModelNotFoundError, match="'never-published'"):
        registry.get("never-published", 1)


# ------------------------------------------------------------ retiring


def test_retire_active_takes_the_version_out_of_service(registry: Registry, tmp_path: Path) -> None:
    publish(registry, tmp_path)
    publish(registry, tmp_path)
    retired = registry.retire_active("segmentation")
    assert retired is not None and retired.version == 2
    assert not retired.active and retired.retired_at is not None, "the answer is the version as retired"
    assert registry.active("segmentation") is None


def test_retire_active_without_an_active_version_returns_none(registry: Registry, tmp_path: Path) -> None:
    publish(registry, tmp_path, activate=False)
    assert registry.retire_active("segmentation") is None
    assert [v.retired_at for v in registry.versions("segmentation")] == [None]


def test_versions_lists_newest_first_with_retired_ones(registry: Registry, tmp_path: Path) -> None:
    for _ in range(3):
        publish(registry, tmp_path)
    registry.retire_active("segmentation")
    listed = registry.versions("segmentation")
    assert [v.version for v in listed] == [3, 2, 1]
    assert [v.retired_at is not None for v in listed] == [True, False, False]
    assert not any(v.active for v in listed)


def test_publishing_after_retiring_continues_the_numbering(registry: Registry, tmp_path: Path) -> None:
    publish(registry, tmp_path)
    registry.retire_active("segmentation")
    assert publish(registry, tmp_path).version == 2


def test_a_retired_version_can_be_activated_again(registry: Registry, tmp_path: Path) -> None:
    publish(registry, tmp_path)
    registry.retire_active("segmentation")
    again = registry.activate("segmentation", 1)
    assert again.active and again.retired_at is None
    active = registry.active("segmentation")
    assert active is not None and active.version == 1
