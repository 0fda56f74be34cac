"""Random-walker deepgrow: Dice and time with 1, 3 and 5 clicks, the fixed box against the grown region.

The ``random_walker`` model (``apps/radiology/randomwalk.py``) runs in this process, through the
task's public ``infer`` as the server calls it (the model has no weights and no cache, so a
server would add only HTTP and file writing). Two settings of the same task are compared in the
same run, on the same images and the same simulated user:

* **fixed** (the baseline): ``max_rounds=1``, one walk in the box of ``margin_mm`` (30 mm) around
  the foreground clicks, which is what the model did before its region could grow;
* **grown**: the defaults, up to ``max_rounds`` (6) walks, the region growing while the structure
  touches its faces (up to ``max_size_mm``, 300 mm per axis).

Images: synthetic abdominal CTs from ``labelloop.sampledata.synthetic.render_case`` (case ``i``
from ``np.random.default_rng([0, i])``), with their true organ masks, on two grids: the cohort's
default 128x128x64 voxels of 3x3x4 mm, and 256x256x128 voxels of 1.5x1.5x2 mm (the grid of
``bench/infer.py``). Organs: liver, spleen, left and right kidney (the labels of
``SYNTHETIC_LABELS``; the liver's lesions are not liver).

The simulated user (per organ, per setting, five clicks in a row):

1. the first click is a foreground click on the organ's own tissue (``SyntheticCase.tissue``;
   the cortex for a kidney), at the voxel farthest from its edge (Euclidean distance in mm);
2. each further click goes into the largest 6-connected region where the last result is wrong,
   at its voxel farthest from the region's edge: a foreground click where the organ was
   missed, a background click where something else was taken.

Dice is ``2 |A & B| / (|A| + |B|)`` of the result after 1, 3 and 5 clicks against the true mask;
seconds are the wall time of each ``infer`` call (the walk uses one BLAS thread; the load
average is printed, as other processes on a small machine slow it). Ratios are grown / fixed.
"walks grown" is the mean of ``result["rounds"]``, the walks in the growing region; a request
with several foreground clicks whose region grows makes one more, in the first click's own box,
to learn the clicked tissue from.

Usage::

    python bench/randomwalk.py [--cases N] [--grids default,fine]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import ndimage

if __package__ in (None, ""):  # run as ``python bench/randomwalk.py``
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from apps.radiology.randomwalk import RandomWalkTask  # noqa: E402
from bench._util import interrupt_on_sigterm, load_average, render_table  # noqa: E402
from labelloop.imaging import Geometry, Volume  # noqa: E402
from labelloop.sampledata.synthetic import SYNTHETIC_LABELS, TISSUES, render_case  # noqa: E402
from labelloop.tasks import InferRequest  # noqa: E402

GRIDS: dict[str, tuple[tuple[int, int, int], tuple[float, float, float]]] = {
    "default": ((128, 128, 64), (3.0, 3.0, 4.0)),
    "fine": ((256, 256, 128), (1.5, 1.5, 2.0)),
}
#: Organ label -> the tissue of ``TISSUES`` the first click goes on.
ORGANS: dict[str, str] = {
    "liver": "liver",
    "spleen": "spleen",
    "left kidney": "kidney cortex",
    "right kidney": "kidney cortex",
}
SETTINGS: dict[str, dict[str, Any]] = {"fixed": {"max_rounds": 1}, "grown": {}}
REPORTED_CLICKS = (1, 3, 5)

Mask = npt.NDArray[np.bool_]


@dataclass
class Series:
    """One setting's results: per click count, Dice and seconds over organs x cases."""

    dice: dict[int, list[float]] = field(default_factory=dict)
    seconds: dict[int, list[float]] = field(default_factory=dict)
    rounds: dict[int, list[int]] = field(default_factory=dict)

    def add(self, clicks: int, dice: float, seconds: float, rounds: int) -> None:
        self.dice.setdefault(clicks, []).append(dice)
        self.seconds.setdefault(clicks, []).append(seconds)
        self.rounds.setdefault(clicks, []).append(rounds)


def dice(a: Mask, b: Mask) -> float:
    total = int(a.sum()) + int(b.sum())
    return 2.0 * float(np.sum(a & b)) / total if total else 1.0


def deepest(mask: Mask, spacing: Sequence[float]) -> list[int]:
    """The voxel of ``mask`` farthest (mm) from its edge; the first such in C order on ties."""
    found = ndimage.find_objects(mask.astype(np.uint8))[0]
    assert found is not None
    box = tuple(
        slice(max(s.start - 1, 0), min(s.stop + 1, n)) for s, n in zip(found, mask.shape, strict=True)
    )
    distance = ndimage.distance_transform_edt(mask[box], sampling=spacing)
    local = np.unravel_index(int(np.argmax(distance)), distance.shape)
    return [int(i + s.start) for i, s in zip(local, box, strict=True)]


def corrective_click(result: Mask, truth: Mask, spacing: Sequence[float]) -> tuple[str, list[int]] | None:
    """``("foreground" | "background", voxel)`` in the largest region where ``result`` is wrong."""
    wrong = result != truth
    regions, count = ndimage.label(wrong)
    if count == 0:
        return None
    largest = int(np.argmax(np.bincount(regions.ravel())[1:])) + 1
    region = regions == largest
    point = deepest(region, spacing)
    return ("foreground" if truth[tuple(point)] else "background"), point


def simulate(
    task: RandomWalkTask,
    volume: Volume,
    truth: Mask,
    first: list[int],
    params: dict[str, Any],
    spacing: Sequence[float],
    series: Series,
) -> list[float]:
    """Five clicks in a row (see the module docstring); adds the results to ``series``."""
    clicks: dict[str, list[list[int]]] = {"foreground": [first], "background": []}
    scores: list[float] = []
    for count in range(1, max(REPORTED_CLICKS) + 1):
        request = InferRequest(params={**clicks, **params}, image=volume, device="cpu")
        started = time.perf_counter()
        out = task.infer(None, None, request)
        seconds = time.perf_counter() - started
        result = out.label == 1
        score = dice(result, truth)
        scores.append(score)
        if count in REPORTED_CLICKS:
            series.add(count, score, seconds, int(out.result["rounds"]))
        click = corrective_click(result, truth, spacing)
        if click is None:  # perfect: the rest of the clicks change nothing
            for later in range(count + 1, max(REPORTED_CLICKS) + 1):
                if later in REPORTED_CLICKS:
                    series.add(later, score, 0.0, 0)
            break
        clicks[click[0]].append(click[1])
    return scores


def run_grid(name: str, cases: int) -> dict[str, dict[str, Series]]:
    """organ -> setting -> results, for ``cases`` synthetic cases on grid ``name``."""
    shape, spacing = GRIDS[name]
    task = RandomWalkTask()
    results = {organ: {setting: Series() for setting in SETTINGS} for organ in ORGANS}
    for index in range(cases):
        case = render_case(np.random.default_rng([0, index]), shape, spacing)
        volume = Volume(array=case.image, geometry=Geometry(shape=shape, affine=case.affine))
        for organ, tissue in ORGANS.items():
            truth = np.asarray(case.label == SYNTHETIC_LABELS[organ])
            first = deepest(truth & (case.tissue == TISSUES[tissue]), spacing)
            line = []
            for setting, params in SETTINGS.items():
                scores = simulate(task, volume, truth, first, params, spacing, results[organ][setting])
                line.append(f"{setting} " + " ".join(f"{s:.2f}" for s in scores))
            print(f"  case {index} {organ:12s} Dice after 1..5 clicks: " + "; ".join(line), flush=True)
    return results


def _mean(values: Sequence[float]) -> float:
    return statistics.fmean(values) if values else float("nan")


def _ratio(new: float, old: float) -> str:
    return f"{new / old:.2f}x" if old > 0 else "-"


def report(name: str, results: dict[str, dict[str, Series]]) -> None:
    shape, spacing = GRIDS[name]
    print(
        f"\n== grid {name}: {'x'.join(map(str, shape))} voxels of {'x'.join(f'{s:g}' for s in spacing)} mm"
        " (means over cases; seconds per infer call)"
    )
    headers = [
        "organ",
        "clicks",
        "Dice fixed",
        "Dice grown",
        "Dice ratio",
        "s fixed",
        "s grown",
        "s ratio",
        "walks grown",
    ]
    rows: list[list[str]] = []
    rows_by_clicks: dict[int, list[tuple[float, float, float, float]]] = {}
    for organ, by_setting in results.items():
        fixed, grown = by_setting["fixed"], by_setting["grown"]
        for clicks in REPORTED_CLICKS:
            d_old, d_new = _mean(fixed.dice[clicks]), _mean(grown.dice[clicks])
            s_old, s_new = _mean(fixed.seconds[clicks]), _mean(grown.seconds[clicks])
            rows_by_clicks.setdefault(clicks, []).append((d_old, d_new, s_old, s_new))
            rows.append(
                [
                    organ,
                    str(clicks),
                    f"{d_old:.3f}",
                    f"{d_new:.3f}",
                    _ratio(d_new, d_old),
                    f"{s_old:.2f}",
                    f"{s_new:.2f}",
                    _ratio(s_new, s_old),
                    f"{_mean([float(r) for r in grown.rounds[clicks]]):.1f}",
                ]
            )
    for clicks, values in rows_by_clicks.items():
        d_old, d_new = _mean([v[0] for v in values]), _mean([v[1] for v in values])
        s_old, s_new = _mean([v[2] for v in values]), _mean([v[3] for v in values])
        rows.append(
            [
                "all organs",
                str(clicks),
                f"{d_old:.3f}",
                f"{d_new:.3f}",
                _ratio(d_new, d_old),
                f"{s_old:.2f}",
                f"{s_new:.2f}",
                _ratio(s_new, s_old),
                "",
            ]
        )
    print(render_table(headers, rows))


def run(cases: int, grids: list[str]) -> int:
    interrupt_on_sigterm()
    print(
        f"random walker, fixed box (max_rounds=1) against grown region (defaults); {cases} synthetic"
        f" case(s) per grid; CPU cores {os.cpu_count()}; load average at start: {load_average()}"
    )
    started = time.perf_counter()
    everything = {}
    for name in grids:
        print(f"\n-- grid {name}")
        everything[name] = run_grid(name, cases)
    for name, results in everything.items():
        report(name, results)
    print(f"\nload average at end: {load_average()}; {time.perf_counter() - started:.0f} s in all")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cases", type=int, default=3, help="synthetic cases per grid (default 3)")
    parser.add_argument(
        "--grids", default="default,fine", help=f"comma-separated, of {', '.join(GRIDS)} (default: both)"
    )
    args = parser.parse_args(argv)
    if args.cases < 1:
        parser.error("--cases must be at least 1")
    grids = [g.strip() for g in args.grids.split(",") if g.strip()]
    unknown = [g for g in grids if g not in GRIDS]
    if unknown or not grids:
        parser.error(f"--grids must name some of {', '.join(GRIDS)}, not {args.grids!r}")
    try:
        return run(args.cases, grids)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
