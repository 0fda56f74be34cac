"""Interactive inference while a training job runs: how much slower an annotator's request gets.

Each side starts ``labelloop serve`` (one worker process, autotrain off, promotion manual, no
rescoring when the weights are published) on a
fresh data dir with a synthetic cohort of ``--cases`` cases (128 x 128 x 64 voxels of 3 x 3 x 4
mm, ``generate_case(default_rng([0, i]))``, every case with a ``final`` label) and an active
``segmentation`` version (the app's UNet, seeded random weights). Then:

1. **idle**: ``--requests`` ``POST /infer/segmentation`` on the first case, one after the other
   (the first one, untimed, loads the model and caches the image; so every timed request is the
   cached path an annotator's second click takes).
2. **training**: ``POST /train/segmentation`` (many epochs), wait until the job reports its first
   iteration, then the same requests again while it trains; then ``DELETE /train/``.

The sides differ only in ``LABELLOOP_JOBS__NICE``: 10 (the default: job processes step back)
and 0 (jobs compete with the server as equals, which is what a job runner without it does).
Both processes use all cores (torch's default threads), so on a small machine they do compete.

Printed: p50 / p95 / max latency per side and phase, and the slowdown (training p50 / idle p50)
of each side. The sides alternate ``--rounds`` times so that a drift of the machine's load hits
both alike.

Usage::

    python bench/contention.py [--cases 6] [--requests 8] [--rounds 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import requests

if __package__ in (None, ""):  # run as ``python bench/contention.py``
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._util import interrupt_on_sigterm, render_table, scratch_dir, serve, summarize  # noqa: E402
from bench.infer import MODEL, app_code, infer, publish_weights, save_weights, upload_image  # noqa: E402
from labelloop.imaging import write_volume  # noqa: E402
from labelloop.sampledata.synthetic import generate_case  # noqa: E402

SHAPE = (128, 128, 64)
SPACING = (3.0, 3.0, 4.0)
ENV = {
    "LABELLOOP_JOBS__WORKERS": "1",
    "LABELLOOP_JOBS__AUTOTRAIN_AFTER": "0",
    "LABELLOOP_JOBS__PROMOTION": "manual",
    "LABELLOOP_JOBS__RESCORE": "false",
    "LABELLOOP_JOBS__POLL_INTERVAL_S": "0.1",
    "LABELLOOP_INFERENCE__WARMUP": "false",
    "LABELLOOP_INFERENCE__DEVICE": "cpu",
}
NICE = (10, 0)


@dataclass
class Side:
    """Latencies (seconds) of one niceness, over all rounds."""

    nice: int
    idle: list[float] = field(default_factory=list)
    training: list[float] = field(default_factory=list)


def write_cohort(folder: Path, count: int) -> list[tuple[str, Path, Path]]:
    folder.mkdir(parents=True, exist_ok=True)
    cases = []
    for i in range(count):
        image, label, affine = generate_case(np.random.default_rng([0, i]), SHAPE, SPACING)
        image_path, label_path = folder / f"case{i}.nii.gz", folder / f"case{i}_label.nii.gz"
        write_volume(image_path, image, affine)
        write_volume(label_path, label, affine)
        cases.append((f"case{i}", image_path, label_path))
    return cases


def save_final(session: requests.Session, url: str, image_id: str, path: Path) -> None:
    with open(path, "rb") as f:
        response = session.put(
            f"{url}/datastore/label",
            params={"image": image_id, "tag": "final"},
            files={"label": (path.name, f, "application/octet-stream")},
            timeout=120,
        )
    response.raise_for_status()


def wait_first_iteration(session: requests.Session, url: str, job_id: str, timeout_s: float = 600) -> float:
    """Seconds from now until the job's progress shows an iteration (it is training then)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        task = session.get(f"{url}/train/{job_id}", timeout=10).json()
        if task["status"] not in ("SUBMITTED", "RUNNING"):
            raise RuntimeError(f"the train job ended before training: {task}")
        if int(task.get("progress", {}).get("current_iteration", 0)) >= 1:
            return time.monotonic() - started
        time.sleep(0.2)
    raise TimeoutError("the train job did not start training")


def timed(session: requests.Session, url: str, image_id: str, pid: int, count: int) -> list[float]:
    return [infer(session, url, image_id, pid).seconds for _ in range(count)]


def run_side(side: Side, root: Path, cases: list[tuple[str, Path, Path]], weights: Path, count: int) -> None:
    data = root / f"data-nice{side.nice}-{len(side.idle)}"
    env = {**ENV, "LABELLOOP_JOBS__NICE": str(side.nice)}
    with serve(data, env=env) as server, requests.Session() as http:
        for image_id, image, label in cases:
            upload_image(http, server.url, image_id, image)
            save_final(http, server.url, image_id, label)
        publish_weights(http, server.url, weights)
        target = cases[0][0]
        pid = server.process.pid
        infer(http, server.url, target, pid)  # loads the model, caches the image
        side.idle += timed(http, server.url, target, pid, count)
        response = http.post(
            f"{server.url}/train/{MODEL}", json={"max_epochs": 1000, "early_stop_patience": -1}, timeout=60
        )
        response.raise_for_status()
        job_id = response.json()["id"]
        ready = wait_first_iteration(http, server.url, job_id)
        side.training += timed(http, server.url, target, pid, count)
        still = http.get(f"{server.url}/train/{job_id}", timeout=10).json()["status"]
        http.delete(f"{server.url}/train/", timeout=60).raise_for_status()
    if still != "RUNNING":
        raise RuntimeError(f"the train job was {still}, not RUNNING, while inference was timed")
    print(
        f"  nice {side.nice:>2}: idle p50 {statistics.median(side.idle[-count:]) * 1000:.0f} ms, "
        f"training p50 {statistics.median(side.training[-count:]) * 1000:.0f} ms "
        f"(first iteration {ready:.1f} s after POST /train)",
        flush=True,
    )


def row(name: str, values: list[float]) -> list[str]:
    stats = summarize(values)
    return [name, str(stats.n), *(f"{v * 1000:.0f}" for v in (stats.p50, stats.p95, stats.max))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--cases", type=int, default=6, help="training cases (each with a final label)")
    parser.add_argument("--requests", type=int, default=8, help="timed inference requests per phase")
    parser.add_argument("--rounds", type=int, default=2, help="times each side runs (alternating)")
    args = parser.parse_args(argv)
    interrupt_on_sigterm()
    sides = [Side(n) for n in NICE]
    with scratch_dir("labelloop-contention-") as root:
        cases = write_cohort(root / "cases", args.cases)
        weights = root / "weights.pt"
        save_weights(app_code(), weights)
        for k in range(args.rounds):
            for side in sides if k % 2 == 0 else reversed(sides):
                run_side(side, root, cases, weights, args.requests)
    rows = []
    for side in sides:
        rows.append(row(f"nice {side.nice}, idle", side.idle))
        rows.append(row(f"nice {side.nice}, training", side.training))
    print(f"\nPOST /infer/{MODEL} on a cached {SHAPE} image, ms (p95: nearest rank)\n")
    print(render_table(["job niceness, phase", "n", "p50", "p95", "max"], rows))
    print()
    for side in sides:
        slowdown = statistics.median(side.training) / statistics.median(side.idle)
        print(f"slowdown while training, nice {side.nice:>2}: {slowdown:.2f}x (training p50 / idle p50)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
