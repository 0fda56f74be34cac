"""Active-learning simulation: held-out Dice against the number of labels, for each strategy.

Everything runs in this process, on the CPU, with the radiology app's own code: its segmentation
trainer (``SegmentationTrainer`` through ``LocalTrainContext``), its scoring methods
(``EpistemicScoring``, ``TTAScoring``) and strategies (``epistemic``, ``tta``, ``diverse``), and
the built-in ``random`` and ``first``. No server, no HTTP.

For each seed:

1. A synthetic cohort (``labelloop.sampledata.synthetic``, case ``i`` from
   ``default_rng([seed, i])``): a pool of ``--pool`` cases and ``--test`` held-out cases. The grid is
   32 x 32 x 16 voxels of 6 x 6 x 8 mm: a 192 x 192 x 128 mm field of view around the cohort's
   centre at half its resolution (the kidneys whole, about half of the liver and spleen), 64 x 64
   x 32 voxels once the app normalises it to 3 x 3 x 4 mm, so a run fits in minutes on two cores.
2. ``--initial`` pool cases (drawn with the seed) are labelled; a model is trained on them from
   scratch for ``--init-epochs`` epochs. All strategies start from this same model.
3. Each round, each strategy picks ``--batch`` unlabelled pool cases (a batch of annotators
   asking at once; the scoring strategies first score the whole unlabelled pool with the current
   model), their ground truth is revealed, and the model is fine-tuned on all labels so far for
   ``--epochs`` epochs. Then the mean foreground Dice on the held-out cases is recorded.

The network is a narrow version of the app's UNet (``SMALL``: channels 8-128, one residual unit,
32 x 32 x 16 patches, dropout 0.1 as in the app) so that training and scoring stay cheap; the
method is the same at full size.

Printed: the mean (and standard deviation over seeds) of held-out Dice per number of labels and
strategy; how many labels each strategy needed to reach ``--target`` Dice (per seed) and its
mean Dice over the whole curve; and, for the scoring strategies, the Spearman correlation
between an image's score and the model's actual error on it (``1 - Dice`` against its ground
truth) over the unlabelled pool, which says whether the score finds the images the model gets
wrong.

Usage::

    python bench/active_learning.py [--seeds 3] [--rounds 4] [--epochs 8] [--pool 20] [--test 8]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):  # run as ``python bench/active_learning.py``
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from apps.radiology import LABELS  # noqa: E402
from apps.radiology.config import NetworkConfig  # noqa: E402
from apps.radiology.metrics import dice_per_case  # noqa: E402
from apps.radiology.networks import load_weights, unet  # noqa: E402
from apps.radiology.segmentation import sliding_window_logits  # noqa: E402
from apps.radiology.strategies import DiverseStrategy, EpistemicStrategy, TTAStrategy  # noqa: E402
from apps.radiology.training import LoadCased, SegmentationTrainer  # noqa: E402
from apps.radiology.uncertainty import EpistemicScoring, TTAScoring  # noqa: E402
from bench._util import interrupt_on_sigterm, render_table, scratch_dir  # noqa: E402
from labelloop.activelearning import FirstStrategy, RandomStrategy  # noqa: E402
from labelloop.imaging import read_volume, write_volume  # noqa: E402
from labelloop.sampledata.synthetic import generate_case  # noqa: E402
from labelloop.tasks import (  # noqa: E402
    Candidate,
    LocalTrainContext,
    Score,
    ScoringMethod,
    Strategy,
    StrategyContext,
    TrainData,
    TrainItem,
    validate_options,
)

SHAPE = (32, 32, 16)
SPACING = (6.0, 6.0, 8.0)
SMALL = NetworkConfig(
    channels=(8, 16, 32, 64, 128), num_res_units=1, roi_size=(32, 32, 16), sw_batch_size=8, overlap=0.25
)
ALL_STRATEGIES = ("random", "first", "epistemic", "tta", "diverse")
DEFAULT_STRATEGIES = ("random", "epistemic", "tta", "diverse")


@dataclass
class Case:
    """One synthetic case on disk, and its normalised tensors (``(1, 64, 64, 32)``) for scoring Dice."""

    item: TrainItem
    image: Any
    label: Any


@dataclass
class Arm:
    """One strategy's run on one seed: what it labelled, its weights, its Dice per label count."""

    labelled: list[str]
    weights: Path
    dice: dict[int, float] = field(default_factory=dict)
    rho: list[float] = field(default_factory=list)


def make_cohort(folder: Path, seed: int, count: int) -> list[Case]:
    """``count`` synthetic cases (image int16 HU, label uint8) written under ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    load = LoadCased(len(LABELS))
    cases = []
    for i in range(count):
        image, label, affine = generate_case(np.random.default_rng([seed, i]), SHAPE, SPACING)
        image_path, label_path = folder / f"case{i:03d}.nii.gz", folder / f"case{i:03d}_label.nii.gz"
        write_volume(image_path, image, affine)
        write_volume(label_path, label, affine)
        item = TrainItem(f"case{i:03d}", image_path, label_path, 1, f"{seed:032d}{i:032d}")
        loaded = load({"image": str(image_path), "label": str(label_path)})
        cases.append(Case(item, loaded["image"], loaded["label"]))
    return cases


def train(workdir: Path, cases: list[Case], epochs: int, seed: int, init: Path | None) -> Path:
    """Train (fine-tune from ``init``) on ``cases``; returns the weights file."""
    config = {
        "max_epochs": epochs,
        "learning_rate": 2e-3,
        "train_batch_size": 2,
        "samples_per_image": 4,
        "early_stop_patience": -1,
        "device": "cpu",
        "seed": seed,
    }
    ctx = LocalTrainContext(workdir)
    data = TrainData(train=[c.item for c in cases], val=[])
    trainer = SegmentationTrainer(LABELS, SMALL)
    result = trainer.train(ctx, data, validate_options(trainer.config_model, config), init)
    assert result.weights is not None
    return result.weights


def dice(weights: Path, cases: Sequence[Case]) -> list[float]:
    """Mean foreground Dice of the model on each case (0 where it finds nothing that is there)."""
    import torch

    cpu = torch.device("cpu")
    network = load_weights(unet(1, len(LABELS), SMALL), weights, cpu)
    out = []
    for case in cases:
        logits = sliding_window_logits(network, case.image[None], cpu, sw_batch_size=8, config=SMALL)
        score = dice_per_case(logits.argmax(dim=1), case.label, len(LABELS))[0]
        out.append(score or 0.0)
    return out


def choose(
    name: str,
    strategy: Strategy,
    method: ScoringMethod | None,
    arm: Arm,
    pool: dict[str, Case],
    batch: int,
    rng: random.Random,
    version: int,
) -> list[str]:
    """The ``batch`` images ``strategy`` ranks first among the unlabelled pool (scoring it first)."""
    import torch

    unlabelled = [image_id for image_id in pool if image_id not in arm.labelled]
    candidates = []
    if method is not None:
        model = method.load(arm.weights, torch.device("cpu"))
        values = []
        for image_id in unlabelled:
            output = method.score(model, read_volume(pool[image_id].item.image), "cpu")
            score = Score(name, output.value, "segmentation", version, output.details)
            candidates.append(Candidate(image_id, scores={strategy.spec.scores[0]: score}))
            values.append(output.value)
        errors = [1.0 - d for d in dice(arm.weights, [pool[i] for i in unlabelled])]
        if len(set(values)) > 1 and len(set(errors)) > 1:
            from scipy.stats import spearmanr

            arm.rho.append(float(spearmanr(values, errors).statistic))
    else:
        candidates = [Candidate(image_id) for image_id in unlabelled]
    ranked = strategy.rank(candidates, StrategyContext(rng=rng), dict(strategy.spec.config))
    return [r.image_id for r in ranked[:batch]]


def run_seed(seed: int, args: argparse.Namespace, root: Path, strategies: list[str]) -> dict[str, Arm]:
    started = time.monotonic()
    cohort = make_cohort(root / "cases", seed, args.pool + args.test)
    pool = {c.item.image_id: c for c in cohort[: args.pool]}
    test = cohort[args.pool :]
    initial = random.Random(seed).sample(sorted(pool), args.initial)
    weights = train(root / "init", [pool[i] for i in initial], args.init_epochs, seed, None)
    start_dice = statistics.fmean(dice(weights, test))
    elapsed = time.monotonic() - started
    print(f"seed {seed}: {args.initial} labels, held-out Dice {start_dice:.3f} ({elapsed:.0f} s)", flush=True)
    passes = args.passes
    table: dict[str, tuple[Strategy, ScoringMethod | None]] = {
        "random": (RandomStrategy(), None),
        "first": (FirstStrategy(), None),
        "epistemic": (EpistemicStrategy(), EpistemicScoring(LABELS, passes=passes, network=SMALL, seed=seed)),
        "tta": (TTAStrategy(), TTAScoring(LABELS, network=SMALL, seed=seed)),
        "diverse": (DiverseStrategy(), EpistemicScoring(LABELS, passes=passes, network=SMALL, seed=seed)),
    }
    arms = {}
    for name in strategies:
        strategy, method = table[name]
        arm = Arm(labelled=list(initial), weights=weights, dice={args.initial: start_dice})
        rng = random.Random(seed * 7919 + len(name))
        for round_ in range(1, args.rounds + 1):
            picked = choose(name, strategy, method, arm, pool, args.batch, rng, round_)
            arm.labelled += picked
            arm.weights = train(
                root / name / f"round{round_}",
                [pool[i] for i in arm.labelled],
                args.epochs,
                seed * 100 + round_,
                arm.weights,
            )
            arm.dice[len(arm.labelled)] = statistics.fmean(dice(arm.weights, test))
        arms[name] = arm
        curve = " ".join(f"{arm.dice[n]:.3f}" for n in sorted(arm.dice))
        picks = " ".join(i.removeprefix("case") for i in arm.labelled[args.initial :])
        print(f"  {name:>9}: Dice {curve}; picked {picks} ({time.monotonic() - started:.0f} s)", flush=True)
    return arms


def report(results: list[dict[str, Arm]], strategies: list[str], target: float) -> None:
    counts = sorted(results[0][strategies[0]].dice)
    rows = []
    for n in counts:
        row = [str(n)]
        for name in strategies:
            values = [r[name].dice[n] for r in results]
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            row.append(f"{statistics.fmean(values):.3f} ± {spread:.3f}")
        rows.append(row)
    print("\nMean held-out Dice (± standard deviation over seeds) against the number of labels\n")
    print(render_table(["labels", *strategies], rows))
    print(f"\nLabels needed to reach held-out Dice {target:g} (per seed; '>' : not reached)\n")
    rows = []
    for name in strategies:
        reached = []
        for r in results:
            hit = [n for n in counts if r[name].dice[n] >= target]
            reached.append(str(hit[0]) if hit else f">{counts[-1]}")
        area = statistics.fmean(statistics.fmean(r[name].dice[n] for n in counts) for r in results)
        rows.append([name, " ".join(reached), f"{area:.3f}"])
    print(render_table(["strategy", "labels per seed", "mean Dice over the curve"], rows))
    scored = [name for name in strategies if any(r[name].rho for r in results)]
    if scored:
        print("\nSpearman correlation of score with the model's error (1 - Dice) over the unlabelled pool\n")
        rows = []
        for name in scored:
            rhos = [v for r in results for v in r[name].rho]
            rows.append([name, f"{statistics.fmean(rhos):+.2f}", f"{min(rhos):+.2f}", f"{max(rhos):+.2f}"])
        print(render_table(["strategy", "mean rho", "min", "max"], rows))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--seeds", type=int, default=3, help="seeds (cohorts and initial sets) to average over"
    )
    parser.add_argument("--first-seed", type=int, default=0, help="seeds are first-seed, first-seed + 1, ...")
    parser.add_argument("--rounds", type=int, default=4, help="rounds of choosing and labelling")
    parser.add_argument("--batch", type=int, default=2, help="images labelled per round (annotators at once)")
    parser.add_argument("--epochs", type=int, default=8, help="fine-tuning epochs per round")
    parser.add_argument("--init-epochs", type=int, default=40, help="epochs of the initial model")
    parser.add_argument("--initial", type=int, default=2, help="labelled images to start from")
    parser.add_argument("--pool", type=int, default=20, help="unlabelled pool size")
    parser.add_argument("--test", type=int, default=8, help="held-out test images")
    parser.add_argument("--passes", type=int, default=4, help="Monte Carlo dropout passes")
    parser.add_argument("--target", type=float, default=0.6, help="held-out Dice to reach")
    parser.add_argument(
        "--strategies", default=",".join(DEFAULT_STRATEGIES), help=f"comma-separated, of {ALL_STRATEGIES}"
    )
    args = parser.parse_args(argv)
    strategies = [s for s in args.strategies.split(",") if s]
    unknown = set(strategies) - set(ALL_STRATEGIES)
    if unknown or args.initial + args.rounds * args.batch > args.pool:
        parser.error(f"unknown strategies {sorted(unknown)}" if unknown else "the pool is too small")
    interrupt_on_sigterm()
    started = time.monotonic()
    results = []
    with scratch_dir("labelloop-al-") as root:
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            results.append(run_seed(seed, args, root / f"seed{seed}", strategies))
    print(
        f"\n{args.seeds} seeds, pool {args.pool}, test {args.test}, {args.rounds} rounds of {args.batch}, "
        f"{args.epochs} epochs a round ({args.init_epochs} initially), grid {SHAPE} at {SPACING} mm, "
        f"{time.monotonic() - started:.0f} s"
    )
    report(results, strategies, args.target)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
