"""Simulated clicks for training DeepEdit, and the guidance channels they make."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from apps.radiology import LABELS
from apps.radiology.clicks import ClickConfig, GuidanceInputs, error_clicks, sample_clicks
from labelloop.sampledata.synthetic import generate_case


@pytest.fixture(scope="module")
def label() -> np.ndarray:
    """The ``(32, 32, 16)`` label map of a synthetic case where every label is present."""
    for i in range(5):
        _, case, _ = generate_case(np.random.default_rng([11, i]), (32, 32, 16), (6.0, 6.0, 8.0))
        if all((case == value).any() for value in LABELS.values()):
            return case
    raise AssertionError("no case holds every label")


def test_simulated_clicks_fall_inside_each_present_label(label: np.ndarray) -> None:
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


def test_guidance_marks_the_clicked_labels(label: np.ndarray) -> None:
    labels = torch.from_numpy(label.astype(np.int64))[None, None]
    inputs = GuidanceInputs(
        LABELS, ClickConfig(click_probability=1.0, error_clicks=False), np.random.default_rng(1)
    )
    out = inputs.for_training(torch.zeros(1, 1, *labels.shape[2:]), labels, network=None)
    assert out.shape == (1, 1 + len(LABELS), 32, 32, 16) and out.dtype == torch.float32
    for value in LABELS.values():
        channel = out[0, 1 + value]
        assert channel.max() == 1.0 and labels[0, 0][channel == 1.0].eq(value).all()
    assert inputs.for_validation(torch.zeros(2, 1, 8, 8, 8))[:, 1:].abs().sum() == 0
