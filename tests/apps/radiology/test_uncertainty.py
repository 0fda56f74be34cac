"""The radiology app's uncertainty scores (apps/radiology/uncertainty.py).

The scoring methods are tested on networks built by hand, for which we know which image the
model is unsure of (see ``tests/support/uncertain.py`` for why each answer is known).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from apps.radiology import LABELS
from apps.radiology.config import NetworkConfig
from apps.radiology.networks import unet
from apps.radiology.strategies import EpistemicStrategy
from apps.radiology.uncertainty import EpistemicScoring, TTAScoring, mirror_pairs
from labelloop.imaging import Volume, read_volume
from labelloop.tasks import Score, ScoreOutput, StrategyContext
from tests.support.candidates import candidate as _candidate
from tests.support.uncertain import constructed_network, constructed_weights, write_known_images

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def volumes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Volume]:
    paths = write_known_images(tmp_path_factory.mktemp("known"))
    return {name: read_volume(path) for name, path in paths.items()}


def _labels_per_pass(net: Any, volume: Volume, passes: int) -> list[torch.Tensor]:
    """Argmax label maps of ``passes`` forward passes with dropout on, on the padded 96 x 96 x 64
    window the sliding window gives the network (one batch: each item draws its own masks)."""
    x = torch.zeros(passes, 1, 96, 96, 64)
    x[:, 0, 16:80, 16:80, 16:48] = torch.clamp((torch.from_numpy(volume.array).float() + 250) / 600, 0, 1)
    for m in net.modules():
        if isinstance(m, torch.nn.Dropout):
            m.train()
    with torch.no_grad():
        return list(net(x).argmax(dim=1))


def test_the_dropout_construction_flips_decisions_only_on_the_focus(volumes: dict[str, Volume]) -> None:
    """What the known answer rests on, checked on the network itself, not through the scoring code."""
    net = constructed_network("dropout").eval()
    torch.manual_seed(1)
    for name, volume in volumes.items():
        maps = _labels_per_pass(net, volume, 3)
        changed = any(not torch.equal(maps[0], m) for m in maps[1:])
        assert changed == (name == "focus"), name
        assert all(int(m.max()) <= LABELS["liver"] for m in maps)


def test_epistemic_scoring_ranks_the_known_uncertain_image_first(
    volumes: dict[str, Volume], tmp_path: Path
) -> None:
    method = EpistemicScoring(LABELS)
    model = method.load(constructed_weights(tmp_path / "w.pt", "dropout"), CPU)
    outputs = {name: method.score(model, v, CPU) for name, v in volumes.items()}
    assert max(outputs, key=lambda n: outputs[n].value) == "focus"
    assert outputs["focus"].value > 0.1, "a few dropout passes out of four flip the focus: ~H(1/4) nats"
    assert all(outputs[n].value < 1e-4 for n in ("air", "slab", "block"))
    focus = outputs["focus"].details
    assert focus["disagreement"] > 0 and 0 < focus["region_fraction"] < 0.01
    assert outputs["slab"].details["disagreement"] == 0 and outputs["slab"].details["region_fraction"] == 1
    again = method.score(model, volumes["focus"], CPU)
    assert again.value == outputs["focus"].value, "scores are seeded: the same image scores the same"
    assert not any(m.training for m in model.modules() if isinstance(m, torch.nn.Dropout)), "back in eval"
    # ... and the strategy, fed those scores, hands out the focus image first.
    candidates = [_candidate(n, {"epistemic": _stored(o)}) for n, o in outputs.items()]
    ranked = EpistemicStrategy().rank(candidates, StrategyContext(rng=random.Random(0)), {})
    assert ranked[0].image_id == "focus" and "segmentation v1" in ranked[0].reason


def test_tta_scoring_ranks_images_with_sharp_x_edges_first(
    volumes: dict[str, Volume], tmp_path: Path
) -> None:
    method = TTAScoring(LABELS, shifts=(), flips=(0,))
    model = method.load(constructed_weights(tmp_path / "w.pt", "edge"), CPU)
    outputs = {name: method.score(model, v, CPU) for name, v in volumes.items()}
    order = sorted(outputs, key=lambda n: -outputs[n].value)
    assert set(order[:2]) == {"block", "focus"} and set(order[2:]) == {"air", "slab"}
    assert outputs["block"].value > 0.3 and outputs["block"].details["disagreement"] == 1.0
    assert outputs["slab"].value < 1e-3 and outputs["air"].value == 0.0
    # Without dropout the dropout construction is sure of everything under intensity shifts.
    shifts = TTAScoring(LABELS)
    sure = shifts.load(constructed_weights(tmp_path / "d.pt", "dropout"), CPU)
    assert shifts.score(sure, volumes["focus"], CPU).details["disagreement"] == 0.0


def test_score_details_describe_the_image(volumes: dict[str, Volume], tmp_path: Path) -> None:
    small = NetworkConfig(channels=(4, 8, 16, 32, 64), num_res_units=1, roi_size=(32, 32, 16), overlap=0.0)
    torch.manual_seed(0)
    weights = tmp_path / "random.pt"
    torch.save(unet(1, len(LABELS), small).state_dict(), str(weights))
    method = EpistemicScoring(LABELS, passes=3, network=small)
    output = method.score(method.load(weights, CPU), volumes["block"], CPU)
    details = output.details
    assert details["passes"] == 3 and details["mutual_information"] == pytest.approx(output.value, abs=1e-6)
    assert set(details["label_fractions"]) == set(LABELS)
    assert sum(details["label_fractions"].values()) == pytest.approx(1.0, abs=1e-4)
    assert details["entropy"] >= details["expected_entropy"] >= 0
    vector = np.asarray(details["embedding"])
    assert vector.shape == (4**3 + (len(LABELS) - 1) * 2**3,)
    assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-3)


def test_scoring_options_are_checked() -> None:
    with pytest.raises(ValueError, match="2 passes"):
        EpistemicScoring(LABELS, passes=1)
    with pytest.raises(ValueError, match="dropout"):
        EpistemicScoring(LABELS, network=NetworkConfig(dropout=0.0))
    with pytest.raises(ValueError, match="axes"):
        TTAScoring(LABELS, flips=(3,))
    with pytest.raises(ValueError, match="at least one"):
        TTAScoring(LABELS, shifts=())
    assert mirror_pairs(LABELS) == [(LABELS["left kidney"], LABELS["right kidney"])]


def _stored(output: ScoreOutput, version: int = 1) -> Score:
    return Score("epistemic", output.value, "segmentation", version, output.details)
