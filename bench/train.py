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

The code: this file parses the arguments and runs the sides in turn; ``bench/_train_common.py``
holds the options, the cohort and the log parsing, ``_train_runs.py`` the direct runs and the Dice
run, ``_train_job.py`` the run through the jobs system, ``_train_remeasured.py`` the start-up probe
and the in-process re-timing of evaluation and publishing, ``_train_report.py`` the tables and
verdicts; ``bench/_util.py`` the server, scratch dirs, tables and CPU sampling all benchmarks share.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as ``python bench/train.py``
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._train_common import (  # noqa: E402
    SERVER_ENV,
    AppCode,
    Cohort,
    app_code,
    config_for,
    save_active_weights,
    write_cohort,
)
from bench._train_job import run_job  # noqa: E402
from bench._train_report import Results, report_dice, report_runs  # noqa: E402
from bench._train_runs import DirectRun, child_direct, run_dice, run_direct, run_direct_fresh  # noqa: E402
from bench._util import interrupt_on_sigterm, load_average, scratch_dir  # noqa: E402
from labelloop.tasks import validate_options  # noqa: E402

SIDES = ("job", "fresh", "warm")


@dataclass(frozen=True)
class Setup:
    """What every run of one benchmark shares."""

    work: Path
    cohort_dir: Path
    cohort: Cohort
    code: AppCode
    active: Path  # the active version's weights, uploaded with the cohort
    data_dir: Path  # the server's
    server_env: dict[str, str]
    child_env: dict[str, str]  # the fresh interpreter's


def thread_envs(threads: int | None) -> tuple[dict[str, str], dict[str, str]]:
    """The server's and the fresh interpreter's environment; with ``threads``, that count here too."""
    import torch

    env = dict(SERVER_ENV)
    child_env: dict[str, str] = {}
    if threads is not None:
        torch.set_num_threads(threads)
        env["OMP_NUM_THREADS"] = child_env["OMP_NUM_THREADS"] = str(threads)
    return env, child_env


def prepare(work: Path, cases: int, seed: int, threads: int | None, res: Results) -> Setup:
    """The cohort, the app, the active weights; prints what every side runs with."""
    env, child_env = thread_envs(threads)
    print(f"writing {cases} synthetic cases (128x128x64 voxels of 3x3x4 mm, seed {seed})...", flush=True)
    started = time.perf_counter()
    cohort_dir = work / "cohort"
    cohort = write_cohort(cohort_dir, cases, seed)
    print(f"   done in {time.perf_counter() - started:.1f} s", flush=True)
    res.val_ids = sorted(i.image_id for i in cohort.data.val)
    res.n_train = len(cohort.data.train)
    code = app_code()
    active = work / "active.pt"
    save_active_weights(code, active)
    data_dir = work / "data"
    data_dir.mkdir()
    setup = Setup(work, cohort_dir, cohort, code, active, data_dir, env, child_env)
    print_environment(setup, res)
    return setup


def print_environment(setup: Setup, res: Results) -> None:
    import monai
    import torch

    options = validate_options(setup.code.trainer.config_model, config_for(1)).model_dump(mode="json")
    print(
        f"cpus {os.cpu_count()}, load {load_average()}; "
        f"torch {torch.__version__}, monai {monai.__version__}; torch threads in this process "
        f"{torch.get_num_threads()} (interop {torch.get_num_interop_threads()})",
        flush=True,
    )
    print(f"options (validated, every side): {json.dumps(options)}", flush=True)
    data = setup.cohort.data
    print(f"split: {len(data.train)} train, {len(data.val)} val ({', '.join(res.val_ids)})", flush=True)


def warm_up(setup: Setup) -> None:
    print("\n== warm-up: one untimed direct epoch in this process...", flush=True)
    started = time.perf_counter()
    run_direct(setup.code, setup.cohort, setup.work / "warm-up")
    print(f"   {time.perf_counter() - started:.1f} s", flush=True)


def run_job_side(setup: Setup, res: Results, r: int) -> None:
    print(f"\n== repeat {r + 1}: train job through labelloop serve...", flush=True)
    job = run_job(
        setup.code,
        setup.cohort,
        setup.data_dir,
        setup.active,
        setup.server_env,
        first=not res.jobs,
        work=setup.work,
    )
    res.jobs.append(job)
    assert job.probe is not None
    print(
        f"   POST->DONE {job.total_s:.1f} s, epoch {job.epoch_s:.1f} s, first iteration "
        f"after {job.first_iter_s:.2f} s; job process torch threads {job.probe.threads} "
        f"(interop {job.probe.interop}); load {job.load[0]:.1f}>{job.load[1]:.1f}",
        flush=True,
    )


def run_direct_side(setup: Setup, res: Results, r: int, side: str) -> None:
    where = "a fresh interpreter" if side == "fresh" else "this process"
    print(f"\n== repeat {r + 1}: direct trainer.train() in {where}...", flush=True)
    d: DirectRun
    if side == "fresh":
        d = run_direct_fresh(setup.cohort_dir, setup.work / f"fresh-{r}", setup.child_env)
        res.fresh.append(d)
    else:
        d = run_direct(setup.code, setup.cohort, setup.work / f"warm-{r}")
        res.warm.append(d)
    print(
        f"   train() {d.total_s:.1f} s, epoch {d.epoch_s:.1f} s, first iteration after "
        f"{d.first_iter_s:.2f} s; torch threads {d.threads}; "
        f"load {d.load[0]:.1f}>{d.load[1]:.1f}",
        flush=True,
    )


def run_repeats(setup: Setup, res: Results, repeats: int) -> None:
    """The order rotates, so that a drift of the machine's load hits every side alike."""
    for r in range(repeats):
        order = SIDES[r % 3 :] + SIDES[: r % 3]
        res.orders.append("/".join(order))
        for side in order:
            if side == "job":
                run_job_side(setup, res, r)
            else:
                run_direct_side(setup, res, r, side)


def print_summary(res: Results, repeats: int, threads: int | None) -> None:
    import torch

    job_threads = res.jobs[0].probe.threads if res.jobs and res.jobs[0].probe else "?"
    fresh_threads = res.fresh[0].threads if res.fresh else "?"
    print()
    print(
        f"labelloop training benchmark: {res.cases} cases, {repeats} repeat(s); cpus {os.cpu_count()}, load "
        f"now {load_average()}; torch threads: this process {torch.get_num_threads()}, "
        f"fresh direct {fresh_threads}, job process {job_threads} "
        f"({'torch defaults everywhere' if threads is None else f'--threads {threads} everywhere'})"
    )


def run(cases: int, epochs: int, repeats: int, skip_dice: bool, threads: int | None, seed: int) -> int:
    res = Results(cases=cases)
    verdicts: list[str] = []
    interrupted = False
    with scratch_dir("labelloop-bench-train-") as work:
        try:
            setup = prepare(work, cases, seed, threads, res)
            warm_up(setup)
            run_repeats(setup, res, repeats)
            verdicts = report_runs(res)
            if not skip_dice:
                print(f"\n== Dice: direct trainer in this process, {epochs} epochs...", flush=True)
                res.dice = run_dice(setup.code, setup.cohort, epochs, work / "dice")
        except KeyboardInterrupt:
            interrupted = True
            print("\ninterrupted; cleaning up the server and temporary files", file=sys.stderr)
    if interrupted:
        for line in verdicts or report_runs(res):
            print(line)
        return 130
    if res.dice is not None:
        report_dice(res.dice, cases)
    print_summary(res, repeats, threads)
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
