"""The training task contract: a plain function of a context and a typed config.

A ``TrainTask[Config]`` trains one inference model (``model``) and declares its options as a
pydantic model (``config_model``, a ``TrainConfig``), which the server validates once when the job
is submitted and hands to ``train`` typed. The server runs it in a separate
worker process (or on a Ray cluster later) with a ``TrainContext`` that reports progress,
says when to stop, and keeps checkpoints, in the manner of Ray Train's context. The same
function runs locally on CPU in tests with ``LocalTrainContext``.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from labelloop.tasks.config import TrainConfig

__all__ = [
    "TrainSpec",
    "TrainItem",
    "TrainData",
    "TrainResult",
    "TrainContext",
    "TrainTask",
    "LocalTrainContext",
    "split_items",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainSpec:
    """What ``/info/`` lists under ``trainers``.

    Attributes:
        description: one line.
        config: user-tunable options shown by clients; a list means "one of these, first is default"
            (``options_view(config_model)``).
    """

    description: str
    config: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TrainItem:
    """One training case: an image and the exact label version it is trained on.

    Attributes:
        image: the image file (NIfTI or NRRD; arrays ``(I, J, K)``, RAS affine).
        label: the label file on the image's grid (integer label values).
    """

    image_id: str
    image: Path
    label: Path
    label_version: int
    label_sha256: str

    def record(self) -> dict[str, Any]:
        """The training-set record stored with the model version."""
        return {"image": self.image_id, "version": self.label_version, "sha256": self.label_sha256}


@dataclass(frozen=True)
class TrainData:
    """The training set of a run and its deterministic validation split."""

    train: list[TrainItem]
    val: list[TrainItem]

    @property
    def records(self) -> list[dict[str, Any]]:
        return [{**i.record(), "split": "train"} for i in self.train] + [
            {**i.record(), "split": "val"} for i in self.val
        ]


def split_items(items: list[TrainItem], val_split: float) -> TrainData:
    """Split deterministically by image id: the same images land in validation on every run.

    Each image's place comes from a hash of its id, so adding images never moves an existing
    one between the splits. With two or more images each split gets at least one.
    """
    import hashlib

    def rank(item: TrainItem) -> float:
        digest = hashlib.sha256(item.image_id.encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64

    ordered = sorted(items, key=rank)
    n_val = round(len(items) * val_split) if val_split > 0 else 0
    if len(items) >= 2 and val_split > 0:
        n_val = min(max(n_val, 1), len(items) - 1)
    val = sorted(ordered[:n_val], key=lambda i: i.image_id)
    train = sorted(ordered[n_val:], key=lambda i: i.image_id)
    return TrainData(train=train, val=val)


@dataclass
class TrainResult:
    """What a run produced.

    Attributes:
        weights: a state dict file for the inference model (``None`` if stopped before any).
        metrics: final validation metrics; ``val_mean_dice`` decides promotion.
        stats: MONAI Label-style ``train_stats`` (section 7 of the contract).
    """

    weights: Path | None
    metrics: dict[str, float]
    stats: dict[str, Any]


class TrainContext(Protocol):
    """What a training function may ask of whoever runs it."""

    @property
    def device(self) -> Any: ...

    @property
    def workdir(self) -> Path:
        """A private folder for checkpoints and scratch files of this run."""
        ...

    def report(self, stats: Mapping[str, Any]) -> None:
        """Publish progress (``epoch``, ``total_epochs``, ``current_iteration``, metrics...)."""
        ...

    def log(self, message: str) -> None:
        """A line for the job's log tail (``details`` in the task object)."""
        ...

    def should_stop(self) -> bool:
        """True once the run was asked to stop: save a checkpoint and return soon."""
        ...

    def resume_checkpoint(self) -> Path | None:
        """A checkpoint of an earlier run to continue from, if this run resumes one."""
        ...


ConfigT = TypeVar("ConfigT", bound=TrainConfig)


class TrainTask(ABC, Generic[ConfigT]):
    """Trains the inference model named ``model``. Pure ML code: no HTTP, no database.

    Attributes:
        model: the inference model whose weights it trains.
        spec: what ``/info/`` shows.
        config_model: the run's options; the server validates a request into it once, at submission.
    """

    model: str
    spec: TrainSpec
    config_model: type[ConfigT]

    @abstractmethod
    def train(
        self, ctx: TrainContext, data: TrainData, config: ConfigT, init_weights: Path | None
    ) -> TrainResult:
        """Train on ``data``, starting from ``init_weights`` (the active version) or from scratch."""


class LocalTrainContext:
    """A context for running a training function in-process (tests, benchmarks, notebooks)."""

    def __init__(self, workdir: Path, device: Any = "cpu", resume: Path | None = None) -> None:
        import torch

        self._workdir = workdir
        self._workdir.mkdir(parents=True, exist_ok=True)
        self._device = torch.device(device)
        self._resume = resume
        self.reports: list[dict[str, Any]] = []
        self.lines: list[str] = []
        self.stop_requested = False
        self.started = time.monotonic()

    @property
    def device(self) -> Any:
        return self._device

    @property
    def workdir(self) -> Path:
        return self._workdir

    def report(self, stats: Mapping[str, Any]) -> None:
        self.reports.append(dict(stats))

    def log(self, message: str) -> None:
        self.lines.append(message)
        logger.info("%s", message)

    def should_stop(self) -> bool:
        return self.stop_requested

    def resume_checkpoint(self) -> Path | None:
        return self._resume
