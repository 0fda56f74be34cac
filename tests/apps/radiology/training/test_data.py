"""Training data: cases normalised as inference normalises them, the cache budget, the rank shards."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from apps.radiology import LABELS
from apps.radiology.training import (
    Dist,
    LoadCased,
    SegmentationTrainer,
    TrainJob,
    cached_count,
    datasets,
    shard,
)
from labelloop.tasks import TrainData
from tests.apps.radiology.training.conftest import options

#: What ``cached_count`` reckons a 32 x 32 x 16 case of 6 x 6 x 8 mm takes: its field of view at
#: 3 x 3 x 4 mm is 64 x 64 x 32 voxels, of 5 bytes each.
CASE_BYTES = 64 * 64 * 32 * 5


def _job(data: TrainData, tmp_path: Path) -> TrainJob:
    config = options(SegmentationTrainer, {})
    return TrainJob(dict(LABELS), config, tuple(data.train), tuple(data.val), tmp_path)


def test_cases_are_normalised_and_padded_to_the_patch(data: TrainData) -> None:
    """The 31 normalised slices are padded to 48: 8 before, 9 after."""
    case = LoadCased(len(LABELS), min_size=(32, 32, 48))(
        {"image": str(data.train[0].image), "label": str(data.train[0].label)}
    )
    image, label = case["image"], case["label"]
    assert image.shape == label.shape == (1, 63, 63, 48)
    assert image.dtype == torch.float32 and label.dtype == torch.uint8
    assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
    assert set(np.unique(label.numpy()).tolist()) <= set(LABELS.values())
    padding = [*range(8), *range(39, 48)]
    assert not image[..., padding].any() and not label[..., padding].any()
    assert label[..., 8].any() and label[..., 38].any()


def test_the_cache_holds_the_cases_that_fit_its_budget(data: TrainData) -> None:
    items = tuple(data.train)
    assert cached_count(items, 2 * CASE_BYTES, (32, 32, 16)) == (2, 2 * CASE_BYTES)
    assert cached_count(items, 10 * CASE_BYTES, (32, 32, 16)) == (3, 3 * CASE_BYTES)
    assert cached_count(items, 0, (32, 32, 16)) == (0, 0)
    assert cached_count(items[:1], CASE_BYTES, (128, 64, 32)) == (0, 0)  # a case takes at least a patch


def test_ranks_take_equal_training_shards_and_split_validation(data: TrainData, tmp_path: Path) -> None:
    job = _job(data, tmp_path)
    assert shard(job, None) == (job.train, job.val)
    t, v = job.train, job.val
    assert shard(job, Dist(0, 2)) == ((t[0], t[2]), (v[0],))
    assert shard(job, Dist(1, 2)) == ((t[1], t[0]), (v[1],))  # wraps around: every rank takes 2 steps


def test_a_single_pass_caches_no_case_and_more_passes_cache_them(data: TrainData, tmp_path: Path) -> None:
    """A one-epoch run reads each case once: a cache would hold them all in memory for nothing."""
    job = _job(data, tmp_path)
    once = datasets(job, job.train, job.val, passes=1)
    again = datasets(job, job.train, job.val, passes=2)
    assert [d.cache_num for d in once] == [0, 0]
    assert [d.cache_num for d in again] == [len(job.train), len(job.val)]
    for single, cached in zip(once, again, strict=True):  # the same cases, read or cached
        assert len(single) == len(cached)
    case = once[1][0]
    assert torch.equal(torch.as_tensor(case["image"]), torch.as_tensor(again[1][0]["image"]))
    assert torch.equal(torch.as_tensor(case["label"]), torch.as_tensor(again[1][0]["label"]))
