"""Memory: RSS and PSS of every process of a ``labelloop serve`` tree at rest, during an inference, and
at a training's peak, against the targets (tree at rest <= 450 MB, training peak <= 1.7 GB).

Data: a synthetic cohort of ``--cases`` cases (default 63; ``--quick``: 8), each 128x128x64 voxels
of 3x3x4 mm as ``labelloop sample-data`` draws them (``bench/train.py``'s ``write_cohort``), every
case with a ``final`` label, and an active ``segmentation`` version (the app's UNet, random weights,
seed 0). They are uploaded over HTTP to a first server, which is then stopped: what is measured is a
second ``labelloop serve`` started on that data dir, as a deployed server restarts on its data.

The server runs in a child process of its own session with the production settings except what a
benchmark must pin: one worker process (the default), autotrain off, promotion ``manual``,
rescoring off, CPU. Inference warm-up is on (the default; ``--no-warmup`` turns it off, to see what
loading models at start costs at rest and what it saves on the first inference).

A thread reads every process of the server's tree (the server, its worker, the job process and any
process those start) every ``--interval`` seconds (default 0.05): RSS from ``/proc/<pid>/statm``,
and every ``--pss-interval`` seconds (default 0.25; reading it costs milliseconds per large process)
PSS from ``/proc/<pid>/smaps_rollup`` (PSS shares each shared page among the processes mapping it,
so the tree's PSS sum counts torch's libraries once; the RSS sum counts them in every process). The
tree's figure at a moment is the sum over its processes at that sample.

Phases:

1. **rest**: once the worker registered and the tree's RSS has been steady for 2 s (warm-up done),
   the mean of each process over ``--rest-s`` seconds (default 5).
2. **inference**: ``POST /infer/segmentation`` on an image the server has not read yet (cold image
   cache; the first request of the server: with ``--no-warmup`` it loads the model), then on a
   second one (warm model): the latency of each, and the tree's peak during them. Then rest again
   (the server now holds the model and the cached images).
3. **training**: ``POST /train/segmentation`` with ``bench/train.py``'s options (from scratch, seed
   0, CPU) and ``max_epochs=1`` (``--epochs``), polled every 0.5 s until DONE: the tree's peak (RSS
   sum and PSS sum, with each process's share at that moment), each process's own peak, and the
   job's wall time from its row and its log (claim to finish; ``train()`` to the epoch's end; the
   epoch itself).

``--train-first`` trains right after the rest phase, on a server that has not run an inference
yet (as ``bench/train.py``'s job side does), and infers after.

The verdicts read both sums. PSS is the fair one (the issue's figures are PSS), but it also splits
shared pages with any other process of the machine that maps the same files (another server's
torch, say), so on a busy machine it reads lower; the RSS sum counts every shared page in every
process and is the upper bound.

Usage::

    python bench/memory.py [--cases 63] [--epochs 1] [--quick] [--no-warmup] [--train-first]
        [--skip-training] [--json PATH]

``--quick`` writes 8 cases and trains on them (a minute or two instead of several); its training
peak is not the 63-case figure the target is for, so its verdict says so.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as ``python bench/memory.py``
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._train_common import (  # noqa: E402
    MODEL,
    SERVER_ENV,
    app_code,
    config_for,
    first_line,
    parse_epoch,
    read_job_log,
    save_active_weights,
    write_cohort,
)
from bench._train_job import Http, wait_for_worker  # noqa: E402
from bench._util import (  # noqa: E402
    interrupt_on_sigterm,
    load_average,
    proc_cmdline,
    processes,
    render_table,
    scratch_dir,
    serve,
)
from labelloop.db import Database  # noqa: E402

MB = 1024**2
REST_TARGET = 450 * MB  # the whole tree at rest
TRAIN_TARGET = int(1.7 * 1024**3)  # the tree's peak during a 63-label, 1-epoch training (MONAI Label 0.8.5)
TARGET_CASES = 63
#: The server's environment: production defaults except what a benchmark pins (see the docstring).
ENV = {
    k: v
    for k, v in SERVER_ENV.items()
    if k not in ("LABELLOOP_INFERENCE__WARMUP", "LABELLOOP_JOBS__POLL_INTERVAL_S")
}
PAGE = os.sysconf("SC_PAGE_SIZE")


# ------------------------------------------------------------------ reading /proc


def rss_bytes(pid: int) -> int | None:
    """Resident set size of ``pid`` (``/proc/<pid>/statm``), bytes; ``None`` once it is gone."""
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return None


def pss_bytes(pid: int) -> int | None:
    """Proportional set size of ``pid`` (``/proc/<pid>/smaps_rollup``), bytes; ``None`` if unreadable."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    return None


def role_of(pid: int) -> str:
    """``server``, ``worker`` or ``job`` from the command line; else ``other``."""
    cmdline = proc_cmdline(pid)
    for marker, role in ((" serve ", "server"), (" worker ", "worker"), (" run-job ", "job")):
        if marker in cmdline + " ":
            return role
    return "other"


def descendants(root: int) -> list[int]:
    """``root`` and every process below it."""
    children: dict[int, list[int]] = {}
    for pid, ppid in processes():
        children.setdefault(ppid, []).append(pid)
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


@dataclass
class Proc:
    """One process's figures, bytes."""

    pid: int
    role: str
    rss: int
    pss: int | None


@dataclass
class Sample:
    t: float  # time.time()
    procs: list[Proc]

    @property
    def rss(self) -> int:
        return sum(p.rss for p in self.procs)

    @property
    def pss(self) -> int | None:
        """The tree's PSS sum; ``None`` in the samples that read RSS only."""
        values = [p.pss for p in self.procs]
        return (
            None if not values or any(v is None for v in values) else sum(v for v in values if v is not None)
        )


class TreeSampler:
    """Samples every process of ``root``'s tree every ``interval`` s on a thread, while it runs.

    The tree is listed again every ``rescan_s`` s, so a job process shows up within that time.
    """

    def __init__(
        self, root: int, interval: float = 0.05, pss_s: float = 0.25, rescan_s: float = 0.25
    ) -> None:
        self.root = root
        self.interval = interval
        self.pss_s = pss_s
        self.rescan_s = rescan_s
        self.samples: list[Sample] = []
        self.roles: dict[int, str] = {}
        self.tick_s: list[float] = []  # what each sample cost this thread
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="memory-sampler", daemon=True)

    def start(self) -> TreeSampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        pids: list[int] = []
        last_scan = last_pss = 0.0
        while not self._stop.is_set():
            begun = time.monotonic()
            if begun - last_scan >= self.rescan_s:
                pids = descendants(self.root)
                for pid in pids:
                    if pid not in self.roles:
                        self.roles[pid] = role_of(pid)
                last_scan = begun
            # smaps_rollup walks the whole address space (milliseconds for a large process): less often
            with_pss = begun - last_pss >= self.pss_s
            last_pss = begun if with_pss else last_pss
            procs = []
            for pid in pids:
                rss = rss_bytes(pid)
                if rss is not None:
                    procs.append(
                        Proc(pid, self.roles.get(pid, "other"), rss, pss_bytes(pid) if with_pss else None)
                    )
            with self._lock:
                self.samples.append(Sample(time.time(), procs))
            self.tick_s.append(time.monotonic() - begun)
            self._stop.wait(self.interval)

    def since(self, t0: float, t1: float | None = None) -> list[Sample]:
        with self._lock:
            return [s for s in self.samples if s.t >= t0 and (t1 is None or s.t <= t1)]

    def wait_steady(self, window_s: float = 2.0, tolerance: int = 2 * MB, timeout_s: float = 120.0) -> None:
        """Until the tree's RSS sum varied by less than ``tolerance`` over the last ``window_s``."""
        deadline = time.monotonic() + timeout_s
        time.sleep(window_s)
        while time.monotonic() < deadline:
            recent = [s.rss for s in self.since(time.time() - window_s)]
            if recent and max(recent) - min(recent) < tolerance:
                return
            time.sleep(0.2)
        print(f"   (the tree's RSS did not settle within {timeout_s:.0f} s; measuring anyway)", flush=True)


# ------------------------------------------------------------------ summaries


@dataclass
class ProcFigures:
    """One process over a phase, MB."""

    pid: int
    role: str
    rss_mb: float
    pss_mb: float | None


@dataclass
class Phase:
    """A phase's figures: the tree (MB) and each process (mean at rest; share at the tree's peak)."""

    name: str
    tree_rss_mb: float
    tree_pss_mb: float | None
    procs: list[ProcFigures]
    #: each process's own peak over the phase (it need not fall at the tree's peak), MB
    proc_peak_rss_mb: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    samples: int = 0


def _mb(value: float | None) -> float | None:
    return None if value is None else round(value / MB, 1)


def _label(procs: list[Proc], pid: int, role: str) -> str:
    same = sorted(p.pid for p in procs if p.role == role)
    return role if len(same) <= 1 else f"{role} {same.index(pid) + 1}"


def at_rest(name: str, samples: list[Sample]) -> Phase:
    """Mean of each process and of the tree over ``samples``."""
    if not samples:
        raise RuntimeError(f"no memory samples in phase {name}")
    by_pid: dict[int, list[Proc]] = {}
    for s in samples:
        for p in s.procs:
            by_pid.setdefault(p.pid, []).append(p)
    last = samples[-1].procs
    procs = []
    for pid, series in sorted(by_pid.items()):
        pss = [p.pss for p in series if p.pss is not None]
        procs.append(
            ProcFigures(
                pid,
                _label(last, pid, series[0].role) if any(p.pid == pid for p in last) else series[0].role,
                _mb(sum(p.rss for p in series) / len(series)) or 0.0,
                _mb(sum(pss) / len(pss)) if pss else None,
            )
        )
    tree_pss = [s.pss for s in samples if s.pss is not None]
    return Phase(
        name,
        _mb(sum(s.rss for s in samples) / len(samples)) or 0.0,
        _mb(sum(tree_pss) / len(tree_pss)) if tree_pss else None,
        procs,
        seconds=round(samples[-1].t - samples[0].t, 2),
        samples=len(samples),
    )


def at_peak(name: str, samples: list[Sample]) -> Phase:
    """The tree's peaks over ``samples``: the RSS sum's (every sample) and the PSS sum's (the samples that
    read PSS), with each process's RSS and PSS at the PSS peak, and each process's own RSS peak."""
    if not samples:
        raise RuntimeError(f"no memory samples in phase {name}")
    with_pss = [s for s in samples if s.pss is not None]
    peak = max(with_pss, key=lambda s: s.pss or 0) if with_pss else max(samples, key=lambda s: s.rss)
    own: dict[str, float] = {}
    for s in samples:
        for p in s.procs:
            role = _label(s.procs, p.pid, p.role)
            own[role] = max(own.get(role, 0.0), _mb(p.rss) or 0.0)
    return Phase(
        name,
        _mb(max(s.rss for s in samples)) or 0.0,
        _mb(peak.pss),
        [
            ProcFigures(p.pid, _label(peak.procs, p.pid, p.role), _mb(p.rss) or 0.0, _mb(p.pss))
            for p in peak.procs
        ],
        proc_peak_rss_mb=own,
        seconds=round(samples[-1].t - samples[0].t, 2),
        samples=len(samples),
    )


# ------------------------------------------------------------------ the phases


@dataclass
class Inference:
    first_s: float
    second_s: float
    peak: Phase


@dataclass
class Training:
    peak: Phase
    claim_to_finish_s: float  # the row's started_at -> finished_at
    train_call_to_epoch_end_s: float  # job.log "training ..." -> "epoch 1/1 ..."
    epoch_s: float  # the trainer's own "(X s)"
    post_to_done_s: float  # client: POST /train -> DONE seen
    job_peak_hwm_mb: float | None  # the job process's own VmHWM just before it ended, if read


def infer(http: Http, image_id: str) -> float:
    files = {"params": (None, json.dumps({}), "application/json")}
    started = time.perf_counter()
    response = http.session.post(
        f"{http.url}/infer/{MODEL}", params={"image": image_id}, files=files, timeout=600
    )
    _ = response.content
    seconds = time.perf_counter() - started
    if response.status_code != 200:
        raise RuntimeError(
            f"POST /infer/{MODEL}?image={image_id}: {response.status_code} {response.text[:500]}"
        )
    return seconds


def run_inference(http: Http, sampler: TreeSampler, ids: list[str]) -> Inference:
    t0 = time.time()
    first = infer(http, ids[0])
    second = infer(http, ids[1])
    samples = sampler.since(t0)
    return Inference(round(first, 3), round(second, 3), at_peak("inference", samples))


def _hwm_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError, IndexError):
        return None
    return None


def run_training(http: Http, sampler: TreeSampler, data_dir: Path, epochs: int) -> Training:
    t0 = time.time()
    submitted = http.check(
        http.session.post(f"{http.url}/train/{MODEL}", json=config_for(epochs)), "POST /train"
    )
    job_id = str(submitted["id"])
    hwm: float | None = None
    while True:
        task: dict[str, Any] = http.check(http.session.get(f"{http.url}/train/{job_id}"), "poll")
        if task["status"] not in ("SUBMITTED", "RUNNING"):
            break
        for pid, role in list(sampler.roles.items()):
            if role == "job":
                hwm = _hwm_mb(pid) or hwm
        time.sleep(0.5)
    done = time.time()
    deadline = (
        time.monotonic() + 60.0
    )  # the job's process exits after its row is DONE: not into the next phase
    while time.monotonic() < deadline and any(role_of(pid) == "job" for pid in descendants(sampler.root)):
        time.sleep(0.1)
    if task["status"] != "DONE":
        raise RuntimeError(f"the train job ended {task['status']}: {json.dumps(task)[:2000]}")
    samples = sampler.since(t0)
    lines = read_job_log(data_dir / "jobs" / job_id / "job.log")
    epoch_lines = [(line, e) for line in lines if (e := parse_epoch(line.message))]
    training = first_line(lines, rf"^training {MODEL} on ")
    db = Database(_database_url(data_dir))
    try:
        from labelloop.jobs import JobQueue

        row = JobQueue(db).get(job_id)
    finally:
        db.dispose()
    assert row.started_at is not None and row.finished_at is not None
    return Training(
        at_peak("training", samples),
        round(row.finished_at - row.started_at, 2),
        round(epoch_lines[-1][0].ts - training.ts, 2),
        round(sum(e.seconds for _, e in epoch_lines), 2),
        round(done - t0, 2),
        hwm,
    )


def _database_url(data_dir: Path) -> str:
    return f"sqlite:///{(data_dir / 'labelloop.db').resolve()}"


# ------------------------------------------------------------------ report


def _f(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def print_phase(phase: Phase, peak: bool = False) -> None:
    """Each process and the tree; for a peak, the processes at the tree's PSS peak."""
    rows = [[p.role, str(p.pid), _f(p.rss_mb), _f(p.pss_mb)] for p in phase.procs]
    if peak:
        rows.append(["tree at PSS peak", "", _f(sum(p.rss_mb for p in phase.procs)), _f(phase.tree_pss_mb)])
        rows.append(["tree RSS peak", "", _f(phase.tree_rss_mb), ""])
    else:
        rows.append(["tree", "", _f(phase.tree_rss_mb), _f(phase.tree_pss_mb)])
    print(render_table(["process", "pid", "RSS MB", "PSS MB"], rows))
    if phase.proc_peak_rss_mb:
        own = ", ".join(f"{k} {v:.0f}" for k, v in phase.proc_peak_rss_mb.items())
        print(f"   each process's own RSS peak, MB: {own}")


def verdict(what: str, value: float | None, target: int, note: str = "") -> str:
    if value is None:
        return f"{what}: not measured"
    ok = value <= target / MB
    return f"{what}: {value:.0f} MB (target <= {target / MB:.0f} MB): {'PASS' if ok else 'FAIL'}{note}"


@dataclass
class Results:
    cases: int
    epochs: int
    warmup: bool
    train_first: bool = False
    rest: Phase | None = None
    inference: Inference | None = None
    rest_after_inference: Phase | None = None
    training: Training | None = None
    sampler_tick_ms: float | None = None
    verdicts: list[str] = field(default_factory=list)


def report(res: Results) -> None:
    if res.rest is not None:
        print(f"\n== at rest (mean over {res.rest.seconds:.1f} s, {res.rest.samples} samples)")
        print_phase(res.rest)
    if res.inference is not None:
        inf = res.inference
        print(
            f"\n== inference: first request {inf.first_s:.2f} s, second {inf.second_s:.2f} s; "
            "the tree's peak:"
        )
        print_phase(inf.peak, peak=True)
    if res.rest_after_inference is not None:
        print(f"\n== at rest after the inferences (mean over {res.rest_after_inference.seconds:.1f} s)")
        print_phase(res.rest_after_inference)
    if res.training is not None:
        tr = res.training
        when = "before the inferences" if res.train_first else "after the inferences"
        print(f"\n== training ({res.cases} cases, {res.epochs} epoch(s), {when}): the tree's peak:")
        print_phase(tr.peak, peak=True)
        print(
            f"   the job process's VmHWM (its own RSS peak, read by the kernel) {_f(tr.job_peak_hwm_mb)} MB"
        )
        print(
            f"   wall: claim -> finished {tr.claim_to_finish_s:.1f} s, train() -> epoch end "
            f"{tr.train_call_to_epoch_end_s:.1f} s, epoch {tr.epoch_s:.1f} s; "
            f"POST -> DONE {tr.post_to_done_s:.1f} s"
        )
    if res.sampler_tick_ms is not None:
        print(
            f"\nsampler: {res.sampler_tick_ms:.1f} ms per sample (mean); cpus {os.cpu_count()}, "
            f"load {load_average()}"
        )
    res.verdicts = []
    if res.rest is not None:
        res.verdicts.append(verdict("tree at rest, RSS sum", res.rest.tree_rss_mb, REST_TARGET))
        res.verdicts.append(verdict("tree at rest, PSS sum", res.rest.tree_pss_mb, REST_TARGET))
    if res.training is not None:
        note = (
            ""
            if res.cases == TARGET_CASES and res.epochs == 1
            else (
                f" ({res.cases} cases, {res.epochs} epoch(s): the target is for "
                f"{TARGET_CASES} cases, 1 epoch)"
            )
        )
        res.verdicts.append(
            verdict("training peak, RSS sum", res.training.peak.tree_rss_mb, TRAIN_TARGET, note)
        )
        res.verdicts.append(
            verdict("training peak, PSS sum", res.training.peak.tree_pss_mb, TRAIN_TARGET, note)
        )
    print()
    for line in res.verdicts:
        print(line)


# ------------------------------------------------------------------ main


def prepare(work: Path, cases: int) -> tuple[Path, list[str]]:
    """Write the cohort, upload it with an active version to a first server (stopped after)."""
    print(f"writing {cases} synthetic cases (128x128x64 voxels of 3x3x4 mm)...", flush=True)
    cohort = write_cohort(work / "cohort", cases, 0)
    active = work / "active.pt"
    save_active_weights(app_code(), active)
    data_dir = work / "data"
    data_dir.mkdir()
    print("uploading them and an active segmentation version...", flush=True)
    with serve(data_dir, env={**ENV, "LABELLOOP_JOBS__WORKERS": "0"}) as server:
        http = Http(server.url)
        try:
            http.upload(cohort, active)
        finally:
            http.close()
    return data_dir, [item.image_id for item in cohort.items]


def train_phase(
    args: argparse.Namespace, res: Results, http: Http, sampler: TreeSampler, data_dir: Path
) -> None:
    print(f"training {MODEL}, {res.epochs} epoch(s) on {res.cases} cases...", flush=True)
    res.training = run_training(http, sampler, data_dir, res.epochs)
    print(f"   peak: tree RSS {res.training.peak.tree_rss_mb:.0f} MB", flush=True)


def measure(args: argparse.Namespace, res: Results, work: Path) -> None:
    data_dir, ids = prepare(work, res.cases)
    env = dict(ENV)
    if not res.warmup:
        env["LABELLOOP_INFERENCE__WARMUP"] = "false"
    print(f"starting the server (inference warm-up {'on' if res.warmup else 'off'})...", flush=True)
    started = time.time()
    with serve(data_dir, env=env) as server:
        sampler = TreeSampler(server.process.pid, interval=args.interval, pss_s=args.pss_interval).start()
        http = Http(server.url)
        try:
            db = Database(_database_url(data_dir))
            try:
                wait_for_worker(db, started - 1.0)
            finally:
                db.dispose()
            print(f"   answering and its worker registered after {time.time() - started:.1f} s", flush=True)
            sampler.wait_steady()
            t0 = time.time()
            time.sleep(args.rest_s)
            res.rest = at_rest("rest", sampler.since(t0))
            print(
                f"   at rest: tree RSS {res.rest.tree_rss_mb:.0f} MB, PSS {_f(res.rest.tree_pss_mb)} MB",
                flush=True,
            )
            if args.train_first and not args.skip_training:
                train_phase(args, res, http, sampler, data_dir)
            res.inference = run_inference(http, sampler, ids)
            print(
                f"   inference: {res.inference.first_s:.2f} s then {res.inference.second_s:.2f} s", flush=True
            )
            sampler.wait_steady(timeout_s=30.0)
            t0 = time.time()
            time.sleep(min(args.rest_s, 3.0))
            res.rest_after_inference = at_rest("rest after inference", sampler.since(t0))
            if not args.train_first and not args.skip_training:
                train_phase(args, res, http, sampler, data_dir)
        finally:
            http.close()
            sampler.stop()
            if sampler.tick_s:
                res.sampler_tick_ms = round(1000 * sum(sampler.tick_s) / len(sampler.tick_s), 2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--cases", type=int, default=None, help=f"Synthetic cases, all labelled ({TARGET_CASES})"
    )
    parser.add_argument("--epochs", type=int, default=1, help="Epochs of the training (1)")
    parser.add_argument(
        "--quick", action="store_true", help="8 cases (the training verdict is then indicative)"
    )
    parser.add_argument(
        "--no-warmup", action="store_true", help="Start the server with inference warm-up off"
    )
    parser.add_argument("--skip-training", action="store_true", help="Only rest and inference")
    parser.add_argument(
        "--train-first",
        action="store_true",
        help="Train right after rest (a server that has not run inference yet), then infer",
    )
    parser.add_argument(
        "--rest-s", type=float, default=5.0, help="Seconds the rest figures are averaged over (5)"
    )
    parser.add_argument("--interval", type=float, default=0.05, help="Seconds between RSS samples (0.05)")
    parser.add_argument("--pss-interval", type=float, default=0.25, help="Seconds between PSS samples (0.25)")
    parser.add_argument("--json", type=Path, help="Also write the figures to this JSON file")
    args = parser.parse_args(argv)
    cases = args.cases if args.cases is not None else (8 if args.quick else TARGET_CASES)
    if cases < 2:
        parser.error("--cases must be at least 2 (one training and one validation case)")
    if args.epochs < 1:
        parser.error("--epochs must be at least 1")
    interrupt_on_sigterm()
    res = Results(cases=cases, epochs=args.epochs, warmup=not args.no_warmup, train_first=args.train_first)
    code = 0
    with scratch_dir("labelloop-bench-memory-") as work:
        try:
            measure(args, res, work)
        except KeyboardInterrupt:
            print("\ninterrupted; cleaning up the server and temporary files", file=sys.stderr)
            code = 130
    report(res)
    if args.json:
        args.json.write_text(json.dumps(asdict(res), indent=2))
        print(f"figures written to {args.json}")
    return code


if __name__ == "__main__":
    sys.exit(main())
