"""The direct runs of ``bench/train.py``: ``trainer.train`` in this process or in a fresh one, and Dice."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench._train_common import AppCode, Cohort, app_code, config_for, parse_epoch, read_cohort
from bench._util import CpuSampler, environ_without_settings, load1, run_json_child
from labelloop.tasks import LocalTrainContext, validate_options

#: The entry point: the fresh-process run starts it again with ``--child-direct``.
ENTRY = Path(__file__).resolve().with_name("train.py")


class TimedContext(LocalTrainContext):
    """``LocalTrainContext`` that timestamps (``time.time``) every report and log line."""

    def __init__(self, workdir: Path, device: Any = "cpu", echo: bool = False) -> None:
        super().__init__(workdir, device)
        self.report_times: list[float] = []
        self.line_times: list[float] = []
        self.line_loads: list[float] = []
        self.echo = echo
        self.t0 = time.time()

    def report(self, stats: Mapping[str, Any]) -> None:
        self.report_times.append(time.time())
        super().report(stats)

    def log(self, message: str) -> None:
        self.line_times.append(time.time())
        self.line_loads.append(load1())
        super().log(message)
        if self.echo:
            print(f"   [{time.time() - self.t0:7.1f} s] {message}", flush=True)


# ------------------------------------------------------------------ one epoch, direct


@dataclass
class DirectRun:
    total_s: float  # train() call -> return
    setup_s: float  # train() call -> epoch start (network, CacheDataset)
    first_iter_s: float  # train() call -> first report (iteration 1 done)
    epoch_s: float  # the trainer's "(X s)"
    to_epoch_end_s: float  # train() call -> epoch log line
    loss: float
    val_dice: float | None
    load: tuple[float, float]
    epoch_cpu: float | None = None  # CPU seconds of this process during the epoch
    total_cpu: float | None = None  # during the whole train() call
    threads: int = 0  # torch.get_num_threads() of the process


def run_direct(code: AppCode, cohort: Cohort, workdir: Path) -> DirectRun:
    import torch

    config = validate_options(code.trainer.config_model, config_for(1))
    ctx = TimedContext(workdir)
    before = load1()
    with CpuSampler({"bench": os.getpid()}) as cpu:
        start = time.time()
        code.trainer.train(ctx, cohort.data, config, None)
        end = time.time()
    epochs = [(t, e) for t, m in zip(ctx.line_times, ctx.lines, strict=True) if (e := parse_epoch(m))]
    if len(epochs) != 1:
        raise RuntimeError(f"expected one epoch line, got {ctx.lines}")
    t_line, epoch = epochs[0]
    return DirectRun(
        total_s=end - start,
        setup_s=t_line - epoch.seconds - start,
        first_iter_s=ctx.report_times[0] - start,
        epoch_s=epoch.seconds,
        to_epoch_end_s=t_line - start,
        loss=epoch.loss,
        val_dice=epoch.val_dice,
        load=(before, load1()),
        epoch_cpu=cpu.between("bench", t_line - epoch.seconds, t_line),
        total_cpu=cpu.between("bench", start, end),
        threads=torch.get_num_threads(),
    )


def run_direct_fresh(cohort_dir: Path, workdir: Path, env: dict[str, str]) -> DirectRun:
    """``run_direct`` in a fresh interpreter (the entry point with ``--child-direct``): the first
    training of a process, as in a job process, without the jobs system around it."""
    body = run_json_child(
        [sys.executable, str(ENTRY), "--child-direct", str(cohort_dir), str(workdir)],
        environ_without_settings(env),
        timeout_s=3600,
        what="the fresh-process direct run",
    )
    body["load"] = tuple(body["load"])
    return DirectRun(**body)


def child_direct(cohort_dir: Path, workdir: Path) -> int:
    """``--child-direct``: one direct 1-epoch run; its ``DirectRun`` as JSON on the last stdout line."""
    run = run_direct(app_code(), read_cohort(cohort_dir), workdir)
    print(json.dumps(asdict(run)))
    return 0


# ------------------------------------------------------------------ Dice over epochs, direct


@dataclass
class DiceEpoch:
    epoch: int
    loss: float
    train_dice: float | None
    val_dice: float | None
    seconds: float
    elapsed: float  # since the train() call, at the epoch's log line
    load: float


@dataclass
class DiceRun:
    epochs: list[DiceEpoch]
    total_s: float
    setup_s: float
    best: float | None
    best_epoch: int | None


def _train_dice(ctx: TimedContext) -> dict[int, float | None]:
    """Training Dice per epoch: the last report of an epoch is its end-of-epoch report."""
    train_dice: dict[int, float | None] = {}
    for stats in ctx.reports:
        train_dice[int(stats["current_epoch"])] = (
            stats.get("train", {}).get("metrics", {}).get("train_mean_dice")
        )
    return train_dice


def _dice_epochs(ctx: TimedContext, start: float) -> list[DiceEpoch]:
    train_dice = _train_dice(ctx)
    rows = []
    for t, message, load in zip(ctx.line_times, ctx.lines, ctx.line_loads, strict=True):
        e = parse_epoch(message)
        if e is not None:
            rows.append(
                DiceEpoch(e.epoch, e.loss, train_dice.get(e.epoch), e.val_dice, e.seconds, t - start, load)
            )
    if not rows:
        raise RuntimeError(f"no epoch finished: {ctx.lines}")
    return rows


def run_dice(code: AppCode, cohort: Cohort, epochs: int, workdir: Path) -> DiceRun:
    config = validate_options(code.trainer.config_model, config_for(epochs))
    ctx = TimedContext(workdir, echo=True)
    start = time.time()
    result = code.trainer.train(ctx, cohort.data, config, None)
    total = time.time() - start
    rows = _dice_epochs(ctx, start)
    best = result.metrics.get("val_mean_dice")
    best_epoch = result.metrics.get("best_epoch")
    return DiceRun(
        epochs=rows,
        total_s=total,
        setup_s=rows[0].elapsed - rows[0].seconds,
        best=best,
        best_epoch=int(best_epoch) if best_epoch else None,
    )
