"""The parts of a train job that ``bench/train.py`` cannot see from outside, re-measured apart.

* the job process's start-up: a probe process with the server's interpreter and environment runs
  the same imports, ``load_app``, ``build_services`` and ``gather_training_set`` on the data dir;
* evaluation and publishing: ``evaluate`` of both versions' weights on the validation cases and
  ``Registry.publish`` into a scratch registry, timed in this process.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench._train_common import CONFIG, MODEL, AppCode, Cohort, config_for
from bench._util import APP_DIR, environ_without_settings, run_json_child
from labelloop.datastore import BlobStore
from labelloop.db import Database
from labelloop.jobs.training import evaluate
from labelloop.registry import Registry

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
    full_env = environ_without_settings(env)
    spawned = time.time()
    body = run_json_child(
        [sys.executable, "-c", _PROBE, str(APP_DIR), str(data_dir), str(CONFIG["val_split"])],
        full_env,
        timeout_s=300,
        what="the job start-up probe",
    )
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


def _time_publish(cohort: Cohort, new: Path, scratch: Path, stats: dict[str, Any]) -> float:
    """Seconds of ``Registry.publish`` of ``new`` into a scratch registry, as the job publishes."""
    scratch.mkdir(parents=True, exist_ok=True)
    db = Database(f"sqlite:///{(scratch / 'registry.db').resolve()}")
    try:
        db.migrate()
        registry = Registry(db, BlobStore(scratch))
        t0 = time.perf_counter()
        registry.publish(
            MODEL,
            new,
            source="train",
            user="bench",
            activate=False,
            metrics={"val_mean_dice": 0.0},
            params=config_for(1),
            training_set=cohort.data.records,
            train_stats=stats,
            duration_s=1.0,
        )
        return time.perf_counter() - t0
    finally:
        db.dispose()


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
    return InProcess(
        eval_new=t1 - t0, eval_active=t2 - t1, publish=_time_publish(cohort, new, scratch, stats)
    )
