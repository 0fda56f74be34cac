"""Tiny synthetic cases, a narrow UNet and quick options for running the radiology trainers on the CPU.

Cases are 32 x 32 x 16 voxels of 6 x 6 x 8 mm (64 x 64 x 32 once normalised to 3 x 3 x 4 mm),
and most runs use a narrow UNet with 32 x 32 x 16 patches, so that a run takes seconds.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest
import torch

from apps.radiology import LABELS
from apps.radiology.config import NetworkConfig
from apps.radiology.training import SegmentationTrainer
from labelloop.imaging import write_volume
from labelloop.sampledata.synthetic import generate_case
from labelloop.tasks import (
    LocalTrainContext,
    TrainConfig,
    TrainData,
    TrainItem,
    TrainResult,
    TrainTask,
    split_items,
    validate_options,
)

#: A narrow UNet on 32 x 32 x 16 patches; validation windows tile the 64 x 64 x 32 cases exactly.
SMALL_NETWORK: dict[str, Any] = {
    "channels": (4, 8, 16, 32, 64),
    "num_res_units": 1,
    "roi_size": (32, 32, 16),
    "sw_batch_size": 8,
    "overlap": 0.0,
}
SMALL = NetworkConfig(**SMALL_NETWORK)
FAST = {
    "max_epochs": 2,
    "learning_rate": 1e-3,
    "train_batch_size": 1,
    "samples_per_image": 1,
    "early_stop_patience": -1,
}
CPU = torch.device("cpu")

ConfigT = TypeVar("ConfigT", bound=TrainConfig)


def options(trainer: type[TrainTask[ConfigT]], values: Mapping[str, Any]) -> ConfigT:
    """``values`` validated into ``trainer``'s config model, as the server does at submission."""
    return validate_options(trainer.config_model, values)


def cases(root: Path, count: int) -> list[TrainItem]:
    root.mkdir(parents=True, exist_ok=True)
    items = []
    for i in range(count):
        image, label, affine = generate_case(np.random.default_rng([11, i]), (32, 32, 16), (6.0, 6.0, 8.0))
        write_volume(root / f"image{i}.nii.gz", image, affine)
        write_volume(root / f"label{i}.nii.gz", label, affine)
        items.append(
            TrainItem(f"case{i}", root / f"image{i}.nii.gz", root / f"label{i}.nii.gz", 1, f"{i:064d}")
        )
    return items


class StopAfter(LocalTrainContext):
    """Asks to stop once ``when(stats)`` holds for a report."""

    def __init__(self, workdir: Path, when: Any, resume: Path | None = None) -> None:
        super().__init__(workdir, resume=resume)
        self.when = when

    def report(self, stats: Any) -> None:
        super().report(stats)
        self.stop_requested = self.stop_requested or bool(self.when(stats))


def state(path: Path) -> dict[str, torch.Tensor]:
    loaded = torch.load(str(path), map_location="cpu", weights_only=True)
    assert isinstance(loaded, dict) and all(isinstance(v, torch.Tensor) for v in loaded.values())
    return loaded


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="session")
def data(tmp_path_factory: pytest.TempPathFactory) -> TrainData:
    """Three training cases and two validation cases."""
    split = split_items(cases(tmp_path_factory.mktemp("cases"), 5), 0.4)
    assert (len(split.train), len(split.val)) == (3, 2)
    return split


@pytest.fixture(scope="session")
def trained(
    data: TrainData, tmp_path_factory: pytest.TempPathFactory
) -> tuple[LocalTrainContext, TrainResult]:
    """A 2-epoch segmentation run (3 iterations an epoch), from scratch."""
    ctx = LocalTrainContext(tmp_path_factory.mktemp("run"))
    return ctx, SegmentationTrainer(LABELS, SMALL).train(ctx, data, options(SegmentationTrainer, FAST), None)
