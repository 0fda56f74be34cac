"""The radiology trainers: what they train loads where inference loads it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from apps.radiology import LABELS
from apps.radiology.deepedit import DeepEditTask
from apps.radiology.segmentation import SegmentationTask
from apps.radiology.training import DeepEditTrainer, SegmentationTrainer
from labelloop.errors import InvalidParamsError
from labelloop.imaging import read_volume
from labelloop.tasks import InferRequest, LocalTrainContext, TrainData, TrainResult
from tests.apps.radiology.training.conftest import CPU, FAST, SMALL, options


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


def test_deepedit_trains_and_its_weights_load_into_deepedit(data: TrainData, tmp_path: Path) -> None:
    """The app's own network (no ``SMALL``): the trained weights fit ``DeepEditTask`` as the app builds it."""
    small_data = TrainData(train=data.train[:1], val=[])
    config = options(DeepEditTrainer, {**FAST, "max_epochs": 1, "click_probability": 1.0})
    result = DeepEditTrainer(LABELS).train(LocalTrainContext(tmp_path), small_data, config, None)
    assert result.weights is not None and result.stats["epoch"] == 1
    task = DeepEditTask(LABELS)
    image = read_volume(data.val[0].image)
    request = InferRequest(params={"liver": [[10, 12, 8]]}, image=image, device=CPU)
    output = task.infer(task.load(result.weights, CPU), task.preprocess(image, CPU), request)
    assert output.label.shape == image.geometry.shape and output.label[10, 12, 8] == LABELS["liver"]


def test_an_empty_training_set_is_refused(data: TrainData, tmp_path: Path) -> None:
    nothing = TrainData(train=[], val=data.val)
    with pytest.raises(InvalidParamsError, match="training set is empty"):
        SegmentationTrainer(LABELS, SMALL).train(
            LocalTrainContext(tmp_path), nothing, options(SegmentationTrainer, FAST), None
        )
