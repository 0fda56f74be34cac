"""The radiology app's active-learning strategies and uncertainty scores.

``rank()`` is tested on hand-made ``Candidate``s. The scoring methods are tested on networks
built by hand, for which we know which image the model is unsure of
(see ``tests/support/uncertain.py`` for why each answer is known).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from apps.radiology import LABELS, build_app
from apps.radiology.config import NetworkConfig
from apps.radiology.networks import unet
from apps.radiology.strategies import DiverseStrategy, EpistemicStrategy, TTAStrategy
from apps.radiology.uncertainty import EpistemicScoring, TTAScoring, mirror_pairs

from labelloop.errors import InvalidParamsError
from labelloop.imaging import Volume, read_volume
from labelloop.tasks import Candidate, Score, ScoreOutput, StrategyContext
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


def test_the_app_registers_strategies_with_the_scores_they_read() -> None:
    app = build_app()
    assert {"epistemic", "tta", "diverse"} <= set(app.strategies)
    assert set(app.scoring) == {"epistemic", "tta"}
    for strategy in app.strategies.values():
        assert set(strategy.spec.scores) <= set(app.scoring) and strategy.spec.description
    assert app.strategies["diverse"].spec.config == {"diversity": 0.5}
    assert all(m.spec.model == "segmentation" for m in app.scoring.values())


# ---------------------------------------------------------------- rank() on hand-made candidates


def _stored(output: ScoreOutput, version: int = 1) -> Score:
    return Score("epistemic", output.value, "segmentation", version, output.details)


def _score(value: float | None, version: int | None = 3, method: str = "epistemic", **details: Any) -> Score:
    return Score(method, value, "segmentation", version, details)


def _candidate(image_id: str, scores: dict[str, Score] | None = None) -> Candidate:
    return Candidate(image_id=image_id, scores=scores or {})


def _rank(
    strategy: Any, candidates: list[Candidate], busy: list[Candidate] | None = None, **config: Any
) -> Any:
    return strategy.rank(candidates, StrategyContext(busy=busy or [], rng=random.Random(7)), config)


def test_most_uncertain_first_with_value_version_and_place_in_the_reason() -> None:
    candidates = [_candidate(i, {"epistemic": _score(v)}) for i, v in (("a", 0.1), ("b", 0.3), ("c", 0.2))]
    ranked = _rank(EpistemicStrategy(), candidates)
    assert [r.image_id for r in ranked] == ["b", "c", "a"]
    assert [r.score for r in ranked] == [0.3, 0.2, 0.1]
    assert "0.3" in ranked[0].reason and "segmentation v3" in ranked[0].reason and "#1" in ranked[0].reason


def test_unscored_images_come_last_in_random_order_and_say_so() -> None:
    scored = [_candidate("s1", {"epistemic": _score(0.2)}), _candidate("s2", {"epistemic": _score(0.1)})]
    unscored = [_candidate(f"u{i}") for i in range(6)] + [_candidate("nan", {"epistemic": _score(None)})]
    ranked = _rank(EpistemicStrategy(), [*unscored[:3], *scored, *unscored[3:]])
    assert [r.image_id for r in ranked[:2]] == ["s1", "s2"]
    tail = [r.image_id for r in ranked[2:]]
    assert sorted(tail) == sorted(c.image_id for c in unscored) and tail != [c.image_id for c in unscored]
    assert all(r.score is None and r.reason.startswith("not scored yet") for r in ranked[2:])
    nothing = _rank(EpistemicStrategy(), [_candidate("x"), _candidate("y")])
    assert all("no trained model" in r.reason for r in nothing)


def test_scores_of_an_older_model_version_rank_after_the_newest() -> None:
    candidates = [
        _candidate("old-high", {"epistemic": _score(0.9, version=1)}),
        _candidate("new-low", {"epistemic": _score(0.1, version=2)}),
        _candidate("new-high", {"epistemic": _score(0.5, version=2)}),
    ]
    ranked = _rank(EpistemicStrategy(), candidates)
    assert [r.image_id for r in ranked] == ["new-high", "new-low", "old-high"]
    assert "older" in ranked[2].reason and "segmentation v1" in ranked[2].reason


def test_tta_reads_only_tta_scores() -> None:
    candidates = [
        _candidate("a", {"epistemic": _score(0.9), "tta": _score(0.1, method="tta")}),
        _candidate("b", {"epistemic": _score(0.1), "tta": _score(0.5, method="tta")}),
        _candidate("c", {"epistemic": _score(0.5)}),
    ]
    ranked = _rank(TTAStrategy(), candidates)
    assert [r.image_id for r in ranked] == ["b", "a", "c"] and ranked[2].score is None


def _embedded(image_id: str, value: float, direction: list[float], version: int = 3) -> Candidate:
    return _candidate(image_id, {"epistemic": _score(value, version, embedding=direction)})


#: Four well-separated looks, and a near-copy of the first.
E1, E2, E3, E4 = ([float(i == k) for i in range(4)] for k in range(4))
E1_COPY = [0.99, 0.05, 0.0, 0.0]


def test_diverse_does_not_rank_near_copies_next_to_each_other() -> None:
    candidates = [
        _embedded("a", 1.0, E1),
        _embedded("a-copy", 0.95, E1_COPY),
        _embedded("b", 0.6, E2),
        _embedded("c", 0.4, E3),
        _embedded("d", 0.3, E4),
    ]
    ranked = _rank(DiverseStrategy(), candidates)
    order = [r.image_id for r in ranked]
    assert order[0] == "a" and order[-1] == "a-copy", order
    assert "most like a (ranked above it)" in ranked[-1].reason
    plain = _rank(DiverseStrategy(), candidates, diversity=0.0)
    assert [r.image_id for r in plain] == ["a", "a-copy", "b", "c", "d"], "diversity 0 is epistemic"


def test_diverse_avoids_near_copies_of_images_busy_with_other_annotators() -> None:
    busy = [_embedded("taken", 0.9, E1)]
    candidates = [
        _embedded("like-taken", 1.0, E1_COPY),
        _embedded("other", 0.7, E2),
        _embedded("third", 0.5, E3),
    ]
    ranked = _rank(DiverseStrategy(), candidates, busy)
    assert ranked[0].image_id == "other"
    worst = next(r for r in ranked if r.image_id == "like-taken")
    assert "taken (leased to another annotator)" in worst.reason and "cosine" in worst.reason
    assert _rank(EpistemicStrategy(), candidates, busy)[0].image_id == "like-taken"


def test_diverse_handles_missing_embeddings_versions_and_unscored_images() -> None:
    candidates = [
        _candidate("bare", {"epistemic": _score(0.8)}),
        _embedded("a", 1.0, E1),
        _embedded("old", 2.0, E2, version=1),
        _candidate("none"),
    ]
    ranked = _rank(DiverseStrategy(), candidates)
    assert [r.image_id for r in ranked] == ["a", "bare", "old", "none"]
    assert "no embedding" in ranked[1].reason and "older" in ranked[2].reason
    assert ranked[3].score is None and ranked[3].reason.startswith("not scored yet")


@pytest.mark.parametrize("bad", [1.5, -0.1, "0.5", True, None])
def test_diversity_must_be_a_number_from_0_to_1(bad: Any) -> None:
    with pytest.raises(InvalidParamsError, match="diversity"):
        _rank(DiverseStrategy(), [_embedded("a", 1.0, E1)], diversity=bad)
