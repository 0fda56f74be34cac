"""The jobs-system side of ``bench/train.py``: a 1-epoch train job through ``labelloop serve``."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import requests

from bench._train_common import (
    FAST_POLL_S,
    JOB_TIMEOUT_S,
    MODEL,
    SLOW_POLL_S,
    AppCode,
    Cohort,
    LogLine,
    config_for,
    first_line,
    parse_epoch,
    read_job_log,
)
from bench._train_remeasured import InProcess, Probe, measure_after_training, probe_startup
from bench._util import CpuSampler, load1, proc_cmdline, processes, serve
from labelloop.datastore import BlobStore
from labelloop.db import Database
from labelloop.jobs import JobQueue
from labelloop.jobs.models import workers
from labelloop.registry import Registry

if TYPE_CHECKING:
    from labelloop.jobs import Job
    from labelloop.registry import ModelVersion


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


# ------------------------------------------------------------------ HTTP


class Http:
    def __init__(self, url: str) -> None:
        self.url = url
        self.session = requests.Session()

    def check(self, response: requests.Response, what: str) -> Any:
        if response.status_code != 200:
            raise RuntimeError(f"{what}: HTTP {response.status_code}: {response.text[:800]}")
        return response.json()

    def _put_file(self, path: str, what: str, field: str, file: Path, **kwargs: Any) -> None:
        upload = {field: (file.name, file.read_bytes(), "application/octet-stream")}
        self.check(self.session.put(f"{self.url}{path}", files=upload, **kwargs), what)

    def upload(self, cohort: Cohort, active: Path) -> None:
        for item in cohort.items:
            image = {"image": item.image_id}
            self._put_file("/datastore/image", f"upload {item.image_id}", "file", item.image, params=image)
            self._put_file(
                "/datastore/label",
                f"final label {item.image_id}",
                "label",
                item.label,
                params={**image, "tag": "final"},
                data={"params": json.dumps({"client_id": "bench"})},
            )
        self._put_file(f"/model/{MODEL}", "active model version", "file", active)
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


def _job_clock(progress: Mapping[str, Any]) -> float | None:
    """The job's own time of a progress report: ``start_ts`` + ``current_time`` (whole seconds)."""
    if "start_ts" not in progress or "current_time" not in progress:
        return None
    h, m, s = (int(x) for x in str(progress["current_time"]).split(":")[-3:])
    return float(progress["start_ts"]) + 3600 * h + 60 * m + s


def _finished(task: dict[str, Any], first_iter: float | None) -> bool:
    if task["status"] in ("SUBMITTED", "RUNNING"):
        return False
    if task["status"] != "DONE":
        raise RuntimeError(f"the train job ended {task['status']}: {json.dumps(task)[:2000]}")
    if first_iter is None:
        raise RuntimeError("the job finished without a visible first iteration")
    return True


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
            first_iter_job = _job_clock(progress)
            interval = SLOW_POLL_S
        if "total_time" in progress:
            interval = FAST_POLL_S  # the run's final report: evaluation and publishing follow
        if _finished(task, first_iter):
            assert first_iter is not None
            return Polled(first_iter, first_iter_job, seen, polls, task)
        time.sleep(interval)
    raise TimeoutError(f"the train job did not finish in {JOB_TIMEOUT_S:.0f} s")


# ------------------------------------------------------------------ the job's processes


def job_processes(server_pid: int) -> Callable[[Mapping[str, int]], dict[str, int]]:
    """A ``CpuSampler`` discovery: the server's worker (its child) and the job (the worker's child)."""

    def discover(known: Mapping[str, int]) -> dict[str, int]:
        found = dict(known)
        if "worker" in found and "job" in found:
            return {}
        for pid, ppid in processes():
            if ppid == server_pid and "worker" not in found:
                if " worker " in proc_cmdline(pid):
                    found["worker"] = pid
            elif "worker" in found and ppid == found["worker"] and "job" not in found:
                if " run-job " in proc_cmdline(pid):
                    found["job"] = pid
        return {role: pid for role, pid in found.items() if role not in known}

    return discover


def _attach_cpu(run: JobRun, cpu: CpuSampler) -> None:
    epoch_start = run.epoch_line - run.epoch_s
    run.epoch_cpu = {
        role: cpu.between(role, epoch_start, run.epoch_line) for role in ("job", "server", "worker", "bench")
    }
    run.whole_cpu = {
        role: cpu.between(role, run.post, run.finished) for role in ("server", "worker", "bench")
    }
    job_series = cpu.samples.get("job") or [(0.0, float("nan"))]
    run.whole_cpu["job"] = job_series[-1][1]  # the process's CPU time at its last sample (from 0 at spawn)


# ------------------------------------------------------------------ one run


@dataclass
class _Submitted:
    job_id: str
    post: float
    polled: Polled
    cpu: CpuSampler
    load: tuple[float, float]


def _database_url(data_dir: Path) -> str:
    """The server's database (SQLite in its data dir)."""
    return f"sqlite:///{(data_dir / 'labelloop.db').resolve()}"


def _submit(cohort: Cohort, data_dir: Path, active: Path, env: dict[str, str], first: bool) -> _Submitted:
    """Start the server, upload (the first time), POST the job and poll it to DONE; stop the server."""
    started = time.time()
    with serve(data_dir, env=env) as server:
        http = Http(server.url)
        try:
            if first:
                http.upload(cohort, active)
            db = Database(_database_url(data_dir))
            try:
                wait_for_worker(db, started - 1.0)
            finally:
                db.dispose()
            time.sleep(1.0)  # let the server and the worker settle
            before = load1()
            config = config_for(1)
            pids = {"bench": os.getpid(), "server": server.process.pid}
            with CpuSampler(pids, discover=job_processes(server.process.pid)) as cpu:
                post = time.time()
                submitted = http.check(http.session.post(f"{server.url}/train/{MODEL}", json=config), "POST")
                job_id = str(submitted["id"])
                polled = poll_until_done(http, job_id)
            after = load1()
        finally:
            http.close()
    return _Submitted(job_id, post, polled, cpu, (before, after))


@dataclass
class _Outcome:
    job: Job  # the job's row
    result: dict[str, Any]  # its result
    version: ModelVersion  # the version it published
    active_version: ModelVersion  # the version it was evaluated against
    lines: list[LogLine]  # the job's own log


def _outcome(data_dir: Path, job_id: str) -> _Outcome:
    """With the server stopped: the job's row, the versions and the job's own log."""
    db = Database(_database_url(data_dir))
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
    return _Outcome(
        job, result, version, active_version, read_job_log(data_dir / "jobs" / job_id / "job.log")
    )


def _split_ids(version: ModelVersion, split: str) -> list[str]:
    return sorted(r["image"] for r in version.training_set if r.get("split") == split)


def _job_run(sub: _Submitted, out: _Outcome) -> JobRun:
    job, version, lines = out.job, out.version, out.lines
    epoch_lines = [(line, e) for line in lines if (e := parse_epoch(line.message))]
    if len(epoch_lines) != 1:
        raise RuntimeError(f"expected one epoch line in the job's log, got {[e for _, e in epoch_lines]}")
    epoch_line, epoch = epoch_lines[0]
    metrics = dict(out.result.get("metrics") or {})
    assert job.started_at is not None and job.finished_at is not None
    return JobRun(
        job_id=sub.job_id,
        post=sub.post,
        created=job.created_at,
        claimed=job.started_at,
        training_line=first_line(lines, rf"^training {MODEL} on ").ts,
        epoch_line=epoch_line.ts,
        epoch_s=epoch.seconds,
        published_line=first_line(lines, rf"^model {MODEL} version {version.version} published").ts,
        outcome_line=first_line(lines, rf"^model {MODEL} version {version.version}: ").ts,
        finished=job.finished_at,
        first_iter_seen=sub.polled.first_iter_seen,
        first_iter_job=sub.polled.first_iter_job,
        done_seen=sub.polled.done_seen,
        polls=sub.polled.polls,
        loss=epoch.loss,
        val_dice=epoch.val_dice,
        eval_new_dice=metrics.get("val_mean_dice"),
        eval_active_dice=metrics.get("previous_val_mean_dice"),
        version_created=version.created_at,
        duration_s=version.duration_s,
        val_ids=_split_ids(version, "val"),
        train_ids=_split_ids(version, "train"),
        details=list(sub.polled.task.get("details") or []),
        load=sub.load,
    )


def run_job(
    code: AppCode,
    cohort: Cohort,
    data_dir: Path,
    active: Path,
    env: dict[str, str],
    first: bool,
    work: Path,
) -> JobRun:
    sub = _submit(cohort, data_dir, active, env, first)
    out = _outcome(data_dir, sub.job_id)
    run = _job_run(sub, out)
    _attach_cpu(run, sub.cpu)
    run.probe = probe_startup(data_dir, env)
    run.inproc = measure_after_training(
        code,
        cohort,
        out.version.path,
        out.active_version.path,
        work / f"scratch-{sub.job_id[:8]}",
        out.job.progress,
    )
    return run
