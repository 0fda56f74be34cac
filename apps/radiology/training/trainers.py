"""The radiology app's trainers: ``segmentation`` and ``deepedit``.

Each declares its options as a config model (``config.py``), which the server validates once,
at submission, and hands to ``train`` typed. ``train`` runs ``loop.run_rank``: in this process on
the CPU or one GPU, or, when several GPUs are present and the device is not pinned to one, in one
spawned process per GPU joined by ``torch.distributed`` (``ddp.train_ddp``, NCCL); or, when its
runner already made it one rank of a ``torch.distributed`` group (Ray Train), that rank's share.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TypeVar

from labelloop.errors import InvalidParamsError
from labelloop.tasks import TrainContext, TrainData, TrainResult, TrainSpec, TrainTask, options_view

from ..config import NETWORK, NetworkConfig
from .config import DeepEditTrainConfig, RadiologyTrainConfig
from .ddp import train_ddp
from .job import Dist, TrainJob
from .loop import run_rank

__all__ = ["DeepEditTrainer", "SegmentationTrainer"]

ConfigT = TypeVar("ConfigT", bound=RadiologyTrainConfig)


class _RadiologyTrainer(TrainTask[ConfigT]):
    """Trains one of the app's UNets on the normalised grid that inference uses."""

    def __init__(self, labels: Mapping[str, int], network: NetworkConfig = NETWORK) -> None:
        self.labels = dict(labels)
        self.network = network

    def job(self, ctx: TrainContext, data: TrainData, config: ConfigT, init_weights: Path | None) -> TrainJob:
        """What ``run_rank`` needs, from the arguments of ``train``."""
        if not data.train:
            raise InvalidParamsError("Nothing to train on: the training set is empty")
        return TrainJob(
            labels=self.labels,
            config=config,
            train=tuple(data.train),
            val=tuple(data.val),
            workdir=Path(ctx.workdir),
            init_weights=init_weights,
            resume=ctx.resume_checkpoint(),
            network=self.network,
        )

    def train(
        self, ctx: TrainContext, data: TrainData, config: ConfigT, init_weights: Path | None
    ) -> TrainResult:
        import torch
        import torch.distributed

        job = self.job(ctx, data, config, init_weights)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            # One rank of a data-parallel run its runner set up (Ray Train's TorchTrainer): its share.
            dist = Dist(torch.distributed.get_rank(), torch.distributed.get_world_size())
            return run_rank(ctx, job, dist).result
        device = torch.device(ctx.device)
        gpus = torch.cuda.device_count() if device.type == "cuda" else 0
        if gpus > 1 and config.device in ("auto", "cuda"):
            ctx.log(f"training on {gpus} GPUs (DistributedDataParallel)")
            return train_ddp(ctx, job, world_size=gpus, backend="nccl").result
        return run_rank(ctx, job).result


class SegmentationTrainer(_RadiologyTrainer[RadiologyTrainConfig]):
    """Trains ``segmentation``: ``unet(1, n_labels)`` on the image alone."""

    model = "segmentation"
    config_model = RadiologyTrainConfig
    spec = TrainSpec(
        description="Train the 3D UNet segmentation model on the final labels",
        config=options_view(RadiologyTrainConfig),
    )


class DeepEditTrainer(_RadiologyTrainer[DeepEditTrainConfig]):
    """Trains ``deepedit``: ``unet(1 + n_labels, n_labels)`` on the image and simulated clicks."""

    model = "deepedit"
    config_model = DeepEditTrainConfig
    spec = TrainSpec(
        description="Train DeepEdit on the final labels with simulated clicks",
        config=options_view(DeepEditTrainConfig),
    )
