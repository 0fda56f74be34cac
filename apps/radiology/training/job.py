"""What the data and the loop share: a run's ``TrainJob`` and a rank's place in it (``Dist``)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from labelloop.tasks import TrainItem

from ..config import NETWORK, NetworkConfig
from .config import RadiologyTrainConfig

__all__ = ["Dist", "TrainJob"]


@dataclass(frozen=True)
class TrainJob:
    """Everything a rank needs to train; picklable, so it crosses to spawned ranks.

    Attributes:
        labels: label name -> value; the network predicts ``len(labels)`` classes.
        config: the run's validated options (``DeepEditTrainConfig`` for DeepEdit).
        train, val: the cases; each rank takes its share.
        workdir: where rank 0 writes ``CHECKPOINT`` and ``WEIGHTS``.
        init_weights: a state dict to fine-tune from (used when ``config.pretrained``).
        resume: a checkpoint of an earlier run to continue (wins over ``init_weights``).
        network: the UNet to train and its sliding-window settings (as inference builds it).
        start_ts: wall-clock start of the run, seconds since the epoch.
    """

    labels: dict[str, int]
    config: RadiologyTrainConfig
    train: tuple[TrainItem, ...]
    val: tuple[TrainItem, ...]
    workdir: Path
    init_weights: Path | None = None
    resume: Path | None = None
    network: NetworkConfig = NETWORK
    start_ts: float = field(default_factory=time.time)

    @property
    def in_channels(self) -> int:
        """The image, plus one guidance channel per label for DeepEdit."""
        return 1 + (len(self.labels) if self.config.clicks is not None else 0)


@dataclass(frozen=True)
class Dist:
    """This process's place in a data-parallel run (``torch.distributed`` is initialised)."""

    rank: int
    world_size: int
