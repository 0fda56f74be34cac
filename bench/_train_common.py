"""What every side of ``bench/train.py`` shares: the options, the cohort, the app's code, log lines."""

from __future__ import annotations

import hashlib
import importlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from bench._util import APP_DIR
from labelloop.imaging import write_volume
from labelloop.sampledata.synthetic import case_id, generate_case
from labelloop.tasks import TrainData, TrainItem, load_app, split_items

MODEL = "segmentation"
TARGET = 1.1  # jobs-system epoch / direct epoch
#: The options of every run, both sides (``max_epochs`` is set per run).
CONFIG: dict[str, Any] = {
    "val_split": 0.2,
    "learning_rate": 1e-3,
    "train_batch_size": 2,
    "samples_per_image": 2,
    "early_stop_patience": -1,
    "pretrained": False,
    "device": "cpu",
    "seed": 0,
}
SERVER_ENV = {
    "LABELLOOP_JOBS__WORKERS": "1",
    "LABELLOOP_JOBS__POLL_INTERVAL_S": "0.1",
    "LABELLOOP_JOBS__AUTOTRAIN_AFTER": "0",
    "LABELLOOP_JOBS__PROMOTION": "manual",
    "LABELLOOP_JOBS__RESCORE": "false",
    "LABELLOOP_INFERENCE__WARMUP": "false",
    "LABELLOOP_INFERENCE__DEVICE": "cpu",
}
FAST_POLL_S = 0.05
SLOW_POLL_S = 0.5
JOB_TIMEOUT_S = 3 * 3600.0

_LOG_LINE = re.compile(
    r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3})\] \[(\d+)\] \[(\w+)\] \(([^)]*)\) - (.*)$"
)
_EPOCH_LINE = re.compile(r"^epoch (\d+)/(\d+) loss ([-\d.naif]+)(?: val dice ([\d.]+))? \(([\d.]+) s\)$")


def config_for(epochs: int) -> dict[str, Any]:
    """``CONFIG`` with ``max_epochs``."""
    return {**CONFIG, "max_epochs": epochs}


def val_split() -> float:
    return float(CONFIG["val_split"])


# ------------------------------------------------------------------ log lines


def log_time(stamp: str, millis: str) -> float:
    """A log line's local ``YYYY-mm-dd HH:MM:SS`` + ms as seconds since the epoch."""
    return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S").timestamp() + int(millis) / 1000


@dataclass(frozen=True)
class LogLine:
    ts: float
    logger: str
    message: str


def read_job_log(path: Path) -> list[LogLine]:
    lines = []
    for raw in path.read_text(errors="replace").splitlines():
        match = _LOG_LINE.match(raw)
        if match:
            lines.append(LogLine(log_time(match[1], match[2]), match[5], match[6]))
    return lines


def first_line(lines: Sequence[LogLine], pattern: str) -> LogLine:
    for line in lines:
        if re.search(pattern, line.message):
            return line
    raise RuntimeError(f"no log line matches {pattern!r}")


@dataclass(frozen=True)
class EpochLine:
    epoch: int
    loss: float
    val_dice: float | None
    seconds: float


def parse_epoch(message: str) -> EpochLine | None:
    match = _EPOCH_LINE.match(message)
    if not match:
        return None
    return EpochLine(int(match[1]), float(match[3]), float(match[4]) if match[4] else None, float(match[5]))


# ------------------------------------------------------------------ the cohort and the app


@dataclass(frozen=True)
class Cohort:
    items: list[TrainItem]  # local files, ids as uploaded
    data: TrainData  # split_items(items, val_split): the split the job makes


def _item(folder: Path, image_id: str) -> TrainItem:
    label_path = folder / f"{image_id}_label.nii.gz"
    sha = hashlib.sha256(label_path.read_bytes()).hexdigest()
    return TrainItem(image_id, folder / f"{image_id}.nii.gz", label_path, 1, sha)


def write_cohort(folder: Path, n: int, seed: int) -> Cohort:
    folder.mkdir(parents=True, exist_ok=True)
    items = []
    for i in range(n):
        image_id = case_id(i)
        image, label, affine = generate_case(np.random.default_rng([seed, i]))
        write_volume(folder / f"{image_id}.nii.gz", image, affine)
        write_volume(folder / f"{image_id}_label.nii.gz", label, affine)
        items.append(_item(folder, image_id))
    return Cohort(items, split_items(items, val_split()))


def read_cohort(folder: Path) -> Cohort:
    """The cohort ``write_cohort`` wrote into ``folder`` (for the fresh-process direct run)."""
    items = [
        _item(folder, label_path.name.removesuffix("_label.nii.gz"))
        for label_path in sorted(folder.glob("*_label.nii.gz"))
    ]
    return Cohort(items, split_items(items, val_split()))


@dataclass
class AppCode:
    trainer: Any  # SegmentationTrainer
    infer_task: Any  # SegmentationTask
    labels: dict[str, int]


def app_code() -> AppCode:
    """The app as the server (and a job process) loads it."""
    app = load_app(APP_DIR)
    return AppCode(app.train_tasks[MODEL], app.infer_tasks[MODEL], dict(app.labels))


def save_active_weights(code: AppCode, path: Path) -> None:
    """The app's segmentation UNet, random weights (seed 0): the 'active version' a retrain replaces."""
    import torch

    networks = importlib.import_module(f"labelloop_app_{APP_DIR.name}.networks")
    torch.manual_seed(0)
    torch.save(networks.unet(1, len(code.labels)).state_dict(), str(path))
