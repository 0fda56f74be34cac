"""Training data of the radiology trainers: cases read and normalised exactly as inference does,
cached by MONAI's ``CacheDataset`` within a byte budget when a run reads them more than once, and
split between ranks."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
from monai.transforms import Transform

from labelloop.imaging import read_geometry, read_volume, resample_nearest
from labelloop.tasks import TrainItem

from ..config import PREPROCESS
from ..transforms import normalise
from .job import Dist, TrainJob

__all__ = ["LoadCased", "cached_count", "datasets", "shard"]


class LoadCased(Transform):
    """``{"image": path, "label": path}`` -> normalised ``image`` and ``label`` tensors.

    ``image`` is ``(1, X, Y, Z)`` float32 in ``[0, 1]``, RAS, ``PREPROCESS.spacing_mm`` voxels,
    exactly what ``normalise`` gives inference; ``label`` is ``(1, X, Y, Z)`` uint8 on that grid
    (nearest neighbour through both volumes' affines; values outside ``[0, n_labels)`` become 0).
    Both are zero-padded to at least ``min_size`` voxels so that patches can be cropped.
    Deterministic, so ``CacheDataset`` caches its output.
    """

    def __init__(self, n_labels: int, min_size: tuple[int, int, int] = (1, 1, 1)) -> None:
        self.n_labels = n_labels
        self.min_size = min_size

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        import torch

        prepared = normalise(read_volume(Path(data["image"])), "cpu")
        label = read_volume(Path(data["label"]))
        values = np.asarray(label.array)
        values = np.where((values >= 0) & (values < self.n_labels), values, 0).astype(np.uint8)
        grid = resample_nearest(values, label.geometry.affine, prepared.shape, prepared.affine)
        pads = [max(m - n, 0) for m, n in zip(self.min_size, prepared.shape, strict=True)]
        widths = [w for p in reversed(pads) for w in (p // 2, p - p // 2)]  # last axis first
        label_tensor = torch.from_numpy(np.ascontiguousarray(grid))[None]
        return {
            "image": torch.nn.functional.pad(prepared.tensor, widths, value=0.0),
            "label": torch.nn.functional.pad(label_tensor, widths, value=0),
        }


def cached_count(items: tuple[TrainItem, ...], budget: int, roi: tuple[int, int, int]) -> tuple[int, int]:
    """How many of ``items`` (in order) fit in ``budget`` bytes once normalised, and their bytes.

    A case's size is estimated from its header: its field of view at ``PREPROCESS.spacing_mm``
    (at least ``roi``), times 5 bytes a voxel (float32 image, uint8 label).
    """
    used = 0
    for count, item in enumerate(items):
        geometry, _ = read_geometry(item.image)
        extent = np.asarray(geometry.shape, dtype=np.float64) * np.asarray(geometry.spacing)
        voxels = max(float(np.prod(extent / np.asarray(PREPROCESS.spacing_mm))), float(np.prod(roi)))
        if used + int(voxels * 5) > budget:
            return count, used
        used += int(voxels * 5)
    return len(items), used


def datasets(
    job: TrainJob, train: tuple[TrainItem, ...], val: tuple[TrainItem, ...], passes: int = 2
) -> tuple[Any, Any]:
    """Training set (random class-balanced patches, intensity jitter) and validation set.

    With ``passes`` > 1 (the epochs this run makes) the normalised cases are cached within
    ``cache_bytes``; a single pass reads each case once, so it caches none: a cache would only
    hold every case in memory at once (about 5 MB per 128 x 128 x 64 case) for nothing.
    """
    from monai.data import CacheDataset
    from monai.transforms import Compose, RandCropByLabelClassesd, RandScaleIntensityd, RandShiftIntensityd

    roi, n = job.network.roi_size, len(job.labels)
    # No flips: every case is RAS-normalised, and the left/right kidney labels depend on the side.
    augment = [
        RandCropByLabelClassesd(
            keys=["image", "label"],
            label_key="label",
            spatial_size=roi,
            ratios=None,
            num_classes=n,
            num_samples=job.config.samples_per_image,
            image_key=None,
            warn=False,
        ),
        RandShiftIntensityd(keys="image", offsets=0.05, prob=0.5),
        RandScaleIntensityd(keys="image", factors=0.1, prob=0.5),
    ]
    budget = job.config.cache_bytes if passes > 1 else 0
    train_count, used = cached_count(train, budget, roi)
    val_count, _ = cached_count(val, budget - used, (1, 1, 1))
    out = []
    stages: tuple[tuple[tuple[TrainItem, ...], list[Any], int], ...] = (
        (train, [LoadCased(n, roi), *augment], train_count),
        (val, [LoadCased(n)], val_count),
    )
    for items, transforms, count in stages:
        data = [{"image": str(i.image), "label": str(i.label)} for i in items]
        workers = max(1, min(4, os.cpu_count() or 1))
        out.append(
            CacheDataset(
                data,
                Compose(transforms),
                cache_num=count,
                cache_rate=1.0,
                num_workers=workers,
                progress=False,
                copy_cache=True,
            )
        )
    return out[0], out[1]


def shard(job: TrainJob, dist: Dist | None) -> tuple[tuple[TrainItem, ...], tuple[TrainItem, ...]]:
    """This rank's training and validation cases. Training shards are equal (wrapping around)
    so every rank takes the same number of steps."""
    if dist is None:
        return job.train, job.val
    per_rank = math.ceil(len(job.train) / dist.world_size)
    train = tuple(job.train[(dist.rank + k * dist.world_size) % len(job.train)] for k in range(per_rank))
    return train, job.val[dist.rank :: dist.world_size]
