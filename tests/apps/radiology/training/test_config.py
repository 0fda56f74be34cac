"""The radiology trainers' options: validated once, typed, and shown in ``/info/`` as before."""

from __future__ import annotations

import re
from typing import Any

import pytest

from apps.radiology.clicks import ClickConfig
from apps.radiology.training import DeepEditTrainConfig, DeepEditTrainer, SegmentationTrainer
from labelloop.errors import InvalidParamsError
from labelloop.tasks import validate_options
from tests.apps.radiology.training.conftest import options

#: What ``/info/`` has shown for every trainer; a list means "one of these, the first is the default".
SHARED_OPTIONS: dict[str, Any] = {
    "max_epochs": 50,
    "val_split": 0.2,
    "learning_rate": 1e-3,
    "early_stop_patience": 10,
    "train_batch_size": 2,
    "samples_per_image": 2,
    "pretrained": True,
    "cache_bytes": 2 * 1024**3,
    "device": ["auto", "cpu", "cuda"],
}
CLICK_OPTIONS: dict[str, Any] = {"click_probability": 0.5, "max_clicks": 3, "error_clicks": True}


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("max_epochs", 0),
        ("max_epochs", 2.5),
        ("max_epochs", "ten"),
        ("max_epochs", True),
        ("max_epochs", 1e20),
        ("max_epochs", 100_001),
        ("early_stop_patience", 10**9),
        ("train_batch_size", 10**6),
        ("samples_per_image", 5000),
        ("cache_bytes", 2**50),
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
        validate_options(SegmentationTrainer.config_model, {key: value})


@pytest.mark.parametrize(
    ("key", "value"), [("click_probability", 1.5), ("max_clicks", 0), ("error_clicks", "no")]
)
def test_invalid_click_options_are_refused(key: str, value: Any) -> None:
    with pytest.raises(InvalidParamsError, match=f"'{key}'"):
        validate_options(DeepEditTrainer.config_model, {key: value})


def test_options_are_typed_and_defaults_filled() -> None:
    request = {"max_epochs": "10", "pretrained": "false", "device": "cuda:1", "client_id": "x"}
    chosen = options(DeepEditTrainer, {**request, "val_batch_size": 1})
    assert chosen.max_epochs == 10 and chosen.pretrained is False and chosen.device == "cuda:1"
    stored = chosen.model_dump(mode="json")
    assert set(stored) == {*DeepEditTrainer.spec.config, "seed"} and chosen.click_probability == 0.5
    assert DeepEditTrainer.config_model.model_validate(stored) == chosen  # what the worker rebuilds
    assert chosen.clicks == ClickConfig()
    assert options(SegmentationTrainer, {}).clicks is None
    assert DeepEditTrainer.spec.config["device"] == ["auto", "cpu", "cuda"]


def test_info_shows_the_options_and_their_defaults() -> None:
    assert SegmentationTrainer.spec.config == SHARED_OPTIONS
    assert DeepEditTrainer.spec.config == {**SHARED_OPTIONS, **CLICK_OPTIONS}
    # Clients list the options in this order, as before the options were typed.
    assert list(SegmentationTrainer.spec.config) == list(SHARED_OPTIONS)
    assert list(DeepEditTrainer.spec.config) == [*SHARED_OPTIONS, *CLICK_OPTIONS]


def test_patience_minus_one_never_stops_early() -> None:
    assert options(SegmentationTrainer, {"early_stop_patience": -1}).early_stop_patience == -1
    assert options(SegmentationTrainer, {"early_stop_patience": "1"}).early_stop_patience == 1


def test_click_options_become_the_click_config() -> None:
    chosen = options(DeepEditTrainer, {"click_probability": 1, "max_clicks": 100, "error_clicks": "false"})
    assert isinstance(chosen, DeepEditTrainConfig)
    assert chosen.clicks == ClickConfig(click_probability=1.0, max_clicks=100, error_clicks=False)
