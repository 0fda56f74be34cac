"""The dashboard's aggregates (``GET /datastore/progress``): counts per tag and per annotator, final
labels per day, cases held now and the median time from hand-out to save, computed by the database
(SQLite and PostgreSQL), on services whose clock the test moves by hand.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from labelloop.activelearning import ActiveLearning
from labelloop.activelearning.progress import HolderWork, lease_progress
from labelloop.datastore import Datastore, LabelFile, Provenance
from labelloop.datastore.progress import DAY_S, AuthorWork, DayCount, label_progress
from labelloop.db import Database
from labelloop.imaging import write_volume
from labelloop.settings import ActiveLearningSettings
from labelloop.workflows import LabelSave, save_label
from tests.support.volumes import DEFAULT_AFFINE, make_image

SHAPE = (8, 6, 4)
#: The start of a UTC day, plus an hour.
START = 20_000 * DAY_S + 3600.0


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


@dataclass
class Lab:
    db: Database
    datastore: Datastore
    activelearning: ActiveLearning
    clock: Clock
    folder: Path

    def take(self, holder: str) -> str:
        handout = self.activelearning.next_sample("first", {"client_id": holder}, holder)
        assert handout is not None
        return handout.image.id

    def save(self, image_id: str, author: str, *, after_s: float, tag: str = "final") -> None:
        self.clock.now += after_s
        path = self.folder / f"{image_id}.{tag}.{self.clock.now}.nii.gz"
        write_volume(path, np.ones(SHAPE, np.uint8), DEFAULT_AFFINE)
        provenance = Provenance(author=author, client_id="slicer", signed_in=True)
        save_label(self.datastore, self.activelearning, LabelSave(image_id, tag, LabelFile(path), provenance))


@pytest.fixture
def lab(tmp_path: Path, database_url: str | None) -> Iterator[Lab]:
    db = Database(database_url or f"sqlite:///{tmp_path / 'labelloop.db'}")
    db.migrate()
    clock = Clock()
    datastore = Datastore(db, tmp_path / "data", clock=clock)
    settings = ActiveLearningSettings(lease_s=10 * DAY_S)
    activelearning = ActiveLearning(datastore, {}, settings, clock=clock)
    folder = tmp_path / "in"
    folder.mkdir()
    for seed, image_id in enumerate(f"img{i}" for i in range(6)):
        make_image(folder / f"{image_id}.nii.gz", shape=SHAPE, seed=seed)
        datastore.images.add(
            folder / f"{image_id}.nii.gz", filename=f"{image_id}.nii.gz", image_id=image_id, info={}, user="t"
        )
    try:
        yield Lab(db, datastore, activelearning, clock, folder)
    finally:
        db.dispose()


def test_counts_per_tag_and_annotator_and_final_labels_per_day(lab: Lab) -> None:
    grey = [lab.take("grey")]
    lab.save(grey[0], "grey", after_s=100)  # img0: final, day 0
    grey.append(lab.take("grey"))
    lab.save(grey[1], "grey", after_s=300)  # img1: final, day 0
    lab.save(grey[1], "grey", after_s=50)  # a second version of img1: no new final image
    red = lab.take("red")
    lab.save(red, "red", after_s=DAY_S)  # img2: final, day 1
    lab.save("img5", "red", after_s=10, tag="draft")
    lab.save("img5", "red", after_s=10, tag="original")  # a model's output is not someone's label
    blue = lab.take("blue")  # img3, held now

    progress = label_progress(lab.db)
    assert (progress.images, progress.labelled, progress.finals) == (6, 4, 3)
    assert progress.tags == {"draft": 1, "final": 3, "original": 1}
    assert progress.tags == lab.datastore.views.stats()["label_tags"]
    assert progress.authors == [AuthorWork("grey", 3, 3), AuthorWork("red", 3, 1)]  # most first, then by name
    day0 = 20_000 * DAY_S
    assert progress.finals_by_day == [DayCount(day0, 2, 2), DayCount(day0 + DAY_S, 1, 3)]
    # With auth off the client's id tells annotators apart (every save here came from "slicer").
    assert label_progress(lab.db, by_client_id=True).authors == [AuthorWork("slicer", 6, 4)]

    work = {w.holder: w for w in lease_progress(lab.db, lab.clock.now)}
    assert work["grey"] == HolderWork("grey", 0, 2, 200.0)  # median of 100 and 300
    assert work["red"] == HolderWork("red", 0, 1, float(DAY_S))
    assert work["blue"] == HolderWork("blue", 1, 0, None)
    assert blue not in grey
    # A lease that ran out is held by nobody: blue, with no case finished, drops out.
    assert [w.holder for w in lease_progress(lab.db, lab.clock.now + 11 * DAY_S)] == ["grey", "red"]


def test_the_median_of_an_odd_count_is_the_middle_one(lab: Lab) -> None:
    for seconds in (30, 10, 500):
        lab.save(lab.take("grey"), "grey", after_s=seconds)
    assert lease_progress(lab.db, lab.clock.now) == [HolderWork("grey", 0, 3, 30.0)]


def test_nothing_yet_is_zeros_and_empty_lists(lab: Lab) -> None:
    progress = label_progress(lab.db)
    assert (progress.images, progress.labelled, progress.finals) == (6, 0, 0)
    assert progress.tags == {} and progress.authors == [] and progress.finals_by_day == []
    assert lease_progress(lab.db, lab.clock.now) == []
