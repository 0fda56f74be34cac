"""Training: one epoch through the jobs system against the same loop run directly; first iteration; Dice.

Data: a synthetic cohort of ``--cases`` cases from ``generate_case`` (default 10, each
128x128x64 voxels of 3x3x4 mm, ``np.random.default_rng([seed, i])`` as ``labelloop sample-data``
draws them), every case with a ``final`` label. Every side trains the radiology app's
``segmentation`` trainer (``SegmentationTrainer``, loaded with ``load_app`` as the server loads
it) with the same options (``CONFIG``: from scratch, seed 0, CPU, no early stopping) on the same
split (``split_items`` by image id, checked against the training set the job records); equal
epoch losses show they did the same work.

After one untimed warm-up epoch in this process, each repeat (``--repeats``, default 3; the
order rotates job/fresh/warm, fresh/warm/job, warm/job/fresh so that a drift of the machine's
load hits every side alike) runs three 1-epoch trainings:

1. **job**, through the jobs system: ``labelloop serve`` in a child process (fresh start on the
   same data dir, one worker process, ``LABELLOOP_JOBS__POLL_INTERVAL_S=0.1``, autotrain off,
   promotion ``manual`` and rescoring off so that no scoring jobs are queued around the run,
   inference warm-up off). The cohort (images, final labels) and an *active* model version (the app's UNet,
   random weights, seed 0) are uploaded over HTTP once, so that the job evaluates the new
   and the active version as a retraining run does. Then ``POST /train/segmentation`` with
   ``max_epochs=1`` and ``GET /train/{id}`` every 50 ms until the first iteration shows in
   ``progress``, every 0.5 s during the epoch, every 50 ms again from the run's final report to
   DONE. The server is stopped before anything else runs.
2. **fresh**: ``trainer.train(LocalTrainContext, data, CONFIG, None)`` in a fresh interpreter
   (this file with ``--child-direct``): the first training of its process, as in a job process,
   without the jobs system around it.
3. **warm**: the same call in this process (no server running), which has trained before: the
   brief's "same loop run directly in one process".

Timestamps are taken on each ``report`` and ``log`` call of the trainer; CPU seconds (user +
system, all threads) of every process involved are read from ``/proc`` every 0.1 s.

What each number includes (the same on every side):

* **epoch**: the trainer's own ``epoch 1/1 ... (X s)`` log line: the training pass over the
  cached cases + sliding-window validation + best-weights and checkpoint files + the epoch's
  report (in the job, progress goes to its database row at most twice a second). No dataset
  caching, no process start, no evaluation. Its ratio is the overhead target (<= 1.1).
* **train() to epoch end**: from the call of ``train`` (job: its ``training ...`` log line,
  written just before the call) to the epoch's log line: network set-up + ``CacheDataset``
  caching + the epoch as above.
* **whole run**: job: ``POST /train`` to the row's ``finished_at`` (server clock, same
  machine); direct: the ``train`` call to its return. The job adds the HTTP submit, the queue
  claim, a process start (Python, torch, MONAI, the app, the services), gathering the training
  set, evaluation of the new and the active version through the inference path, and publishing.

The job's phases come from its row (``created_at``, ``started_at``, ``finished_at``), the
millisecond timestamps of its own log (``<data>/jobs/<id>/job.log``: the ``training``, epoch,
``published`` and outcome lines) and the polled ``progress``. Two parts are not observable from
outside and are re-measured separately, marked so in the table: the job process's start-up
(a probe process with the server's interpreter and environment runs the same imports,
``load_app``, ``build_services`` and ``gather_training_set`` on the same data dir) and the
split between evaluation and publishing (``evaluate`` of both versions' weights on the same
validation cases and ``Registry.publish`` into a scratch registry, timed in this process).

Dice: the direct trainer in this process for ``--epochs`` epochs (same options), validation Dice
per epoch from its reports, epochs per minute on this CPU. Skip it with ``--skip-dice``.

Usage::

    python bench/train.py [--cases 10] [--epochs 20] [--repeats 3] [--skip-dice] [--threads N]

``--threads`` sets the same torch thread count in this process and (``OMP_NUM_THREADS``) in the
fresh interpreter, the server and its job processes; by default none sets one, as in production.
On a small machine shared with other work, ``--threads 1`` gives far steadier figures: two
OpenMP threads on two busy cores wait on each other at every parallel region.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import requests

if __package__ in (None, ""):  # run as ``python bench/train.py``
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._util import (  # noqa: E402
    APP_DIR,
    REPO,
    interrupt_on_sigterm,
    render_table,
    scratch_dir,
    serve,
)
from labelloop.datastore import BlobStore  # noqa: E402
from labelloop.db import Database  # noqa: E402
from labelloop.imaging import write_volume  # noqa: E402
from labelloop.jobs import JobQueue  # noqa: E402
from labelloop.jobs.models import workers  # noqa: E402
from labelloop.jobs.training import evaluate  # noqa: E402
from labelloop.registry import Registry  # noqa: E402
from labelloop.sampledata.synthetic import case_id, generate_case  # noqa: E402
from labelloop.tasks import LocalTrainContext, TrainData, TrainItem, load_app, split_items  # noqa: E402

MODEL = "segmentation"
TARGET = 1.1  # jobs-system epoch / direct epoch
#: The options of every run, both sides (``max_epochs`` is set per run).
CONFIG: dict[str, Any] = {
    "val_split": 0.2,
    "learning_rate": 1e-3,
    "train_batch_size": 2,
    "samples_per_image": 2,
    "early_stop_patience": -1,
    "pretrained": False,
    "device": "cpu",
    "seed": 0,
}
SERVER_ENV = {
    "LABELLOOP_JOBS__WORKERS": "1",
    "LABELLOOP_JOBS__POLL_INTERVAL_S": "0.1",
    "LABELLOOP_JOBS__AUTOTRAIN_AFTER": "0",
    "LABELLOOP_JOBS__PROMOTION": "manual",
    "LABELLOOP_JOBS__RESCORE": "false",
    "LABELLOOP_INFERENCE__WARMUP": "false",
    "LABELLOOP_INFERENCE__DEVICE": "cpu",
}
FAST_POLL_S = 0.05
SLOW_POLL_S = 0.5
JOB_TIMEOUT_S = 3 * 3600.0

_LOG_LINE = re.compile(
    r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3})\] \[(\d+)\] \[(\w+)\] \(([^)]*)\) - (.*)$"
)
_EPOCH_LINE = re.compile(r"^epoch (\d+)/(\d+) loss ([-\d.naif]+)(?: val dice ([\d.]+))? \(([\d.]+) s\)$")

# A fresh interpreter that does what ``labelloop run-job`` does before it trains: the job
# process's start-up, timed from inside (argv: app folder, data dir, val_split).
_PROBE = """
import time
t0 = time.time()
import json, sys
from pathlib import Path
import labelloop.cli
from labelloop.settings import Settings
t_cli = time.time()
from labelloop.jobs import JobQueue, execute_job
from labelloop.server import build_services
t_modules = time.time()
from labelloop.tasks import load_app, split_items
settings = Settings(app=Path(sys.argv[1]), data_dir=Path(sys.argv[2]))
load_app(settings.app)
t_app = time.time()
services = build_services(settings)
t_services = time.time()
from labelloop.jobs.training import gather_training_set
items = gather_training_set(services.datastore)
split_items(items, float(sys.argv[3]))
t_gather = time.time()
import torch
print(json.dumps({"t0": t0, "cli": t_cli - t0, "modules": t_modules - t_cli, "app": t_app - t_modules,
                  "services": t_services - t_app, "gather": t_gather - t_services, "items": len(items),
                  "threads": torch.get_num_threads(), "interop": torch.get_num_interop_threads()}))
"""


# ------------------------------------------------------------------ small helpers


def load1() -> float:
    return os.getloadavg()[0]


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def secs(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def log_time(stamp: str, millis: str) -> float:
    """A log line's local ``YYYY-mm-dd HH:MM:SS`` + ms as seconds since the epoch."""
    return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S").timestamp() + int(millis) / 1000


@dataclass(frozen=True)
class LogLine:
    ts: float
    logger: str
    message: str


def read_job_log(path: Path) -> list[LogLine]:
    lines = []
    for raw in path.read_text(errors="replace").splitlines():
        match = _LOG_LINE.match(raw)
        if match:
            lines.append(LogLine(log_time(match[1], match[2]), match[5], match[6]))
    return lines


def first_line(lines: Sequence[LogLine], pattern: str) -> LogLine:
    for line in lines:
        if re.search(pattern, line.message):
            return line
    raise RuntimeError(f"no log line matches {pattern!r}")


@dataclass(frozen=True)
class EpochLine:
    epoch: int
    loss: float
    val_dice: float | None
    seconds: float


def parse_epoch(message: str) -> EpochLine | None:
    match = _EPOCH_LINE.match(message)
    if not match:
        return None
    return EpochLine(int(match[1]), float(match[3]), float(match[4]) if match[4] else None, float(match[5]))


# ------------------------------------------------------------------ the cohort


@dataclass(frozen=True)
class Cohort:
    items: list[TrainItem]  # local files, ids as uploaded
    data: TrainData  # split_items(items, val_split): the split the job makes


def write_cohort(folder: Path, n: int, seed: int, val_split: float) -> Cohort:
    folder.mkdir(parents=True, exist_ok=True)
    items = []
    for i in range(n):
        image_id = case_id(i)
        image, label, affine = generate_case(np.random.default_rng([seed, i]))
        image_path, label_path = folder / f"{image_id}.nii.gz", folder / f"{image_id}_label.nii.gz"
        write_volume(image_path, image, affine)
        write_volume(label_path, label, affine)
        sha = hashlib.sha256(label_path.read_bytes()).hexdigest()
        items.append(TrainItem(image_id, image_path, label_path, 1, sha))
    return Cohort(items, split_items(items, val_split))


def read_cohort(folder: Path, val_split: float) -> Cohort:
    """The cohort ``write_cohort`` wrote into ``folder`` (for the fresh-process direct run)."""
    items = []
    for label_path in sorted(folder.glob("*_label.nii.gz")):
        image_id = label_path.name.removesuffix("_label.nii.gz")
        sha = hashlib.sha256(label_path.read_bytes()).hexdigest()
        items.append(TrainItem(image_id, folder / f"{image_id}.nii.gz", label_path, 1, sha))
    return Cohort(items, split_items(items, val_split))


@dataclass
class AppCode:
    trainer: Any  # SegmentationTrainer
    infer_task: Any  # SegmentationTask
    labels: dict[str, int]


def app_code() -> AppCode:
    """The app as the server (and a job process) loads it."""
    app = load_app(APP_DIR)
    return AppCode(app.train_tasks[MODEL], app.infer_tasks[MODEL], dict(app.labels))


def save_active_weights(code: AppCode, path: Path) -> None:
    """The app's segmentation UNet, random weights (seed 0): the 'active version' a retrain replaces."""
    import torch

    networks = importlib.import_module(f"labelloop_app_{APP_DIR.name}.networks")
    torch.manual_seed(0)
    torch.save(networks.unet(1, len(code.labels)).state_dict(), str(path))


# ------------------------------------------------------------------ CPU time of processes

_TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str] | None:
    """Fields of ``/proc/<pid>/stat`` after the command name (``[0]`` is the state, ``[1]`` the ppid)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of every thread of ``pid`` so far (10 ms ticks)."""
    fields = _stat(pid)
    return None if fields is None else (int(fields[11]) + int(fields[12])) / _TICK


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


class CpuSampler:
    """CPU seconds of this process and (given the server's pid) the server, its worker and the job
    process, sampled every ``interval`` s by a thread, on the ``time.time`` clock.

    The job's phases are known only afterwards (from its log), so CPU time at a phase boundary is
    interpolated between the two samples around it.
    """

    def __init__(self, server_pid: int | None = None, interval: float = 0.1) -> None:
        self.server_pid = server_pid
        self.interval = interval
        self.samples: dict[str, list[tuple[float, float]]] = {}
        self._pids: dict[str, int] = {"bench": os.getpid()}
        if server_pid is not None:
            self._pids["server"] = server_pid
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cpu-sampler", daemon=True)

    def __enter__(self) -> CpuSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _scan(self) -> None:
        """Find the server's worker (its child) and the job (the worker's child) once they exist."""
        if self.server_pid is None or ("worker" in self._pids and "job" in self._pids):
            return
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            fields = _stat(int(entry.name))
            if fields is None:
                continue
            ppid = int(fields[1])
            if ppid == self.server_pid and "worker" not in self._pids:
                if " worker " in _cmdline(int(entry.name)):
                    self._pids["worker"] = int(entry.name)
            elif "worker" in self._pids and ppid == self._pids["worker"] and "job" not in self._pids:
                if " run-job " in _cmdline(int(entry.name)):
                    self._pids["job"] = int(entry.name)

    def _run(self) -> None:
        last_scan = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            if now - last_scan >= 0.5:
                self._scan()
                last_scan = now
            stamp = time.time()
            for role, pid in list(self._pids.items()):
                value = cpu_seconds(pid)
                if value is not None:
                    self.samples.setdefault(role, []).append((stamp, value))
            self._stop.wait(self.interval)

    def at(self, role: str, t: float) -> float | None:
        """CPU seconds of ``role`` at ``t``, interpolated; clamped to the first and last sample."""
        series = self.samples.get(role)
        if not series:
            return None
        if t <= series[0][0]:
            return series[0][1]
        for (t0, v0), (t1, v1) in zip(series, series[1:], strict=False):
            if t0 <= t <= t1:
                return v0 + (v1 - v0) * ((t - t0) / (t1 - t0) if t1 > t0 else 0.0)
        return series[-1][1]

    def between(self, role: str, t0: float, t1: float) -> float | None:
        a, b = self.at(role, t0), self.at(role, t1)
        return None if a is None or b is None else b - a


# ------------------------------------------------------------------ direct


class TimedContext(LocalTrainContext):
    """``LocalTrainContext`` that timestamps (``time.time``) every report and log line."""

    def __init__(self, workdir: Path, device: Any = "cpu", echo: bool = False) -> None:
        super().__init__(workdir, device)
        self.report_times: list[float] = []
        self.line_times: list[float] = []
        self.line_loads: list[float] = []
        self.echo = echo
        self.t0 = time.time()

    def report(self, stats: Mapping[str, Any]) -> None:
        self.report_times.append(time.time())
        super().report(stats)

    def log(self, message: str) -> None:
        self.line_times.append(time.time())
        self.line_loads.append(load1())
        super().log(message)
        if self.echo:
            print(f"   [{time.time() - self.t0:7.1f} s] {message}", flush=True)


@dataclass
class DirectRun:
    total_s: float  # train() call -> return
    setup_s: float  # train() call -> epoch start (network, CacheDataset)
    first_iter_s: float  # train() call -> first report (iteration 1 done)
    epoch_s: float  # the trainer's "(X s)"
    to_epoch_end_s: float  # train() call -> epoch log line
    loss: float
    val_dice: float | None
    load: tuple[float, float]
    epoch_cpu: float | None = None  # CPU seconds of this process during the epoch
    total_cpu: float | None = None  # during the whole train() call
    threads: int = 0  # torch.get_num_threads() of the process


def run_direct(code: AppCode, cohort: Cohort, workdir: Path) -> DirectRun:
    import torch

    config = {**CONFIG, "max_epochs": 1}
    ctx = TimedContext(workdir)
    before = load1()
    with CpuSampler() as cpu:
        start = time.time()
        code.trainer.train(ctx, cohort.data, config, None)
        end = time.time()
    epochs = [(t, e) for t, m in zip(ctx.line_times, ctx.lines, strict=True) if (e := parse_epoch(m))]
    if len(epochs) != 1:
        raise RuntimeError(f"expected one epoch line, got {ctx.lines}")
    t_line, epoch = epochs[0]
    return DirectRun(
        total_s=end - start,
        setup_s=t_line - epoch.seconds - start,
        first_iter_s=ctx.report_times[0] - start,
        epoch_s=epoch.seconds,
        to_epoch_end_s=t_line - start,
        loss=epoch.loss,
        val_dice=epoch.val_dice,
        load=(before, load1()),
        epoch_cpu=cpu.between("bench", t_line - epoch.seconds, t_line),
        total_cpu=cpu.between("bench", start, end),
        threads=torch.get_num_threads(),
    )


def run_direct_fresh(cohort_dir: Path, workdir: Path, env: dict[str, str]) -> DirectRun:
    """``run_direct`` in a fresh interpreter (this file with ``--child-direct``): the first training
    of a process, as in a job process, without the jobs system around it."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("LABELLOOP_")}
    full_env.update(env)
    out = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child-direct", str(cohort_dir), str(workdir)],
        env=full_env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    if out.returncode != 0:
        raise RuntimeError(f"the fresh-process direct run failed:\n{out.stderr[-3000:]}")
    body = json.loads(out.stdout.strip().splitlines()[-1])
    body["load"] = tuple(body["load"])
    return DirectRun(**body)


def child_direct(cohort_dir: Path, workdir: Path) -> int:
    """``--child-direct``: one direct 1-epoch run; its ``DirectRun`` as JSON on the last stdout line."""
    code = app_code()
    run = run_direct(code, read_cohort(cohort_dir, float(CONFIG["val_split"])), workdir)
    print(json.dumps(asdict(run)))
    return 0


# ------------------------------------------------------------------ through the jobs system


@dataclass
class Probe:
    """The job process's start-up, re-measured in a fresh interpreter (seconds)."""

    interpreter: float  # spawn -> first line of the script runs
    cli: float  # import labelloop.cli, settings
    modules: float  # import labelloop.jobs, labelloop.server (FastAPI, SQLAlchemy, ...)
    app: float  # load_app: torch, MONAI, the app package
    services: float  # build_services: database (migrate), datastore, registry, inference
    gather: float  # gather_training_set + split_items
    threads: int
    interop: int

    @property
    def total(self) -> float:
        return self.interpreter + self.cli + self.modules + self.app + self.services + self.gather


def probe_startup(data_dir: Path, env: dict[str, str]) -> Probe:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("LABELLOOP_")}
    full_env.update(env)
    spawned = time.time()
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, str(APP_DIR), str(data_dir), str(CONFIG["val_split"])],
        env=full_env,
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    body = json.loads(out.stdout.strip().splitlines()[-1])
    return Probe(
        interpreter=body["t0"] - spawned,
        cli=body["cli"],
        modules=body["modules"],
        app=body["app"],
        services=body["services"],
        gather=body["gather"],
        threads=int(body["threads"]),
        interop=int(body["interop"]),
    )


@dataclass
class InProcess:
    """Evaluation and publishing, re-measured in this process (seconds)."""

    eval_new: float
    eval_active: float
    publish: float


def measure_after_training(
    code: AppCode, cohort: Cohort, new: Path, active: Path, scratch: Path, stats: dict[str, Any]
) -> InProcess:
    import torch

    device = torch.device("cpu")
    t0 = time.perf_counter()
    evaluate(code.infer_task, new, cohort.data.val, device)
    t1 = time.perf_counter()
    evaluate(code.infer_task, active, cohort.data.val, device)
    t2 = time.perf_counter()
    scratch.mkdir(parents=True, exist_ok=True)
    db = Database(f"sqlite:///{(scratch / 'registry.db').resolve()}")
    try:
        db.migrate()
        registry = Registry(db, BlobStore(scratch))
        t3 = time.perf_counter()
        registry.publish(
            MODEL,
            new,
            source="train",
            user="bench",
            activate=False,
            metrics={"val_mean_dice": 0.0},
            params={**CONFIG, "max_epochs": 1},
            training_set=cohort.data.records,
            train_stats=stats,
            duration_s=1.0,
        )
        t4 = time.perf_counter()
    finally:
        db.dispose()
    return InProcess(eval_new=t1 - t0, eval_active=t2 - t1, publish=t4 - t3)


@dataclass
class JobRun:
    job_id: str
    post: float  # client clock, just before POST /train
    created: float  # the row's created_at
    claimed: float  # the row's started_at (the worker's claim)
    training_line: float  # job.log "training ..." (just before trainer.train)
    epoch_line: float  # job.log "epoch 1/1 ..."
    epoch_s: float  # the trainer's "(X s)"
    published_line: float  # job.log "... version N published (train)"
    outcome_line: float  # job.log "model ... version N: ..."
    finished: float  # the row's finished_at
    first_iter_seen: float  # client: first poll with progress.current_iteration >= 1
    first_iter_job: float | None  # progress start_ts + current_time of that poll (whole seconds)
    done_seen: float  # client: first poll with DONE
    polls: int
    loss: float
    val_dice: float | None  # the trainer's validation in the epoch
    eval_new_dice: float | None  # the job's evaluation of the new version
    eval_active_dice: float | None
    version_created: float
    duration_s: float | None  # the version's duration_s (train() call -> publish)
    val_ids: list[str]
    train_ids: list[str]
    details: list[str]
    load: tuple[float, float]
    probe: Probe | None = None
    inproc: InProcess | None = None
    #: CPU seconds during the epoch, and during POST -> finished_at, of: the job process, the
    #: server, its worker, this benchmark (the polling client)
    epoch_cpu: dict[str, float | None] = field(default_factory=dict)
    whole_cpu: dict[str, float | None] = field(default_factory=dict)

    # derived phases
    @property
    def submit_s(self) -> float:
        return self.created - self.post

    @property
    def claim_s(self) -> float:
        return self.claimed - self.created

    @property
    def start_s(self) -> float:
        return self.training_line - self.claimed

    @property
    def setup_s(self) -> float:
        return self.epoch_line - self.epoch_s - self.training_line

    @property
    def after_s(self) -> float:
        return self.outcome_line - self.epoch_line

    @property
    def finish_s(self) -> float:
        return self.finished - self.outcome_line

    @property
    def total_s(self) -> float:
        return self.finished - self.post

    @property
    def to_epoch_end_s(self) -> float:
        return self.epoch_line - self.training_line

    @property
    def first_iter_s(self) -> float:
        return self.first_iter_seen - self.post


class Http:
    def __init__(self, url: str) -> None:
        self.url = url
        self.session = requests.Session()

    def check(self, response: requests.Response, what: str) -> Any:
        if response.status_code != 200:
            raise RuntimeError(f"{what}: HTTP {response.status_code}: {response.text[:800]}")
        return response.json()

    def upload(self, cohort: Cohort, active: Path) -> None:
        for item in cohort.items:
            self.check(
                self.session.put(
                    f"{self.url}/datastore/image",
                    params={"image": item.image_id},
                    files={"file": (item.image.name, item.image.read_bytes(), "application/octet-stream")},
                ),
                f"upload {item.image_id}",
            )
            self.check(
                self.session.put(
                    f"{self.url}/datastore/label",
                    params={"image": item.image_id, "tag": "final"},
                    files={"label": (item.label.name, item.label.read_bytes(), "application/octet-stream")},
                    data={"params": json.dumps({"client_id": "bench"})},
                ),
                f"final label {item.image_id}",
            )
        self.check(
            self.session.put(
                f"{self.url}/model/{MODEL}",
                files={"file": ("active.pt", active.read_bytes(), "application/octet-stream")},
            ),
            "active model version",
        )
        stats = self.check(self.session.get(f"{self.url}/datastore/", params={"output": "stats"}), "stats")
        if stats.get("total") != len(cohort.items) or stats.get("completed") != len(cohort.items):
            raise RuntimeError(f"the server sees {stats}, expected {len(cohort.items)} final labels")

    def close(self) -> None:
        self.session.close()


def wait_for_worker(db: Database, since: float, timeout_s: float = 180.0) -> None:
    """Until the server's worker process registered (it imports torch and the app first)."""
    from sqlalchemy import select

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with db.read() as conn:
            row = conn.execute(
                select(workers.c.id).where(workers.c.started_at >= since, workers.c.stopped_at.is_(None))
            ).first()
        if row is not None:
            return
        time.sleep(0.2)
    raise TimeoutError("the server's worker process did not register")


@dataclass
class Polled:
    first_iter_seen: float
    first_iter_job: float | None
    done_seen: float
    polls: int
    task: dict[str, Any]


def poll_until_done(http: Http, job_id: str) -> Polled:
    first_iter: float | None = None
    first_iter_job: float | None = None
    polls = 0
    deadline = time.monotonic() + JOB_TIMEOUT_S
    interval = FAST_POLL_S
    while time.monotonic() < deadline:
        task: dict[str, Any] = http.check(http.session.get(f"{http.url}/train/{job_id}"), "poll")
        seen = time.time()
        polls += 1
        progress = task.get("progress") or {}
        if first_iter is None and int(progress.get("current_iteration", 0)) >= 1:
            first_iter = seen
            if "start_ts" in progress and "current_time" in progress:
                h, m, s = (int(x) for x in str(progress["current_time"]).split(":")[-3:])
                first_iter_job = float(progress["start_ts"]) + 3600 * h + 60 * m + s
            interval = SLOW_POLL_S
        if "total_time" in progress:
            interval = FAST_POLL_S  # the run's final report: evaluation and publishing follow
        if task["status"] not in ("SUBMITTED", "RUNNING"):
            if task["status"] != "DONE":
                raise RuntimeError(f"the train job ended {task['status']}: {json.dumps(task)[:2000]}")
            if first_iter is None:
                raise RuntimeError("the job finished without a visible first iteration")
            return Polled(first_iter, first_iter_job, seen, polls, task)
        time.sleep(interval)
    raise TimeoutError(f"the train job did not finish in {JOB_TIMEOUT_S:.0f} s")


def run_job(
    code: AppCode,
    cohort: Cohort,
    data_dir: Path,
    active: Path,
    env: dict[str, str],
    first: bool,
    work: Path,
) -> JobRun:
    url = f"sqlite:///{(data_dir / 'labelloop.db').resolve()}"
    started = time.time()
    with serve(data_dir, env=env) as server:
        http = Http(server.url)
        try:
            if first:
                http.upload(cohort, active)
            db = Database(url)
            try:
                wait_for_worker(db, started - 1.0)
            finally:
                db.dispose()
            time.sleep(1.0)  # let the server and the worker settle
            before = load1()
            config = {**CONFIG, "max_epochs": 1}
            with CpuSampler(server.process.pid) as cpu:
                post = time.time()
                job_id = str(
                    http.check(http.session.post(f"{server.url}/train/{MODEL}", json=config), "POST")["id"]
                )
                polled = poll_until_done(http, job_id)
            after = load1()
        finally:
            http.close()
    # The server is stopped: read the row, the version and the job's own log.
    db = Database(url)
    try:
        job = JobQueue(db).get(job_id)
        registry = Registry(db, BlobStore(data_dir))
        result = job.result if isinstance(job.result, dict) else {}
        version = registry.get(MODEL, int(result["model_version"]))
        active_version = registry.active(MODEL)
    finally:
        db.dispose()
    if active_version is None:
        raise RuntimeError("no active version: the upload did not publish one")
    lines = read_job_log(data_dir / "jobs" / job_id / "job.log")
    epoch_lines = [(line, e) for line in lines if (e := parse_epoch(line.message))]
    if len(epoch_lines) != 1:
        raise RuntimeError(f"expected one epoch line in the job's log, got {[e for _, e in epoch_lines]}")
    epoch_line, epoch = epoch_lines[0]
    metrics = dict(result.get("metrics") or {})
    assert job.started_at is not None and job.finished_at is not None
    run = JobRun(
        job_id=job_id,
        post=post,
        created=job.created_at,
        claimed=job.started_at,
        training_line=first_line(lines, rf"^training {MODEL} on ").ts,
        epoch_line=epoch_line.ts,
        epoch_s=epoch.seconds,
        published_line=first_line(lines, rf"^model {MODEL} version {version.version} published").ts,
        outcome_line=first_line(lines, rf"^model {MODEL} version {version.version}: ").ts,
        finished=job.finished_at,
        first_iter_seen=polled.first_iter_seen,
        first_iter_job=polled.first_iter_job,
        done_seen=polled.done_seen,
        polls=polled.polls,
        loss=epoch.loss,
        val_dice=epoch.val_dice,
        eval_new_dice=metrics.get("val_mean_dice"),
        eval_active_dice=metrics.get("previous_val_mean_dice"),
        version_created=version.created_at,
        duration_s=version.duration_s,
        val_ids=sorted(r["image"] for r in version.training_set if r.get("split") == "val"),
        train_ids=sorted(r["image"] for r in version.training_set if r.get("split") == "train"),
        details=list(polled.task.get("details") or []),
        load=(before, after),
    )
    epoch_start = run.epoch_line - run.epoch_s
    run.epoch_cpu = {
        role: cpu.between(role, epoch_start, run.epoch_line) for role in ("job", "server", "worker", "bench")
    }
    run.whole_cpu = {
        role: cpu.between(role, run.post, run.finished) for role in ("server", "worker", "bench")
    }
    job_series = cpu.samples.get("job") or [(0.0, float("nan"))]
    run.whole_cpu["job"] = job_series[-1][1]  # the process's CPU time at its last sample (from 0 at spawn)
    run.probe = probe_startup(data_dir, env)
    run.inproc = measure_after_training(
        code, cohort, version.path, active_version.path, work / f"scratch-{job_id[:8]}", job.progress
    )
    return run


# ------------------------------------------------------------------ Dice


@dataclass
class DiceEpoch:
    epoch: int
    loss: float
    train_dice: float | None
    val_dice: float | None
    seconds: float
    elapsed: float  # since the train() call, at the epoch's log line
    load: float


@dataclass
class DiceRun:
    epochs: list[DiceEpoch]
    total_s: float
    setup_s: float
    best: float | None
    best_epoch: int | None


def run_dice(code: AppCode, cohort: Cohort, epochs: int, workdir: Path) -> DiceRun:
    config = {**CONFIG, "max_epochs": epochs}
    ctx = TimedContext(workdir, echo=True)
    start = time.time()
    result = code.trainer.train(ctx, cohort.data, config, None)
    total = time.time() - start
    train_dice: dict[int, float | None] = {}
    for stats in ctx.reports:  # the last report of an epoch is its end-of-epoch report
        train_dice[int(stats["current_epoch"])] = (
            stats.get("train", {}).get("metrics", {}).get("train_mean_dice")
        )
    rows = []
    for t, message, load in zip(ctx.line_times, ctx.lines, ctx.line_loads, strict=True):
        e = parse_epoch(message)
        if e is not None:
            rows.append(
                DiceEpoch(e.epoch, e.loss, train_dice.get(e.epoch), e.val_dice, e.seconds, t - start, load)
            )
    if not rows:
        raise RuntimeError(f"no epoch finished: {ctx.lines}")
    best = result.metrics.get("val_mean_dice")
    best_epoch = result.metrics.get("best_epoch")
    return DiceRun(
        epochs=rows,
        total_s=total,
        setup_s=rows[0].elapsed - rows[0].seconds,
        best=best,
        best_epoch=int(best_epoch) if best_epoch else None,
    )


# ------------------------------------------------------------------ report


@dataclass
class Results:
    cases: int
    val_ids: list[str] = field(default_factory=list)  # the direct side's split
    n_train: int = 0
    jobs: list[JobRun] = field(default_factory=list)
    fresh: list[DirectRun] = field(default_factory=list)  # direct, in a fresh interpreter
    warm: list[DirectRun] = field(default_factory=list)  # direct, in this (warmed-up) process
    orders: list[str] = field(default_factory=list)
    dice: DiceRun | None = None


def pct(part: float, whole: float) -> str:
    return f"{100 * part / whole:.1f}%" if whole > 0 else "-"


def ratio(a: float | None, b: float | None, digits: int = 3) -> str:
    return f"{a / b:.{digits}f}" if a is not None and b else "-"


def med(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return median(present) if present else None


def report_runs(res: Results) -> list[str]:
    """The overhead tables; returns the verdict lines."""
    n = min(len(res.jobs), len(res.fresh), len(res.warm))
    if n == 0:
        return []
    jobs, fresh, warm = res.jobs[:n], res.fresh[:n], res.warm[:n]
    triples = list(zip(jobs, fresh, warm, strict=True))

    print()
    print("1. One epoch, wall seconds: the trainer's own 'epoch 1/1 ... (X s)' line (train pass over the")
    print("   cached cases + sliding-window validation + weights/checkpoint files + the epoch's report)")
    rows = []
    for i, (j, f, w) in enumerate(triples):
        rows.append(
            [
                str(i + 1),
                res.orders[i],
                secs(j.epoch_s, 1),
                secs(f.epoch_s, 1),
                secs(w.epoch_s, 1),
                ratio(j.epoch_s, w.epoch_s),
                ratio(j.epoch_s, f.epoch_s),
                ratio(f.epoch_s, w.epoch_s),
                f"{j.loss:.4f}/{f.loss:.4f}/{w.loss:.4f}",
                f"{j.load[0]:.1f}>{j.load[1]:.1f}",
                f"{f.load[0]:.1f}>{f.load[1]:.1f}",
                f"{w.load[0]:.1f}>{w.load[1]:.1f}",
            ]
        )
    ej, ef, ew = (median([r.epoch_s for r in side]) for side in (jobs, fresh, warm))
    rows.append(
        ["median", "", secs(ej, 1), secs(ef, 1), secs(ew, 1), ratio(ej, ew), ratio(ej, ef), ratio(ef, ew)]
        + [""] * 4
    )
    print(
        render_table(
            [
                "repeat",
                "order",
                "job",
                "fresh",
                "warm",
                "job/warm",
                "job/fresh",
                "fresh/warm",
                "loss job/fresh/warm",
                "load job",
                "load fresh",
                "load warm",
            ],
            rows,
        )
    )
    pair_w = median([j.epoch_s / w.epoch_s for j, _, w in triples])
    pair_f = median([j.epoch_s / f.epoch_s for j, f, _ in triples])
    print(
        "   job: through labelloop serve; fresh: the direct trainer in a fresh interpreter (the first\n"
        "   training of its process, like a job process); warm: the direct trainer in this process, which\n"
        "   ran an untimed warm-up epoch first. Ratios in the median row are ratios of the medians; the\n"
        f"   medians of the per-repeat ratios are job/warm {pair_w:.3f}, job/fresh {pair_f:.3f}. Identical\n"
        "   losses show the three did the same work. load: 1-minute load average before>after."
    )

    print()
    print("1a. One epoch, CPU seconds of the training process (user+system, all threads; /proc every")
    print("    0.1 s, interpolated at the epoch's start and end; the job's from its log's timestamps)")
    rows = []
    for i, (j, f, w) in enumerate(triples):
        cj = j.epoch_cpu.get("job")
        rows.append(
            [
                str(i + 1),
                secs(cj, 1),
                secs(f.epoch_cpu, 1),
                secs(w.epoch_cpu, 1),
                ratio(cj, w.epoch_cpu),
                ratio(cj, f.epoch_cpu),
                ratio(f.epoch_cpu, w.epoch_cpu),
            ]
        )
    cj_m = med([j.epoch_cpu.get("job") for j in jobs])
    cf_m, cw_m = med([f.epoch_cpu for f in fresh]), med([w.epoch_cpu for w in warm])
    rows.append(
        ["median", secs(cj_m, 1), secs(cf_m, 1), secs(cw_m, 1), ratio(cj_m, cw_m), ratio(cj_m, cf_m)]
        + [ratio(cf_m, cw_m)]
    )
    print(render_table(["repeat", "job", "fresh", "warm", "job/warm", "job/fresh", "fresh/warm"], rows))

    print()
    print("1b. CPU seconds beside the training: the jobs system's other processes, during the epoch and")
    print("    during the whole run (POST -> finished_at)")
    rows = []
    side_cores = []
    for i, (j, f, w) in enumerate(triples):
        side = [j.epoch_cpu.get(r) for r in ("server", "worker", "bench")]
        side_sum = sum(v for v in side if v is not None)
        side_cores.append(side_sum / j.epoch_s)
        rows.append(
            [
                str(i + 1),
                secs(j.epoch_cpu.get("job"), 1),
                *(secs(v) for v in side),
                f"{side_sum:.2f} ({pct(side_sum, j.epoch_cpu.get('job') or 0.0)})",
                f"{side_cores[-1]:.3f}",
                *(secs(j.whole_cpu.get(r), 1) for r in ("job", "server", "worker", "bench")),
                secs(f.total_cpu, 1),
                secs(w.total_cpu, 1),
            ]
        )
    print(
        render_table(
            [
                "repeat",
                "epoch: job",
                "server",
                "worker",
                "client",
                "beside the job",
                "cores",
                "whole: job",
                "server",
                "worker",
                "client",
                "fresh train()",
                "warm train()",
            ],
            rows,
        )
    )
    print(
        "   server: labelloop serve (answering the client's polls; housekeeping); worker: the worker\n"
        "   process watching the job (it reads the job's row every 0.1 s); client: this benchmark (polling,\n"
        "   sampling); cores: their CPU seconds per second of the epoch. whole: job = the job process's\n"
        "   whole life (imports, evaluation); fresh/warm train(): CPU of the direct runs' train() calls."
    )

    print()
    print(
        "2. Whole 1-epoch run, wall seconds (job: POST -> finished_at; direct: the train() call -> return),"
    )
    print("   train() call -> end of the epoch (set-up + caching + epoch), and set-up + caching alone")
    rows = []
    for i, (j, f, w) in enumerate(triples):
        rows.append(
            [
                str(i + 1),
                secs(j.total_s, 1),
                secs(f.total_s, 1),
                secs(w.total_s, 1),
                ratio(j.total_s, w.total_s, 2),
                ratio(j.total_s, f.total_s, 2),
                secs(j.to_epoch_end_s, 1),
                secs(f.to_epoch_end_s, 1),
                secs(w.to_epoch_end_s, 1),
                secs(j.setup_s),
                secs(f.setup_s),
                secs(w.setup_s),
            ]
        )
    tj, tf, tw = (median([r.total_s for r in side]) for side in (jobs, fresh, warm))
    xj, xf, xw = (median([r.to_epoch_end_s for r in side]) for side in (jobs, fresh, warm))
    sj, sf, sw = (median([r.setup_s for r in side]) for side in (jobs, fresh, warm))
    rows.append(
        [
            "median",
            secs(tj, 1),
            secs(tf, 1),
            secs(tw, 1),
            ratio(tj, tw, 2),
            ratio(tj, tf, 2),
            secs(xj, 1),
            secs(xf, 1),
            secs(xw, 1),
            secs(sj),
            secs(sf),
            secs(sw),
        ]
    )
    print(
        render_table(
            [
                "repeat",
                "whole: job",
                "fresh",
                "warm",
                "job/warm",
                "job/fresh",
                "to epoch end: job",
                "fresh",
                "warm",
                "set-up: job",
                "fresh",
                "warm",
            ],
            rows,
        )
    )

    print()
    print("3. Time to the first finished iteration, wall seconds")
    rows = []
    for i, (j, f, w) in enumerate(triples):
        own = j.first_iter_job - j.post if j.first_iter_job is not None else None
        rows.append(
            [
                str(i + 1),
                secs(j.first_iter_s),
                secs(own, 0),
                secs(j.first_iter_seen - j.training_line),
                secs(f.first_iter_s),
                secs(w.first_iter_s),
                secs(j.first_iter_seen - (j.epoch_line - j.epoch_s)),
                secs(f.first_iter_s - f.setup_s),
                secs(w.first_iter_s - w.setup_s),
            ]
        )
    rows.append(
        [
            "median",
            secs(median([j.first_iter_s for j in jobs])),
            "",
            secs(median([j.first_iter_seen - j.training_line for j in jobs])),
            secs(median([f.first_iter_s for f in fresh])),
            secs(median([w.first_iter_s for w in warm])),
            secs(median([j.first_iter_seen - (j.epoch_line - j.epoch_s) for j in jobs])),
            secs(median([f.first_iter_s - f.setup_s for f in fresh])),
            secs(median([w.first_iter_s - w.setup_s for w in warm])),
        ]
    )
    print(
        render_table(
            [
                "repeat",
                "job: POST->1st (poll)",
                "job's own*",
                "job: train()->1st",
                "fresh: train()->1st",
                "warm",
                "1st step: job",
                "fresh",
                "warm",
            ],
            rows,
        )
    )
    print(
        "   poll: the client polled GET /train/{id} every "
        f"{FAST_POLL_S * 1000:.0f} ms until progress.current_iteration >= 1 (+ a request's latency).\n"
        "   * the job's own: progress start_ts + current_time at that poll, minus the POST (both whole\n"
        "   seconds, truncated: up to 2 s early). 1st step: from the epoch's start to the first report."
    )

    print()
    print("4. Where the jobs system's time goes (median over repeats, wall seconds)")
    m = {
        "submit": median([j.submit_s for j in jobs]),
        "claim": median([j.claim_s for j in jobs]),
        "start": median([j.start_s for j in jobs]),
        "setup": median([j.setup_s for j in jobs]),
        "epoch": ej,
        "after": median([j.after_s for j in jobs]),
        "finish": median([j.finish_s for j in jobs]),
    }
    total = tj
    rows = [
        [
            "POST -> row created (HTTP, validation, insert)",
            secs(m["submit"], 3),
            pct(m["submit"], total),
            "row",
        ],
        ["queue claim (created_at -> started_at)", secs(m["claim"], 3), pct(m["claim"], total), "row"],
        [
            "claim -> 'training ...' line (job process start-up)",
            secs(m["start"]),
            pct(m["start"], total),
            "row+log",
        ],
    ]
    probes = [j.probe for j in jobs if j.probe is not None]
    if probes:
        parts = {
            "Python interpreter start": median([x.interpreter for x in probes]),
            "import labelloop.cli, settings": median([x.cli for x in probes]),
            "import labelloop.jobs, labelloop.server": median([x.modules for x in probes]),
            "load_app: torch, MONAI, the app": median([x.app for x in probes]),
            "build_services (migrate, datastore, registry)": median([x.services for x in probes]),
            "gather_training_set + split_items": median([x.gather for x in probes]),
        }
        rows += [[f"  . {name}", secs(v, 3 if v < 0.1 else 2), "", "probe"] for name, v in parts.items()]
        rows.append(
            [
                "  . rest (Popen, job row, heartbeat, log write)",
                secs(m["start"] - sum(parts.values())),
                "",
                "diff",
            ]
        )
    rows += [
        ["trainer set-up + CacheDataset caching", secs(m["setup"]), pct(m["setup"], total), "log"],
        ["epoch (train pass + validation + checkpoint)", secs(m["epoch"]), pct(m["epoch"], total), "log"],
        ["epoch line -> outcome line (evaluate, publish)", secs(m["after"]), pct(m["after"], total), "log"],
    ]
    inprocs = [j.inproc for j in jobs if j.inproc is not None]
    if inprocs:
        q = {
            "evaluate the new version on the val cases": median([x.eval_new for x in inprocs]),
            "evaluate the active version on the val cases": median([x.eval_active for x in inprocs]),
            "publish (copy weights, version row)": median([x.publish for x in inprocs]),
        }
        rows += [[f"  . {name}", secs(v, 3 if v < 0.1 else 2), "", "in-process"] for name, v in q.items()]
        rows.append(
            ["  . rest (end of run, final report, log write)", secs(m["after"] - sum(q.values())), "", "diff"]
        )
    rows += [
        ["outcome line -> finished_at", secs(m["finish"], 3), pct(m["finish"], total), "row+log"],
        ["total POST -> finished_at", secs(total), "100%", "row"],
    ]
    print(render_table(["phase", "seconds", "share", "from"], rows))
    print(
        "   row: the job's database row; log: its own log (ms timestamps); probe: a fresh interpreter with\n"
        "   the server's environment doing run-job's imports and set-up on the same data dir (run after the\n"
        "   server stopped); in-process: re-timed in this process on the same weights and validation cases;\n"
        "   diff: the measured window minus the re-timed parts (under load, noise can make it negative)."
    )
    first = jobs[0]
    print(
        f"   job {first.job_id}: {len(first.train_ids)} train / {len(first.val_ids)} val images, "
        f"{first.polls} polls; its evaluation: new version Dice {secs(first.eval_new_dice, 4)} (the\n"
        f"   trainer's own validation said {secs(first.val_dice, 4)}), active version Dice "
        f"{secs(first.eval_active_dice, 4)}; the version's duration_s {secs(first.duration_s)}. details:"
    )
    for line in first.details:
        print(f"     | {line}")

    # ---- verdicts
    fixed_job = median([j.total_s - j.epoch_s for j in jobs])
    fixed_warm = median([w.total_s - w.epoch_s for w in warm])
    cores = median(side_cores)
    verdicts = [
        f"{'PASS' if ej / ew <= TARGET else 'FAIL'}  epoch through the jobs system / direct epoch in this "
        f"process = {ej / ew:.3f} (target <= {TARGET}; medians of {n}: {ej:.1f} s / {ew:.1f} s)",
        f"{'PASS' if ej / ef <= TARGET else 'FAIL'}  epoch through the jobs system / direct epoch in a fresh "
        f"process = {ej / ef:.3f} ({ej:.1f} s / {ef:.1f} s: the jobs system alone; both are the first "
        "training of their process)",
        f"info  fresh / warm process epoch = {ef / ew:.3f}: what the first training in a process costs extra",
    ]
    if cj_m and cf_m and cw_m:
        verdicts.append(
            f"info  epoch CPU seconds: job/warm {cj_m / cw_m:.3f}, job/fresh {cj_m / cf_m:.3f}; beside the "
            f"job the server, worker and client used {cores:.3f} cores during the epoch"
        )
    verdicts.append(f"info  train() call -> end of epoch 1: job/warm {xj / xw:.3f}, job/fresh {xj / xf:.3f}")
    ej_over = ej - TARGET * ew
    if ej_over < 0:
        need = max(1.0, (fixed_job - TARGET * fixed_warm) / -ej_over)
        reach = f"is <= {TARGET} from about {int(np.ceil(need))} epochs on (fixed costs amortised)"
    else:
        reach = "does not reach the target at any epoch count at this per-epoch ratio"
    verdicts.append(
        f"{'PASS' if tj / tw <= TARGET else 'FAIL'}  whole 1-epoch run POST -> DONE / direct train() = "
        f"{tj / tw:.2f} (the target read strictly): fixed cost {fixed_job:.1f} s vs {fixed_warm:.1f} s "
        f"direct (whole minus epoch); with these medians the whole-run ratio {reach}"
    )
    same = all(j.val_ids == res.val_ids and len(j.train_ids) == res.n_train for j in jobs)
    verdicts.append(
        f"{'ok  ' if same else 'MISMATCH'}  every side trained on the same split "
        f"(validation: {', '.join(res.val_ids)})"
    )
    return verdicts


def report_dice(dice: DiceRun, cases: int) -> None:
    print()
    print(f"5. Validation Dice per epoch (direct trainer in this process, {cases} cases, no early stopping)")
    rows = [
        [
            str(e.epoch),
            f"{e.loss:.4f}",
            secs(e.train_dice, 4),
            secs(e.val_dice, 4),
            secs(e.seconds, 1),
            secs(e.elapsed, 0),
            f"{e.load:.1f}",
        ]
        for e in dice.epochs
    ]
    print(
        render_table(["epoch", "train loss", "train Dice", "val Dice", "epoch s", "elapsed s", "load"], rows)
    )
    epoch_time = sum(e.seconds for e in dice.epochs)
    last = dice.epochs[-1]
    print(
        f"   {len(dice.epochs)} epochs in {dice.total_s:.0f} s ({dice.setup_s:.1f} s set-up + caching): "
        f"{60 * len(dice.epochs) / epoch_time:.2f} epochs/min over the epochs, "
        f"{60 * len(dice.epochs) / dice.total_s:.2f} including set-up"
    )
    print(
        f"   final val Dice {secs(last.val_dice, 4)} after epoch {last.epoch}; best {secs(dice.best, 4)}"
        f" at epoch {dice.best_epoch}"
    )


# ------------------------------------------------------------------ main

SIDES = ("job", "fresh", "warm")


def run(cases: int, epochs: int, repeats: int, skip_dice: bool, threads: int | None, seed: int) -> int:
    import monai
    import torch

    env = dict(SERVER_ENV)
    child_env: dict[str, str] = {}
    if threads is not None:
        torch.set_num_threads(threads)
        env["OMP_NUM_THREADS"] = child_env["OMP_NUM_THREADS"] = str(threads)
    res = Results(cases=cases)
    verdicts: list[str] = []
    interrupted = False
    with scratch_dir("labelloop-bench-train-") as work:
        try:
            print(
                f"writing {cases} synthetic cases (128x128x64 voxels of 3x3x4 mm, seed {seed})...", flush=True
            )
            started = time.perf_counter()
            cohort_dir = work / "cohort"
            cohort = write_cohort(cohort_dir, cases, seed, float(CONFIG["val_split"]))
            print(f"   done in {time.perf_counter() - started:.1f} s", flush=True)
            res.val_ids = sorted(i.image_id for i in cohort.data.val)
            res.n_train = len(cohort.data.train)
            code = app_code()
            active = work / "active.pt"
            save_active_weights(code, active)
            data_dir = work / "data"
            data_dir.mkdir()
            options = code.trainer.validate_config({**CONFIG, "max_epochs": 1})
            print(
                f"cpus {os.cpu_count()}, load {' '.join(f'{x:.2f}' for x in os.getloadavg())}; "
                f"torch {torch.__version__}, monai {monai.__version__}; torch threads in this process "
                f"{torch.get_num_threads()} (interop {torch.get_num_interop_threads()})",
                flush=True,
            )
            print(f"options (validated, every side): {json.dumps(options)}", flush=True)
            print(
                f"split: {len(cohort.data.train)} train, {len(cohort.data.val)} val "
                f"({', '.join(res.val_ids)})",
                flush=True,
            )
            print("\n== warm-up: one untimed direct epoch in this process...", flush=True)
            started = time.perf_counter()
            run_direct(code, cohort, work / "warm-up")
            print(f"   {time.perf_counter() - started:.1f} s", flush=True)
            for r in range(repeats):
                order = SIDES[r % 3 :] + SIDES[: r % 3]
                res.orders.append("/".join(order))
                for side in order:
                    if side == "job":
                        print(f"\n== repeat {r + 1}: train job through labelloop serve...", flush=True)
                        job = run_job(code, cohort, data_dir, active, env, first=not res.jobs, work=work)
                        res.jobs.append(job)
                        assert job.probe is not None
                        print(
                            f"   POST->DONE {job.total_s:.1f} s, epoch {job.epoch_s:.1f} s, first iteration "
                            f"after {job.first_iter_s:.2f} s; job process torch threads {job.probe.threads} "
                            f"(interop {job.probe.interop}); load {job.load[0]:.1f}>{job.load[1]:.1f}",
                            flush=True,
                        )
                    else:
                        where = "a fresh interpreter" if side == "fresh" else "this process"
                        print(f"\n== repeat {r + 1}: direct trainer.train() in {where}...", flush=True)
                        if side == "fresh":
                            d = run_direct_fresh(cohort_dir, work / f"fresh-{r}", child_env)
                            res.fresh.append(d)
                        else:
                            d = run_direct(code, cohort, work / f"warm-{r}")
                            res.warm.append(d)
                        print(
                            f"   train() {d.total_s:.1f} s, epoch {d.epoch_s:.1f} s, first iteration after "
                            f"{d.first_iter_s:.2f} s; torch threads {d.threads}; "
                            f"load {d.load[0]:.1f}>{d.load[1]:.1f}",
                            flush=True,
                        )
            verdicts = report_runs(res)
            if not skip_dice:
                print(f"\n== Dice: direct trainer in this process, {epochs} epochs...", flush=True)
                res.dice = run_dice(code, cohort, epochs, work / "dice")
        except KeyboardInterrupt:
            interrupted = True
            print("\ninterrupted; cleaning up the server and temporary files", file=sys.stderr)
    if interrupted:
        if not verdicts:
            verdicts = report_runs(res)
        for line in verdicts:
            print(line)
        return 130
    if res.dice is not None:
        report_dice(res.dice, cases)
    job_threads = res.jobs[0].probe.threads if res.jobs and res.jobs[0].probe else "?"
    fresh_threads = res.fresh[0].threads if res.fresh else "?"
    print()
    print(
        f"labelloop training benchmark: {cases} cases, {repeats} repeat(s); cpus {os.cpu_count()}, load now "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}; torch threads: this process "
        f"{torch.get_num_threads()}, "
        f"fresh direct {fresh_threads}, job process {job_threads} "
        f"({'torch defaults everywhere' if threads is None else f'--threads {threads} everywhere'})"
    )
    for line in verdicts:
        print(line)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--cases", type=int, default=10, help="Synthetic cases, all with final labels (10)")
    parser.add_argument("--epochs", type=int, default=20, help="Epochs of the Dice run (20)")
    parser.add_argument(
        "--repeats", type=int, default=3, help="Rounds of job / fresh / warm 1-epoch runs (3)"
    )
    parser.add_argument("--skip-dice", action="store_true", help="Skip the Dice run")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads everywhere (here; OMP_NUM_THREADS for the server, jobs and the fresh run); "
        "default: torch's own",
    )
    parser.add_argument("--seed", type=int, default=0, help="Seed of the synthetic cohort (0)")
    parser.add_argument("--child-direct", nargs=2, metavar=("COHORT", "WORKDIR"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child_direct:
        return child_direct(Path(args.child_direct[0]), Path(args.child_direct[1]))
    if args.cases < 2:
        parser.error("--cases must be at least 2 (one training and one validation case)")
    if args.epochs < 1 or args.repeats < 1:
        parser.error("--epochs and --repeats must be at least 1")
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be at least 1")
    interrupt_on_sigterm()
    return run(args.cases, args.epochs, args.repeats, args.skip_dice, args.threads, args.seed)


if __name__ == "__main__":
    sys.exit(main())
