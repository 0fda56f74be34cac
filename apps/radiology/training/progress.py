"""A run's progress: counters and bests, rendered as MONAI Label's ``train_stats`` (section 7)."""

from __future__ import annotations

import datetime
import math
import time
from dataclasses import dataclass
from typing import Any

from .job import TrainJob

__all__ = ["Progress"]


@dataclass
class Progress:
    """Counters and bests of a run; ``stats`` renders MONAI Label's ``train_stats`` (section 7)."""

    epoch: int = 0
    iteration: int = 0  # steps of the whole run (a resumed run carries on from its checkpoint)
    epoch_iteration: int = 0  # steps of the current epoch
    run_start_iteration: int = 0  # ``iteration`` when this process's run began (the pace of time left)
    key: float = -math.inf  # what model selection maximises: val Dice, else minus the train loss
    best_epoch: int = 0
    stale: int = 0  # epochs since the last improvement
    val_dice: float | None = None
    best_val: float | None = None
    train_loss: float | None = None
    train_dice: float | None = None
    best_train: float = 0.0
    best_train_epoch: int = 0

    def stats(self, job: TrainJob, iterations: int, *, final: bool = False) -> dict[str, Any]:
        """MONAI Label's fields, except that ``current_iteration`` counts the steps of the current
        epoch, so it never passes ``total_iterations`` (steps per epoch); the run's own count is
        ``iteration`` of ``iterations_total``, with ``percent`` done and ``time_left_s`` (s, by the
        pace so far; ``None`` before the first step)."""
        train = {
            k: v
            for k, v in (("train_loss", self.train_loss), ("train_mean_dice", self.train_dice))
            if v is not None
        }
        best = (self.best_val or 0.0) if job.val else self.best_train
        elapsed = max(time.time() - job.start_ts, 0.0)
        total = job.config.max_epochs * iterations
        done = min((self.epoch - 1) * iterations + self.epoch_iteration, total) if self.epoch else 0
        steps = self.iteration - self.run_start_iteration  # this process's steps, in ``elapsed``
        left = elapsed / steps * (total - done) if steps > 0 else None
        stats: dict[str, Any] = {
            "rank": 0,
            "current_epoch": self.epoch,
            "current_iteration": self.epoch_iteration,
            "total_epochs": job.config.max_epochs,
            "total_iterations": iterations,
            "iteration": self.iteration,
            "iterations_total": total,
            "percent": round(100.0 * done / total, 1) if total else 0.0,
            "time_left_s": 0.0 if final else (round(left, 1) if left is not None else None),
            "epoch": self.epoch,
            "start_ts": int(job.start_ts),
            ("total_time" if final else "current_time"): str(
                datetime.timedelta(seconds=int(time.time() - job.start_ts))
            ),
            "best_metric": best,
            "train": {
                "metrics": train,
                "key_metric_name": "train_mean_dice",
                "best_metric": self.best_train,
                "best_metric_epoch": self.best_train_epoch,
            },
        }
        if job.val:
            val = {} if self.val_dice is None else {"val_mean_dice": self.val_dice}
            stats["eval"] = {
                "metrics": val,
                "key_metric_name": "val_mean_dice",
                "best_metric": best,
                "best_metric_epoch": self.best_epoch,
            }
        return stats

    def metrics(self) -> dict[str, float]:
        """The result: the best validation Dice (and its epoch), the last epoch's training figures."""
        found = (
            ("train_loss", self.train_loss),
            ("train_mean_dice", self.train_dice),
            ("val_mean_dice", self.best_val),
        )
        out = {k: v for k, v in found if v is not None}
        return {**out, "best_epoch": float(self.best_epoch)} if self.best_epoch else out
