"""Stats come from running totals; after any mix of writes they equal a recount of the rows."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from labelloop.datastore import Datastore, LabelFile, Provenance
from labelloop.datastore.counters import read_counters, recount
from labelloop.db import Database
from tests.support.volumes import make_image, make_label


@pytest.fixture
def datastore(database_url: str | None, tmp_path: Path) -> Iterator[Datastore]:
    db = Database(database_url or f"sqlite:///{tmp_path / 'c.db'}")
    db.migrate()
    yield Datastore(db, tmp_path / "data")
    db.dispose()


def _assert_consistent(ds: Datastore) -> None:
    with ds.db.read() as conn:
        kept = {k: v for k, v in read_counters(conn).items() if v}
    with ds.db.write() as conn:
        truth = {k: v for k, v in recount(conn).items() if v}
    assert kept == truth


def test_counters_follow_every_kind_of_write(datastore: Datastore, tmp_path: Path) -> None:
    image, other = tmp_path / "a.nii.gz", tmp_path / "b.nii.gz"
    make_image(image, seed=1)
    make_image(other, seed=2)
    label = tmp_path / "l.nrrd"
    make_label(label)
    for i in range(4):
        datastore.images.add(image, filename=image.name, image_id=f"x{i}", info={}, user="u")
    datastore.images.add(
        image, filename=image.name, image_id="x0", info={"again": 1}, user="u"
    )  # same content
    datastore.images.add(other, filename=other.name, image_id="x3", info={}, user="u")  # replaced, no labels
    for i in range(3):
        datastore.labels.save(f"x{i}", "final", LabelFile(label), Provenance("u"))
    datastore.labels.save("x0", "final", LabelFile(label), Provenance("u"))  # a second version
    datastore.labels.save("x0", "original", LabelFile(label), Provenance("u"))
    _assert_consistent(datastore)
    assert datastore.views.stats() == {"total": 4, "completed": 3, "label_tags": {"final": 3, "original": 1}}
    datastore.labels.delete("x1", "final")
    datastore.labels.delete("x1", "final")  # twice: counted once
    datastore.images.delete("x0")  # takes its final and original labels with it
    _assert_consistent(datastore)
    assert datastore.views.stats() == {"total": 3, "completed": 1, "label_tags": {"final": 1}}
    datastore.images.add(image, filename=image.name, image_id="x0", info={}, user="u")  # back again
    datastore.labels.save("x1", "final", LabelFile(label), Provenance("u"))  # label back
    _assert_consistent(datastore)
    assert datastore.views.stats() == {"total": 4, "completed": 2, "label_tags": {"final": 2}}
