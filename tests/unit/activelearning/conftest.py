"""A datastore with a few tiny images and active learning over it, built as ``build_services`` does."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from labelloop.activelearning import ActiveLearning
from labelloop.datastore import Datastore, LabelFile, LabelVersion, Provenance
from labelloop.db import Database
from labelloop.imaging import write_volume
from labelloop.settings import ActiveLearningSettings
from labelloop.tasks import Strategy
from tests.support.volumes import DEFAULT_AFFINE, make_image

#: Every test image: small enough that reading and writing cost nothing.
SHAPE = (8, 6, 4)


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Lab:
    """The services under test, their clock and a folder for input files."""

    datastore: Datastore
    activelearning: ActiveLearning
    clock: Clock
    folder: Path

    def add_images(self, *image_ids: str) -> None:
        for seed, image_id in enumerate(image_ids):
            path = self.folder / f"{image_id}.nii.gz"
            make_image(path, shape=SHAPE, seed=seed)
            self.datastore.images.add(path, filename=path.name, image_id=image_id, info={}, user="tester")

    def save_label(self, image_id: str, tag: str, array: np.ndarray, author: str = "tester") -> LabelVersion:
        """Save ``array`` (on the images' grid) as the next version of ``(image_id, tag)``, a second later."""
        path = self.folder / f"{image_id}.{tag}.nii.gz"
        write_volume(path, array.astype(np.uint8), DEFAULT_AFFINE)
        self.clock.advance(1.0)
        return self.datastore.labels.save(image_id, tag, LabelFile(path), Provenance(author=author))


LabFactory = Callable[..., Lab]


@pytest.fixture
def make_lab(tmp_path: Path) -> Iterator[LabFactory]:
    """``make_lab(database_url, images=..., reads=1, lease_s=60, strategies={})``; no URL: SQLite."""
    made: list[Database] = []

    def make(
        database_url: str | None = None,
        *,
        images: Sequence[str] = ("img1", "img2", "img3"),
        reads: int = 1,
        lease_s: float = 60.0,
        strategies: Mapping[str, Strategy] | None = None,
    ) -> Lab:
        root = tmp_path / f"lab{len(made)}"
        (root / "in").mkdir(parents=True)
        db = Database(database_url or f"sqlite:///{root / 'labelloop.db'}")
        made.append(db)
        db.migrate()
        clock = Clock()
        datastore = Datastore(db, root / "data", clock=clock)
        settings = ActiveLearningSettings(lease_s=lease_s, reads=reads)
        activelearning = ActiveLearning(datastore, strategies or {}, settings, clock=clock)
        lab = Lab(datastore, activelearning, clock, root / "in")
        lab.add_images(*images)
        return lab

    yield make
    for db in made:
        db.dispose()
