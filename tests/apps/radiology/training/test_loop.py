"""The training loop (``run_rank``) through the segmentation trainer, in-process on the CPU."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch

from apps.radiology import LABELS
from apps.radiology.segmentation import SegmentationTask
from apps.radiology.training import CHECKPOINT, SegmentationTrainer
from labelloop.tasks import LocalTrainContext, TrainData, TrainResult
from tests.apps.radiology.training.conftest import CPU, FAST, SMALL, StopAfter, options, same, state

SECTION_7_KEYS = {
    "rank",
    "current_epoch",
    "current_iteration",
    "total_epochs",
    "total_iterations",
    "epoch",
    "start_ts",
    "best_metric",
    "train",
    "eval",
}


def test_stats_have_the_train_stats_shape(trained: tuple[LocalTrainContext, TrainResult]) -> None:
    ctx, result = trained
    final = ctx.reports[-1]
    assert SECTION_7_KEYS <= set(final) and re.fullmatch(r"\d+:\d\d:\d\d", final["total_time"])
    assert "current_time" not in final and result.stats == final
    counts = [final[k] for k in ("epoch", "total_epochs", "total_iterations", "current_iteration")]
    assert counts == [2, 2, 3, 3], "current_iteration counts within the epoch: never past total_iterations"
    assert (final["iteration"], final["iterations_total"], final["percent"]) == (6, 6, 100.0)
    assert final["time_left_s"] == 0.0
    assert set(final["train"]["metrics"]) == {"train_loss", "train_mean_dice"}
    evaluation = final["eval"]
    assert evaluation["metrics"]["val_mean_dice"] == ctx.reports[-2]["eval"]["metrics"]["val_mean_dice"]
    assert final["best_metric"] == evaluation["best_metric"] == result.metrics["val_mean_dice"]
    assert evaluation["best_metric_epoch"] in (1, 2) and evaluation["key_metric_name"] == "val_mean_dice"
    running = [r for r in ctx.reports if "current_time" in r]
    assert [r["current_iteration"] for r in running[:3]] == [1, 2, 3] and running[0]["epoch"] == 1
    # running[3] is the end of epoch 1 (after validation); then the second epoch counts from 1 again
    assert [r["current_iteration"] for r in running[3:7]] == [3, 1, 2, 3]
    assert all(r["current_iteration"] <= r["total_iterations"] for r in ctx.reports)
    assert [r["percent"] for r in running[:3]] == [16.7, 33.3, 50.0]
    assert running[0]["time_left_s"] > 0
    assert ctx.lines[0].startswith("epoch 1/2 loss ") and " val dice " in ctx.lines[0]
    assert (ctx.workdir / CHECKPOINT).is_file()


def test_fine_tuning_starts_from_the_given_weights(
    trained: tuple[LocalTrainContext, TrainResult], data: TrainData, tmp_path: Path
) -> None:
    """With a learning rate of 0 the weights cannot move: what comes out is what the run started from."""
    init = trained[1].weights
    assert init is not None
    frozen = {**FAST, "max_epochs": 1, "learning_rate": 0.0}
    trainer = SegmentationTrainer(LABELS, SMALL)
    one = TrainData(train=data.train[:1], val=[])
    tuned_config = options(SegmentationTrainer, frozen)
    fresh_config = options(SegmentationTrainer, {**frozen, "pretrained": False})
    tuned = trainer.train(LocalTrainContext(tmp_path / "tuned"), one, tuned_config, init)
    fresh = trainer.train(LocalTrainContext(tmp_path / "fresh"), one, fresh_config, init)
    assert tuned.weights is not None and fresh.weights is not None
    assert same(state(tuned.weights), state(init))
    assert not same(state(fresh.weights), state(init))


@pytest.mark.parametrize("after", [1, 3], ids=["mid-epoch", "before-validation"])
def test_stop_request_ends_the_run_within_one_iteration(data: TrainData, tmp_path: Path, after: int) -> None:
    """Asked to stop after ``after`` steps (3 is the whole first epoch: the stop lands in validation)."""
    ctx = StopAfter(tmp_path, lambda stats: stats["iteration"] >= after)
    config = options(SegmentationTrainer, {**FAST, "max_epochs": 3})
    result = SegmentationTrainer(LABELS, SMALL).train(ctx, data, config, None)
    assert max(r["iteration"] for r in ctx.reports) == after
    assert ctx.lines == [f"stopped at iteration {after}; checkpoint saved"]
    assert result.weights is not None and "current_time" in result.stats
    SegmentationTask(LABELS, SMALL).load(result.weights, CPU)
    checkpoint = torch.load(str(tmp_path / CHECKPOINT), map_location="cpu", weights_only=True)
    assert checkpoint["progress"]["epoch"] == 0 and checkpoint["progress"]["iteration"] == after


def test_resumed_run_continues_at_the_next_epoch(
    trained: tuple[LocalTrainContext, TrainResult], data: TrainData, tmp_path: Path
) -> None:
    ctx = LocalTrainContext(tmp_path, resume=trained[0].workdir / CHECKPOINT)
    config = options(SegmentationTrainer, {**FAST, "max_epochs": 3})
    result = SegmentationTrainer(LABELS, SMALL).train(ctx, data, config, None)
    assert ctx.lines[0].startswith("resuming after epoch 2")
    first = ctx.reports[0]
    assert (first["epoch"], first["current_iteration"], first["iteration"]) == (3, 1, 7)
    assert first["iterations_total"] == 9 and first["percent"] == 77.8
    assert [line.split(" loss")[0] for line in ctx.lines[1:]] == ["epoch 3/3"]
    assert result.stats["epoch"] == 3 and result.weights is not None and result.weights.is_file()
    best = torch.load(str(tmp_path / CHECKPOINT), map_location="cpu", weights_only=True)["best_network"]
    assert same(state(result.weights), best)


def test_early_stopping_when_validation_does_not_improve(data: TrainData, tmp_path: Path) -> None:
    ctx = LocalTrainContext(tmp_path)
    config = {**FAST, "max_epochs": 6, "learning_rate": 0.0, "early_stop_patience": 1}
    two = TrainData(train=data.train[:1], val=data.val[:1])
    result = SegmentationTrainer(LABELS, SMALL).train(ctx, two, options(SegmentationTrainer, config), None)
    assert result.stats["epoch"] == 2 and "total_time" in result.stats
    assert ctx.lines[-1].startswith("early stopping: no improvement for 1 epochs")
    assert result.stats["eval"]["best_metric_epoch"] == 1


def test_run_without_validation_reports_the_training_loss(data: TrainData, tmp_path: Path) -> None:
    only_train = TrainData(train=data.train[:2], val=[])
    result = SegmentationTrainer(LABELS, SMALL).train(
        LocalTrainContext(tmp_path), only_train, options(SegmentationTrainer, {**FAST, "max_epochs": 1}), None
    )
    assert "val_mean_dice" not in result.metrics and "eval" not in result.stats
    assert math.isfinite(result.metrics["train_loss"]) and result.stats["train"]["metrics"]["train_loss"] > 0
