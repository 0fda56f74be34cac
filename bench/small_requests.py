"""Small requests: labelloop against a minimal FastAPI app doing the same I/O, in the same run.

Targets (issue 14, item 1), on SQLite and on PostgreSQL, at 20 images and flat to 100,000:

==========================  =================
``GET /info/``              median <= 1.5 ms
``GET /datastore/?output=stats``  median <= 1.5 ms
``PUT /datastore/label``    median <= 8 ms
16 parallel label saves     wall <= 100 ms (median over rounds)
==========================  =================

and, reported without a target, 8 parallel ``POST /activelearning/random`` (next sample).

Sides, both started here as separate processes on 127.0.0.1 and driven by the same client code
(one keep-alive ``requests.Session`` per simulated user):

- **labelloop**: ``labelloop serve`` with its defaults (its job worker included) except automatic
  training (``LABELLOOP_JOBS__AUTOTRAIN_AFTER=0``: the hundreds of saves below would otherwise queue
  trainings that load the machine while it is measured; ``bench/contention.py`` measures that) on the sample
  data's 20 synthetic CT cases (128 x 128 x 64, ``labelloop sample-data --synthetic 20``); a
  label save uploads that image's ground-truth label (NIfTI, ~17 kB), which labelloop checks
  against the image's grid, stores as a new version and acknowledges only once it is on disk.
- **baseline**: ``bench/_requests_baseline.py``: FastAPI + uvicorn, the same database kind,
  the same answers' shapes (``/info/`` returns labelloop's own document), and the same
  durability (the label file ``fsync``-ed, the row committed), nothing else.

The sides alternate ``--rounds`` times (ABAB...) so that the machine's drift hits both alike.
With ``--large N`` (default 100,000; 0 skips) both sides run again on a catalogue of N images
(labelloop's filled in bulk as ``bench/datastore.py`` does, every row pointing at one small
32 x 32 x 16 image), and the report says whether labelloop's medians stay flat (at most 1.5x
those at 20 images).

PostgreSQL: ``--postgres`` starts a throwaway server with ``fsync`` on (the project's own
``tests/support/postgres.py``: Debian's binaries, 127.0.0.1), or ``--database-url`` names one
(each side gets a fresh database schema there, dropped afterwards).

Usage::

    python bench/small_requests.py [--quick] [--postgres] [--rounds 6] [--samples 50] [--large 100000]
                             [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import requests

if __package__ in (None, ""):  # run as ``python bench/small_requests.py``
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._util import (  # noqa: E402
    REPO,
    free_port,
    interrupt_on_sigterm,
    ms,
    render_table,
    scratch_dir,
    serve,
    summarize,
)
from bench.datastore import fresh_database, image_id, populate, write_files  # noqa: E402
from labelloop.db import Database  # noqa: E402

TARGETS_S = {"info": 0.0015, "stats": 0.0015, "save": 0.008, "save16": 0.100}
FLAT_FACTOR = 1.5
OPERATIONS = {
    "info": "GET /info/",
    "stats": "GET /datastore/?output=stats",
    "save": "PUT /datastore/label",
    "save16": "16 parallel label saves (wall)",
    "next8": "8 parallel next samples (wall)",
}
SYNTHETIC = 20


@dataclass
class Cohort:
    """The images a side serves and the label file each save of an image uploads."""

    ids: list[str]
    labels: dict[str, bytes]


@dataclass
class Side:
    name: str
    url: str
    times: dict[str, list[float]] = field(default_factory=dict)


class Client:
    """The measured calls; every answer is checked (a failed request stops the benchmark)."""

    def __init__(self, url: str, cohort: Cohort) -> None:
        self.url = url
        self.cohort = cohort
        self.sessions = [requests.Session() for _ in range(16)]
        self.lock = threading.Lock()

    def close(self) -> None:
        for s in self.sessions:
            s.close()

    @staticmethod
    def _ok(response: requests.Response, what: str) -> None:
        if response.status_code != 200:
            raise RuntimeError(f"{what}: HTTP {response.status_code}: {response.text[:400]}")

    def info(self, k: int = 0) -> None:
        self._ok(self.sessions[k].get(f"{self.url}/info/"), "info")

    def stats(self, k: int = 0) -> None:
        r = self.sessions[k].get(f"{self.url}/datastore/", params={"output": "stats"})
        self._ok(r, "stats")

    def save(self, image: str, k: int = 0) -> None:
        r = self.sessions[k].put(
            f"{self.url}/datastore/label",
            params={"image": image, "tag": "final"},
            files={"label": ("label.nii.gz", self.cohort.labels[image], "application/octet-stream")},
            data={"params": json.dumps({"client_id": f"bench-{k}"})},
        )
        self._ok(r, f"label save of {image}")

    def next_sample(self, k: int) -> None:
        r = self.sessions[k].post(f"{self.url}/activelearning/random", json={"client_id": f"annotator-{k}"})
        self._ok(r, "next sample")


def _timed(call: Callable[[], None], samples: int, warmup: int = 3) -> list[float]:
    for _ in range(warmup):
        call()
    out = []
    for _ in range(samples):
        start = time.perf_counter()
        call()
        out.append(time.perf_counter() - start)
    return out


def _parallel(calls: list[Callable[[], None]]) -> float:
    """Wall time from a common start until the last of ``calls`` (one thread each) answered."""
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(calls) + 1)

    def run(call: Callable[[], None]) -> None:
        barrier.wait()
        try:
            call()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(c,)) for c in calls]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    if errors:
        raise RuntimeError(f"{len(errors)} parallel requests failed: {errors[0]}")
    return wall


def measure_round(client: Client, samples: int, parallel_rounds: int) -> dict[str, list[float]]:
    ids = client.cohort.ids
    counter = iter(range(10**9))
    out: dict[str, list[float]] = {
        "info": _timed(client.info, samples),
        "stats": _timed(client.stats, samples),
        "save": _timed(lambda: client.save(ids[next(counter) % len(ids)]), samples),
        "save16": [],
        "next8": [],
    }
    for r in range(parallel_rounds + 1):  # the first round warms 16 connections up, untimed
        wall = _parallel([partial(client.save, ids[(r * 16 + k) % len(ids)], k) for k in range(16)])
        if r:
            out["save16"].append(wall)
    for r in range(parallel_rounds + 1):
        wall = _parallel([partial(client.next_sample, k) for k in range(8)])
        if r:
            out["next8"].append(wall)
    return out


# ------------------------------------------------------------------ the two sides


def _wait_up(url: str, process: subprocess.Popen[bytes], log: Path, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the baseline exited with {process.returncode}:\n{log.read_text()[-2000:]}")
        try:
            if requests.get(f"{url}/info/", timeout=2).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.05)
    raise TimeoutError("the baseline did not come up")


@contextmanager
def baseline(work: Path, database_url: str, info: dict[str, Any], ids: list[str]) -> Iterator[str]:
    work.mkdir(parents=True, exist_ok=True)
    (work / "info.json").write_text(json.dumps(info))
    (work / "images.json").write_text(json.dumps(ids))
    port = free_port()
    log = work / "baseline.log"
    args = [
        sys.executable,
        str(REPO / "bench" / "_requests_baseline.py"),
        "--data-dir",
        str(work / "data"),
        "--database-url",
        database_url,
        "--info",
        str(work / "info.json"),
        "--images",
        str(work / "images.json"),
        "--port",
        str(port),
    ]
    with open(log, "wb") as out:
        process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_up(url, process, log)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def sample_cohort(work: Path) -> tuple[Path, Cohort]:
    studies = work / "studies"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "labelloop.cli",
            "sample-data",
            "--out",
            str(studies),
            "--synthetic",
            str(SYNTHETIC),
        ],
        check=True,
        capture_output=True,
        cwd=REPO,
    )
    ids = sorted(p.name.removesuffix(".nii.gz") for p in studies.glob("*.nii.gz"))
    labels = {i: (studies / "groundtruth" / f"{i}.nii.gz").read_bytes() for i in ids}
    return studies, Cohort(ids, labels)


@dataclass
class Scenario:
    database: str  # "sqlite" or "postgresql"
    images: int
    sides: dict[str, Side]


def run_scenario(
    work: Path, database: str, pg_url: str | None, large: int, rounds: int, samples: int, parallel: int
) -> Scenario:
    print(f"\n== {database}, {large or SYNTHETIC:,} images", flush=True)
    with ExitStack() as stack:
        data_dir = work / "labelloop"
        data_dir.mkdir(parents=True)
        env: dict[str, str] = {"LABELLOOP_JOBS__AUTOTRAIN_AFTER": "0"}
        if large:
            files = write_files(work / "src")
            url = stack.enter_context(fresh_database(data_dir, pg_url))
            db = Database(url)
            try:
                db.migrate()
                populate(db, data_dir, files, large)
            finally:
                db.dispose()
            # Saves go to images without a label in the bulk-filled catalogue (every 5th has one).
            ids = [image_id(i) for i in range(1, 400) if i % 5]
            cohort = Cohort(ids, {i: files.label_bytes for i in ids})
            all_ids = [image_id(i) for i in range(large)]
        else:
            studies, cohort = sample_cohort(work)
            env["LABELLOOP_STUDIES"] = str(studies)
            url = stack.enter_context(fresh_database(data_dir, pg_url))
            all_ids = cohort.ids
        server = stack.enter_context(serve(data_dir, database_url=url if pg_url else None, env=env))
        info = requests.get(f"{server.url}/info/", timeout=10).json()
        base_url = stack.enter_context(fresh_database(work / "baseline", pg_url)) if pg_url else None
        (work / "baseline").mkdir(exist_ok=True)
        base_db = base_url or f"sqlite:///{(work / 'baseline' / 'baseline.db').resolve()}"
        base = stack.enter_context(baseline(work / "baseline", base_db, info, all_ids))
        sides = {"labelloop": Side("labelloop", server.url), "baseline": Side("baseline", base)}
        clients = {name: Client(side.url, cohort) for name, side in sides.items()}
        try:
            for r in range(rounds):
                for name in ("labelloop", "baseline") if r % 2 == 0 else ("baseline", "labelloop"):
                    got = measure_round(clients[name], samples, parallel)
                    for op, values in got.items():
                        sides[name].times.setdefault(op, []).extend(values)
                print(
                    f"   round {r + 1}/{rounds}: "
                    + ", ".join(
                        f"{op} {ms(statistics.median(sides['labelloop'].times[op]))}"
                        f"/{ms(statistics.median(sides['baseline'].times[op]))}"
                        for op in OPERATIONS
                    )
                    + " ms (labelloop/baseline)",
                    flush=True,
                )
        finally:
            for c in clients.values():
                c.close()
    return Scenario(database, large or SYNTHETIC, sides)


# ------------------------------------------------------------------ report


def report(scenarios: list[Scenario]) -> bool:
    ok = True
    for sc in scenarios:
        rows = []
        for op, title in OPERATIONS.items():
            ours = summarize(sc.sides["labelloop"].times[op])
            theirs = summarize(sc.sides["baseline"].times[op])
            target = TARGETS_S.get(op)
            verdict = "-"
            if target is not None:
                passed = ours.p50 <= target
                ok &= passed
                verdict = f"{'PASS' if passed else 'FAIL'} (<= {ms(target)})"
            rows.append(
                [
                    title,
                    f"{ms(ours.p50)} ({ms(ours.p95)})",
                    f"{ms(theirs.p50)} ({ms(theirs.p95)})",
                    f"{ours.p50 / theirs.p50:.2f}x",
                    verdict,
                ]
            )
        print(f"\n{sc.database}, {sc.images:,} images: median (p95) ms")
        print(render_table(["request", "labelloop", "baseline", "ratio", "target"], rows))
    small = {sc.database: sc for sc in scenarios if sc.images == SYNTHETIC}
    for sc in scenarios:
        ref = small.get(sc.database)
        if sc.images == SYNTHETIC or ref is None:
            continue
        growth = {
            op: statistics.median(sc.sides["labelloop"].times[op])
            / statistics.median(ref.sides["labelloop"].times[op])
            for op in OPERATIONS
        }
        flat = all(g <= FLAT_FACTOR for op, g in growth.items() if op in TARGETS_S)
        ok &= flat
        print(
            f"\n{sc.database}: {sc.images:,} vs {SYNTHETIC} images, labelloop's medians grow "
            + ", ".join(f"{op} {g:.2f}x" for op, g in growth.items())
            + f": {'PASS' if flat else 'FAIL'} (flat: <= {FLAT_FACTOR}x)"
        )
    return ok


def as_json(scenarios: list[Scenario]) -> dict[str, Any]:
    return {
        "targets_s": TARGETS_S,
        "scenarios": [
            {
                "database": sc.database,
                "images": sc.images,
                "sides": {
                    name: {
                        op: {"p50_s": summarize(v).p50, "p95_s": summarize(v).p95, "n": len(v)}
                        for op, v in side.times.items()
                    }
                    for name, side in sc.sides.items()
                },
            }
            for sc in scenarios
        ],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=6, help="Alternations of the two sides (6)")
    parser.add_argument("--samples", type=int, default=50, help="Timed requests per operation per round (50)")
    parser.add_argument("--parallel-rounds", type=int, default=5, help="Parallel bursts per round (5)")
    parser.add_argument(
        "--large", type=int, default=100_000, help="Catalogue size of the flatness run (0: none)"
    )
    parser.add_argument(
        "--postgres", action="store_true", help="Also run on a throwaway PostgreSQL (fsync on)"
    )
    parser.add_argument("--database-url", help="Also run on this PostgreSQL (fresh schemas, dropped after)")
    parser.add_argument("--quick", action="store_true", help="2 rounds of 20 samples, no large catalogue")
    parser.add_argument("--json", type=Path, help="Write the numbers here")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.samples, args.parallel_rounds, args.large = 2, 20, 3, 0
    interrupt_on_sigterm()
    scenarios: list[Scenario] = []
    with ExitStack() as stack:
        pg_url = args.database_url
        if args.postgres and not pg_url:
            from tests.support.postgres import start_postgres

            server, stop = start_postgres(durable=True)
            stack.callback(stop)
            pg_url = server.create_database(migrated=False)
        databases: list[tuple[str, str | None]] = [("sqlite", None)]
        if pg_url:
            databases.append(("postgresql", pg_url))
        try:
            for name, url in databases:
                for large in (0, args.large) if args.large else (0,):
                    with scratch_dir("labelloop-bench-requests-") as work:
                        scenarios.append(
                            run_scenario(
                                work, name, url, large, args.rounds, args.samples, args.parallel_rounds
                            )
                        )
        except KeyboardInterrupt:
            print("\ninterrupted; temporary files and servers were cleaned up", file=sys.stderr)
            return 130
    ok = report(scenarios)
    if args.json:
        args.json.write_text(json.dumps(as_json(scenarios), indent=2))
    print(f"\n{'all targets met' if ok else 'some targets missed'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
