"""The radiology trainers, run in-process on the CPU on tiny synthetic cases.

Cases are 32 x 32 x 16 voxels of 6 x 6 x 8 mm (64 x 64 x 32 once normalised to 3 x 3 x 4 mm),
and most runs use a narrow UNet with 32 x 32 x 16 patches, so that a run takes seconds; the
DeepEdit run uses the app's own network, to show its weights load where inference loads them.
"""

from __future__ import annotations

import importlib
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from apps.radiology import LABELS
from apps.radiology.clicks import ClickConfig, GuidanceInputs, error_clicks, sample_clicks
from apps.radiology.config import NetworkConfig
from apps.radiology.deepedit import DeepEditTask
from apps.radiology.segmentation import SegmentationTask
from apps.radiology.trainer import CHECKPOINT, state_digest
from apps.radiology.trainers import DeepEditTrainer, SegmentationTrainer

from labelloop.errors import InvalidParamsError
from labelloop.imaging import read_volume, write_volume
from labelloop.sampledata.synthetic import generate_case
from labelloop.tasks import (
    InferRequest,
    LocalTrainContext,
    TrainData,
    TrainItem,
    TrainResult,
    load_app,
    split_items,
)
from tests.support.servers import APP_DIR

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
CPU = torch.device("cpu")


def _cases(root: Path, count: int) -> list[TrainItem]:
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


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> TrainData:
    """Three training cases and two validation cases."""
    split = split_items(_cases(tmp_path_factory.mktemp("cases"), 5), 0.4)
    assert (len(split.train), len(split.val)) == (3, 2)
    return split


@pytest.fixture(scope="module")
def trained(
    data: TrainData, tmp_path_factory: pytest.TempPathFactory
) -> tuple[LocalTrainContext, TrainResult]:
    """A 2-epoch segmentation run (3 iterations an epoch), from scratch."""
    ctx = LocalTrainContext(tmp_path_factory.mktemp("run"))
    return ctx, SegmentationTrainer(LABELS, SMALL).train(ctx, data, FAST, None)


class StopAfter(LocalTrainContext):
    """Asks to stop once ``when(stats)`` holds for a report."""

    def __init__(self, workdir: Path, when: Any, resume: Path | None = None) -> None:
        super().__init__(workdir, resume=resume)
        self.when = when

    def report(self, stats: Any) -> None:
        super().report(stats)
        self.stop_requested = self.stop_requested or bool(self.when(stats))


def _state(path: Path) -> dict[str, torch.Tensor]:
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    assert isinstance(state, dict) and all(isinstance(v, torch.Tensor) for v in state.values())
    return state


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------- segmentation


def test_trained_weights_run_through_segmentation_inference(
    trained: tuple[LocalTrainContext, TrainResult], data: TrainData
) -> None:
    _, result = trained
    assert result.weights is not None and result.weights.parent == trained[0].workdir
    task = SegmentationTask(LABELS, SMALL)
    model = task.load(result.weights, CPU)
    image = read_volume(data.val[0].image)
    output = task.infer(model, task.preprocess(image, CPU), InferRequest(params={}, image=image, device=CPU))
    assert output.label.shape == image.geometry.shape == (32, 32, 16)
    assert set(np.unique(output.label).tolist()) <= set(LABELS.values())
    assert 0.0 <= result.metrics["val_mean_dice"] <= 1.0


def test_stats_have_the_train_stats_shape(trained: tuple[LocalTrainContext, TrainResult]) -> None:
    ctx, result = trained
    final = ctx.reports[-1]
    assert SECTION_7_KEYS <= set(final) and re.fullmatch(r"\d+:\d\d:\d\d", final["total_time"])
    assert "current_time" not in final and result.stats == final
    counts = [final[k] for k in ("epoch", "total_epochs", "total_iterations", "current_iteration")]
    assert counts == [2, 2, 3, 6]
    assert set(final["train"]["metrics"]) == {"train_loss", "train_mean_dice"}
    evaluation = final["eval"]
    assert evaluation["metrics"]["val_mean_dice"] == ctx.reports[-2]["eval"]["metrics"]["val_mean_dice"]
    assert final["best_metric"] == evaluation["best_metric"] == result.metrics["val_mean_dice"]
    assert evaluation["best_metric_epoch"] in (1, 2) and evaluation["key_metric_name"] == "val_mean_dice"
    running = [r for r in ctx.reports if "current_time" in r]
    assert [r["current_iteration"] for r in running[:3]] == [1, 2, 3] and running[0]["epoch"] == 1
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
    tuned = trainer.train(LocalTrainContext(tmp_path / "tuned"), one, frozen, init)
    fresh = trainer.train(LocalTrainContext(tmp_path / "fresh"), one, {**frozen, "pretrained": False}, init)
    assert tuned.weights is not None and fresh.weights is not None
    assert _same(_state(tuned.weights), _state(init))
    assert not _same(_state(fresh.weights), _state(init))


@pytest.mark.parametrize("after", [1, 3], ids=["mid-epoch", "before-validation"])
def test_stop_request_ends_the_run_within_one_iteration(data: TrainData, tmp_path: Path, after: int) -> None:
    """Asked to stop after ``after`` steps (3 is the whole first epoch: the stop lands in validation)."""
    ctx = StopAfter(tmp_path, lambda stats: stats["current_iteration"] >= after)
    result = SegmentationTrainer(LABELS, SMALL).train(ctx, data, {**FAST, "max_epochs": 3}, None)
    assert max(r["current_iteration"] for r in ctx.reports) == after
    assert ctx.lines == [f"stopped at iteration {after}; checkpoint saved"]
    assert result.weights is not None and "current_time" in result.stats
    SegmentationTask(LABELS, SMALL).load(result.weights, CPU)
    checkpoint = torch.load(str(tmp_path / CHECKPOINT), map_location="cpu", weights_only=True)
    assert checkpoint["progress"]["epoch"] == 0 and checkpoint["progress"]["iteration"] == after


def test_resumed_run_continues_at_the_next_epoch(
    trained: tuple[LocalTrainContext, TrainResult], data: TrainData, tmp_path: Path
) -> None:
    ctx = LocalTrainContext(tmp_path, resume=trained[0].workdir / CHECKPOINT)
    result = SegmentationTrainer(LABELS, SMALL).train(ctx, data, {**FAST, "max_epochs": 3}, None)
    assert ctx.lines[0].startswith("resuming after epoch 2")
    assert (ctx.reports[0]["epoch"], ctx.reports[0]["current_iteration"]) == (3, 7)
    assert [line.split(" loss")[0] for line in ctx.lines[1:]] == ["epoch 3/3"]
    assert result.stats["epoch"] == 3 and result.weights is not None and result.weights.is_file()
    best = torch.load(str(tmp_path / CHECKPOINT), map_location="cpu", weights_only=True)["best_network"]
    assert _same(_state(result.weights), best)


def test_early_stopping_when_validation_does_not_improve(data: TrainData, tmp_path: Path) -> None:
    ctx = LocalTrainContext(tmp_path)
    config = {**FAST, "max_epochs": 6, "learning_rate": 0.0, "early_stop_patience": 1}
    two = TrainData(train=data.train[:1], val=data.val[:1])
    result = SegmentationTrainer(LABELS, SMALL).train(ctx, two, config, None)
    assert result.stats["epoch"] == 2 and "total_time" in result.stats
    assert ctx.lines[-1].startswith("early stopping: no improvement for 1 epochs")
    assert result.stats["eval"]["best_metric_epoch"] == 1


def test_run_without_validation_reports_the_training_loss(data: TrainData, tmp_path: Path) -> None:
    only_train = TrainData(train=data.train[:2], val=[])
    result = SegmentationTrainer(LABELS, SMALL).train(
        LocalTrainContext(tmp_path), only_train, {**FAST, "max_epochs": 1}, None
    )
    assert "val_mean_dice" not in result.metrics and "eval" not in result.stats
    assert math.isfinite(result.metrics["train_loss"]) and result.stats["train"]["metrics"]["train_loss"] > 0


# ---------------------------------------------------------------- options


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("max_epochs", 0),
        ("max_epochs", 2.5),
        ("max_epochs", "ten"),
        ("max_epochs", True),
        ("val_split", 1.0),
        ("val_split", -0.1),
        ("learning_rate", -1e-4),
        ("learning_rate", float("nan")),
        ("early_stop_patience", 0),
        ("early_stop_patience", -2),
        ("train_batch_size", 0),
        ("samples_per_image", None),
        ("pretrained", "yes"),
        ("pretrained", 1),
        ("cache_bytes", -1),
        ("device", "NVIDIA A100"),
        ("max_epoch", 10),
    ],
)
def test_invalid_options_are_refused(key: str, value: Any) -> None:
    with pytest.raises(InvalidParamsError, match=re.escape(f"'{key}'")):
        SegmentationTrainer(LABELS).validate_config({key: value})


@pytest.mark.parametrize(
    ("key", "value"), [("click_probability", 1.5), ("max_clicks", 0), ("error_clicks", "no")]
)
def test_invalid_click_options_are_refused(key: str, value: Any) -> None:
    with pytest.raises(InvalidParamsError, match=f"'{key}'"):
        DeepEditTrainer(LABELS).validate_config({key: value})


def test_options_are_typed_and_defaults_filled() -> None:
    trainer = DeepEditTrainer(LABELS)
    chosen = trainer.validate_config(
        {"max_epochs": "10", "pretrained": "false", "device": "cuda:1", "client_id": "x", "val_batch_size": 1}
    )
    assert chosen["max_epochs"] == 10 and chosen["pretrained"] is False and chosen["device"] == "cuda:1"
    assert set(chosen) == {*trainer.spec.config, "seed"} and chosen["click_probability"] == 0.5
    assert SegmentationTrainer(LABELS).config({}).clicks is None
    assert trainer.spec.config["device"] == ["auto", "cpu", "cuda"]


# ---------------------------------------------------------------- DeepEdit and clicks


def test_deepedit_trains_and_its_weights_load_into_deepedit(data: TrainData, tmp_path: Path) -> None:
    """The app's own network (no ``SMALL``): the trained weights fit ``DeepEditTask`` as the app builds it."""
    small_data = TrainData(train=data.train[:1], val=[])
    config = {**FAST, "max_epochs": 1, "click_probability": 1.0}
    result = DeepEditTrainer(LABELS).train(LocalTrainContext(tmp_path), small_data, config, None)
    assert result.weights is not None and result.stats["epoch"] == 1
    task = DeepEditTask(LABELS)
    image = read_volume(data.val[0].image)
    request = InferRequest(params={"liver": [[10, 12, 8]]}, image=image, device=CPU)
    output = task.infer(task.load(result.weights, CPU), task.preprocess(image, CPU), request)
    assert output.label.shape == image.geometry.shape and output.label[10, 12, 8] == LABELS["liver"]


def _full_label(data: TrainData) -> np.ndarray:
    """The label map of a case where every label is present."""
    for item in [*data.train, *data.val]:
        label = np.asarray(read_volume(item.label).array)
        if all((label == value).any() for value in LABELS.values()):
            return label
    raise AssertionError("no case holds every label")


def test_simulated_clicks_fall_inside_each_present_label(data: TrainData) -> None:
    label = _full_label(data)
    present = set(LABELS)
    rng = np.random.default_rng(0)
    for _ in range(5):
        clicks = sample_clicks(label, LABELS, rng, max_clicks=3)
        for name, value in LABELS.items():
            assert 1 <= len(clicks[name]) <= 3
            assert (label[tuple(clicks[name].T)] == value).all(), name
    missing = error_clicks(np.zeros_like(label), label, LABELS, rng)
    assert len(missing["background"]) == 0
    for name in present - {"background"}:
        assert len(missing[name]) == 1 and label[tuple(missing[name][0])] == LABELS[name]
    prediction = label.copy()
    prediction[:4, :4, :4] = LABELS["spleen"]  # a false positive in the corner
    wrong = error_clicks(prediction, label, LABELS, rng)
    assert [n for n, p in wrong.items() if len(p)] == ["background"]
    assert (wrong["background"][0] < 4).all()


def test_guidance_marks_the_clicked_labels(data: TrainData) -> None:
    label = torch.from_numpy(_full_label(data).astype(np.int64))[None, None]
    inputs = GuidanceInputs(
        LABELS, ClickConfig(click_probability=1.0, error_clicks=False), np.random.default_rng(1)
    )
    out = inputs.for_training(torch.zeros(1, 1, *label.shape[2:]), label, network=None)
    assert out.shape == (1, 1 + len(LABELS), 32, 32, 16) and out.dtype == torch.float32
    for value in LABELS.values():
        channel = out[0, 1 + value]
        assert channel.max() == 1.0 and label[0, 0][channel == 1.0].eq(value).all()
    assert inputs.for_validation(torch.zeros(2, 1, 8, 8, 8))[:, 1:].abs().sum() == 0


# ---------------------------------------------------------------- data-parallel


def test_ddp_ranks_end_with_identical_weights(data: TrainData, tmp_path: Path) -> None:
    """Two gloo ranks on the CPU, the app imported from its folder as the server imports it."""
    load_app(APP_DIR)
    trainers = importlib.import_module(f"labelloop_app_{APP_DIR.name}.trainers")
    config = importlib.import_module(f"labelloop_app_{APP_DIR.name}.config")
    small = config.NetworkConfig(**SMALL_NETWORK)
    ctx = LocalTrainContext(tmp_path)
    job = trainers.SegmentationTrainer(LABELS, small).job(ctx, data, {**FAST, "max_epochs": 1}, None)
    outcome = trainers.train_ddp(ctx, job, world_size=2, backend="gloo")
    assert len(outcome.digests) == 2 and outcome.digests[0] == outcome.digests[1]
    assert state_digest(_state(outcome.result.weights)) == outcome.digests[0]  # trained: the best is the last
    assert ctx.lines[-1].startswith("epoch 1/1") and ctx.reports[-1]["total_iterations"] == 2
    torch.manual_seed(0)
    untrained = importlib.import_module(f"labelloop_app_{APP_DIR.name}.networks").unet(1, len(LABELS), small)
    assert state_digest(untrained.state_dict()) != outcome.digests[0]
