"""Training of the radiology app's networks.

``trainers`` holds the app's ``TrainTask``s and ``config`` their options; ``loop`` trains one rank
(``run_rank``) on the cases ``data`` prepares and keeps its ``progress``; ``ddp`` runs the loop on
several ranks; ``job`` holds what they share. The arrows point one way:
trainers -> ddp -> loop -> data | progress -> job -> config.
"""

from .config import DeepEditTrainConfig, RadiologyTrainConfig
from .data import LoadCased, cached_count, datasets, shard
from .ddp import DdpResult, ddp_worker, train_ddp
from .job import Dist, TrainJob
from .loop import CHECKPOINT, WEIGHTS, RankOutcome, run_rank, state_digest
from .trainers import DeepEditTrainer, SegmentationTrainer

__all__ = [
    "CHECKPOINT",
    "WEIGHTS",
    "DdpResult",
    "DeepEditTrainConfig",
    "DeepEditTrainer",
    "Dist",
    "LoadCased",
    "RadiologyTrainConfig",
    "RankOutcome",
    "SegmentationTrainer",
    "TrainJob",
    "cached_count",
    "datasets",
    "ddp_worker",
    "run_rank",
    "shard",
    "state_digest",
    "train_ddp",
]
