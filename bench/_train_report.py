"""The tables and verdicts of ``bench/train.py``: one function per table."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bench._train_common import FAST_POLL_S, TARGET
from bench._train_job import JobRun
from bench._train_runs import DiceRun, DirectRun
from bench._util import render_table


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


# ------------------------------------------------------------------ formatting


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def med(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return median(present) if present else None


def secs(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def pct(part: float, whole: float) -> str:
    return f"{100 * part / whole:.1f}%" if whole > 0 else "-"


def ratio(a: float | None, b: float | None, digits: int = 3) -> str:
    return f"{a / b:.{digits}f}" if a is not None and b else "-"


def _trio(j: float | None, f: float | None, w: float | None, digits: int = 1) -> list[str]:
    """job, fresh, warm."""
    return [secs(j, digits), secs(f, digits), secs(w, digits)]


def _ratios(j: float | None, f: float | None, w: float | None, digits: int = 3) -> list[str]:
    """job/warm, job/fresh, fresh/warm."""
    return [ratio(j, w, digits), ratio(j, f, digits), ratio(f, w, digits)]


def _with_ratios(name: str, j: float | None, f: float | None, w: float | None) -> list[str]:
    """``name``; job, fresh, warm; job/warm, job/fresh, fresh/warm."""
    return [name, *_trio(j, f, w), *_ratios(j, f, w)]


def _heading(*lines: str) -> None:
    """A blank line, then a table's title."""
    print()
    for line in lines:
        print(line)


def _load(run: JobRun | DirectRun) -> str:
    return f"{run.load[0]:.1f}>{run.load[1]:.1f}"


# ------------------------------------------------------------------ the 1-epoch runs


@dataclass(frozen=True)
class _Sides:
    """The runs of the repeats every side completed."""

    jobs: list[JobRun]
    fresh: list[DirectRun]
    warm: list[DirectRun]
    orders: list[str]
    val_ids: list[str]
    n_train: int

    @property
    def n(self) -> int:
        return len(self.jobs)

    @property
    def triples(self) -> list[tuple[JobRun, DirectRun, DirectRun]]:
        return list(zip(self.jobs, self.fresh, self.warm, strict=True))

    def medians(self, attr: str) -> tuple[float, float, float]:
        """The median of ``attr`` on each side: job, fresh, warm."""
        j, f, w = (median([getattr(r, attr) for r in side]) for side in (self.jobs, self.fresh, self.warm))
        return j, f, w

    def cpu_medians(self) -> tuple[float | None, float | None, float | None]:
        """Median CPU seconds of the training process during the epoch: job, fresh, warm."""
        return (
            med([j.epoch_cpu.get("job") for j in self.jobs]),
            med([f.epoch_cpu for f in self.fresh]),
            med([w.epoch_cpu for w in self.warm]),
        )


def _sides(res: Results) -> _Sides | None:
    n = min(len(res.jobs), len(res.fresh), len(res.warm))
    if n == 0:
        return None
    return _Sides(res.jobs[:n], res.fresh[:n], res.warm[:n], res.orders, res.val_ids, res.n_train)


def _print_epoch_wall(s: _Sides) -> None:
    _heading(
        "1. One epoch, wall seconds: the trainer's own 'epoch 1/1 ... (X s)' line (train pass over the",
        "   cached cases + sliding-window validation + weights/checkpoint files + the epoch's report)",
    )
    rows = [
        [
            str(i + 1),
            s.orders[i],
            *_trio(j.epoch_s, f.epoch_s, w.epoch_s),
            *_ratios(j.epoch_s, f.epoch_s, w.epoch_s),
            f"{j.loss:.4f}/{f.loss:.4f}/{w.loss:.4f}",
            _load(j),
            _load(f),
            _load(w),
        ]
        for i, (j, f, w) in enumerate(s.triples)
    ]
    ej, ef, ew = s.medians("epoch_s")
    rows.append(["median", "", *_trio(ej, ef, ew), *_ratios(ej, ef, ew)] + [""] * 4)
    headers = ["repeat", "order", "job", "fresh", "warm", "job/warm", "job/fresh", "fresh/warm"]
    print(render_table([*headers, "loss job/fresh/warm", "load job", "load fresh", "load warm"], rows))
    pair_w = median([j.epoch_s / w.epoch_s for j, _, w in s.triples])
    pair_f = median([j.epoch_s / f.epoch_s for j, f, _ in s.triples])
    print(
        "   job: through labelloop serve; fresh: the direct trainer in a fresh interpreter (the first\n"
        "   training of its process, like a job process); warm: the direct trainer in this process, which\n"
        "   ran an untimed warm-up epoch first. Ratios in the median row are ratios of the medians; the\n"
        f"   medians of the per-repeat ratios are job/warm {pair_w:.3f}, job/fresh {pair_f:.3f}. Identical\n"
        "   losses show the three did the same work. load: 1-minute load average before>after."
    )


def _print_epoch_cpu(s: _Sides) -> None:
    _heading(
        "1a. One epoch, CPU seconds of the training process (user+system, all threads; /proc every",
        "    0.1 s, interpolated at the epoch's start and end; the job's from its log's timestamps)",
    )
    rows = [
        _with_ratios(str(i + 1), j.epoch_cpu.get("job"), f.epoch_cpu, w.epoch_cpu)
        for i, (j, f, w) in enumerate(s.triples)
    ]
    rows.append(_with_ratios("median", *s.cpu_medians()))
    print(render_table(["repeat", "job", "fresh", "warm", "job/warm", "job/fresh", "fresh/warm"], rows))


_BESIDE = ("server", "worker", "bench")


def _beside(j: JobRun) -> tuple[list[float | None], float, float]:
    """CPU seconds of the server, worker and client during the epoch; their sum; the cores it makes."""
    side = [j.epoch_cpu.get(r) for r in _BESIDE]
    side_sum = sum(v for v in side if v is not None)
    return side, side_sum, side_sum / j.epoch_s


def _print_beside_cpu(s: _Sides) -> None:
    _heading(
        "1b. CPU seconds beside the training: the jobs system's other processes, during the epoch and",
        "    during the whole run (POST -> finished_at)",
    )
    rows = []
    for i, (j, f, w) in enumerate(s.triples):
        side, side_sum, cores = _beside(j)
        rows.append(
            [
                str(i + 1),
                secs(j.epoch_cpu.get("job"), 1),
                *(secs(v) for v in side),
                f"{side_sum:.2f} ({pct(side_sum, j.epoch_cpu.get('job') or 0.0)})",
                f"{cores:.3f}",
                *(secs(j.whole_cpu.get(r), 1) for r in ("job", *_BESIDE)),
                secs(f.total_cpu, 1),
                secs(w.total_cpu, 1),
            ]
        )
    processes = ["server", "worker", "client"]
    headers = ["repeat", "epoch: job", *processes, "beside the job", "cores", "whole: job", *processes]
    print(render_table([*headers, "fresh train()", "warm train()"], rows))
    print(
        "   server: labelloop serve (answering the client's polls; housekeeping); worker: the worker\n"
        "   process watching the job (it reads the job's row every 0.1 s); client: this benchmark (polling,\n"
        "   sampling); cores: their CPU seconds per second of the epoch. whole: job = the job process's\n"
        "   whole life (imports, evaluation); fresh/warm train(): CPU of the direct runs' train() calls."
    )


_Trio = tuple[float, float, float]
_WHOLE_RUN = ("total_s", "to_epoch_end_s", "setup_s")


def _of(runs: tuple[JobRun, DirectRun, DirectRun], attr: str) -> _Trio:
    j, f, w = runs
    return getattr(j, attr), getattr(f, attr), getattr(w, attr)


def _whole_run_row(name: str, total: _Trio, to_end: _Trio, setup: _Trio) -> list[str]:
    """total, to the epoch's end and set-up, each as job, fresh, warm."""
    return [name, *_trio(*total), *_ratios(*total, digits=2)[:2], *_trio(*to_end), *_trio(*setup, digits=2)]


def _print_whole_run(s: _Sides) -> None:
    _heading(
        "2. Whole 1-epoch run, wall seconds (job: POST -> finished_at; direct: the train() call -> return),",
        "   train() call -> end of the epoch (set-up + caching + epoch), and set-up + caching alone",
    )
    rows = [
        _whole_run_row(str(i + 1), *(_of(runs, attr) for attr in _WHOLE_RUN))
        for i, runs in enumerate(s.triples)
    ]
    rows.append(_whole_run_row("median", *(s.medians(attr) for attr in _WHOLE_RUN)))
    trio = ["fresh", "warm"]
    headers = ["repeat", "whole: job", *trio, "job/warm", "job/fresh", "to epoch end: job", *trio]
    print(render_table([*headers, "set-up: job", *trio], rows))


def _job_first_step(j: JobRun) -> float:
    return j.first_iter_seen - (j.epoch_line - j.epoch_s)


def _direct_first_step(d: DirectRun) -> float:
    return d.first_iter_s - d.setup_s


def _first_iteration_columns(s: _Sides) -> list[tuple[Sequence[Any], Callable[[Any], float]]]:
    """Each column of table 3 but the job's own: the side's runs and what it shows of one."""
    return [
        (s.jobs, lambda j: j.first_iter_s),
        (s.jobs, lambda j: j.first_iter_seen - j.training_line),
        (s.fresh, lambda f: f.first_iter_s),
        (s.warm, lambda w: w.first_iter_s),
        (s.jobs, _job_first_step),
        (s.fresh, _direct_first_step),
        (s.warm, _direct_first_step),
    ]


def _print_first_iteration(s: _Sides) -> None:
    _heading("3. Time to the first finished iteration, wall seconds")
    columns = _first_iteration_columns(s)
    rows = []
    for i, j in enumerate(s.jobs):
        own = j.first_iter_job - j.post if j.first_iter_job is not None else None
        cells = [secs(value(runs[i])) for runs, value in columns]
        rows.append([str(i + 1), cells[0], secs(own, 0), *cells[1:]])
    medians = [secs(median([value(r) for r in runs])) for runs, value in columns]
    rows.append(["median", medians[0], "", *medians[1:]])
    headers = ["repeat", "job: POST->1st (poll)", "job's own*", "job: train()->1st", "fresh: train()->1st"]
    print(render_table([*headers, "warm", "1st step: job", "fresh", "warm"], rows))
    print(
        "   poll: the client polled GET /train/{id} every "
        f"{FAST_POLL_S * 1000:.0f} ms until progress.current_iteration >= 1 (+ a request's latency).\n"
        "   * the job's own: progress start_ts + current_time at that poll, minus the POST (both whole\n"
        "   seconds, truncated: up to 2 s early). 1st step: from the epoch's start to the first report."
    )


# ------------------------------------------------------------------ where the job's time goes


def _phase_row(name: str, value: float, total: float, source: str, digits: int = 2) -> list[str]:
    return [name, secs(value, digits), pct(value, total), source]


#: The job process's start-up as the probe re-measures it: row label -> ``Probe`` field.
_STARTUP_PARTS = {
    "Python interpreter start": "interpreter",
    "import labelloop.cli, settings": "cli",
    "import labelloop.jobs, labelloop.server": "modules",
    "load_app: torch, MONAI, the app": "app",
    "build_services (migrate, datastore, registry)": "services",
    "gather_training_set + split_items": "gather",
}
#: Evaluation and publishing as re-measured in this process: row label -> ``InProcess`` field.
_AFTER_PARTS = {
    "evaluate the new version on the val cases": "eval_new",
    "evaluate the active version on the val cases": "eval_active",
    "publish (copy weights, version row)": "publish",
}


def _part_rows(
    measured: Sequence[Any], fields: dict[str, str], source: str, window: float, rest: str
) -> list[list[str]]:
    """Median re-timed parts of a measured window, and the rest of the window (a difference)."""
    if not measured:
        return []
    parts = {name: median([getattr(x, attr) for x in measured]) for name, attr in fields.items()}
    rows = [[f"  . {name}", secs(v, 3 if v < 0.1 else 2), "", source] for name, v in parts.items()]
    return [*rows, [f"  . rest ({rest})", secs(window - sum(parts.values())), "", "diff"]]


def _startup_rows(jobs: Sequence[JobRun], start: float) -> list[list[str]]:
    probes = [j.probe for j in jobs if j.probe is not None]
    return _part_rows(probes, _STARTUP_PARTS, "probe", start, "Popen, job row, heartbeat, log write")


def _after_rows(jobs: Sequence[JobRun], after: float) -> list[list[str]]:
    inprocs = [j.inproc for j in jobs if j.inproc is not None]
    return _part_rows(inprocs, _AFTER_PARTS, "in-process", after, "end of run, final report, log write")


def _phase_rows(jobs: Sequence[JobRun]) -> list[list[str]]:
    phases = ("submit", "claim", "start", "setup", "epoch", "after", "finish", "total")
    m = {name: median([getattr(j, f"{name}_s") for j in jobs]) for name in phases}
    total = m["total"]
    return [
        _phase_row("POST -> row created (HTTP, validation, insert)", m["submit"], total, "row", 3),
        _phase_row("queue claim (created_at -> started_at)", m["claim"], total, "row", 3),
        _phase_row("claim -> 'training ...' line (job process start-up)", m["start"], total, "row+log"),
        *_startup_rows(jobs, m["start"]),
        _phase_row("trainer set-up + CacheDataset caching", m["setup"], total, "log"),
        _phase_row("epoch (train pass + validation + checkpoint)", m["epoch"], total, "log"),
        _phase_row("epoch line -> outcome line (evaluate, publish)", m["after"], total, "log"),
        *_after_rows(jobs, m["after"]),
        _phase_row("outcome line -> finished_at", m["finish"], total, "row+log", 3),
        ["total POST -> finished_at", secs(total), "100%", "row"],
    ]


def _print_first_job(first: JobRun) -> None:
    print(
        f"   job {first.job_id}: {len(first.train_ids)} train / {len(first.val_ids)} val images, "
        f"{first.polls} polls; its evaluation: new version Dice {secs(first.eval_new_dice, 4)} (the\n"
        f"   trainer's own validation said {secs(first.val_dice, 4)}), active version Dice "
        f"{secs(first.eval_active_dice, 4)}; the version's duration_s {secs(first.duration_s)}. details:"
    )
    for line in first.details:
        print(f"     | {line}")


def _print_phases(s: _Sides) -> None:
    _heading("4. Where the jobs system's time goes (median over repeats, wall seconds)")
    print(render_table(["phase", "seconds", "share", "from"], _phase_rows(s.jobs)))
    print(
        "   row: the job's database row; log: its own log (ms timestamps); probe: a fresh interpreter with\n"
        "   the server's environment doing run-job's imports and set-up on the same data dir (run after the\n"
        "   server stopped); in-process: re-timed in this process on the same weights and validation cases;\n"
        "   diff: the measured window minus the re-timed parts (under load, noise can make it negative)."
    )
    _print_first_job(s.jobs[0])


# ------------------------------------------------------------------ verdicts


def _epoch_verdicts(s: _Sides) -> list[str]:
    ej, ef, ew = s.medians("epoch_s")
    verdicts = [
        f"{'PASS' if ej / ew <= TARGET else 'FAIL'}  epoch through the jobs system / direct epoch in this "
        f"process = {ej / ew:.3f} (target <= {TARGET}; medians of {s.n}: {ej:.1f} s / {ew:.1f} s)",
        f"{'PASS' if ej / ef <= TARGET else 'FAIL'}  epoch through the jobs system / direct epoch in a fresh "
        f"process = {ej / ef:.3f} ({ej:.1f} s / {ef:.1f} s: the jobs system alone; both are the first "
        "training of their process)",
        f"info  fresh / warm process epoch = {ef / ew:.3f}: what the first training in a process costs extra",
    ]
    cj_m, cf_m, cw_m = s.cpu_medians()
    if cj_m and cf_m and cw_m:
        cores = median([_beside(j)[2] for j in s.jobs])
        verdicts.append(
            f"info  epoch CPU seconds: job/warm {cj_m / cw_m:.3f}, job/fresh {cj_m / cf_m:.3f}; beside the "
            f"job the server, worker and client used {cores:.3f} cores during the epoch"
        )
    xj, xf, xw = s.medians("to_epoch_end_s")
    verdicts.append(f"info  train() call -> end of epoch 1: job/warm {xj / xw:.3f}, job/fresh {xj / xf:.3f}")
    return verdicts


def _whole_run_verdict(s: _Sides) -> str:
    ej, _, ew = s.medians("epoch_s")
    tj, _, tw = s.medians("total_s")
    fixed_job = median([j.total_s - j.epoch_s for j in s.jobs])
    fixed_warm = median([w.total_s - w.epoch_s for w in s.warm])
    ej_over = ej - TARGET * ew
    if ej_over < 0:
        need = max(1.0, (fixed_job - TARGET * fixed_warm) / -ej_over)
        reach = f"is <= {TARGET} from about {int(np.ceil(need))} epochs on (fixed costs amortised)"
    else:
        reach = "does not reach the target at any epoch count at this per-epoch ratio"
    return (
        f"{'PASS' if tj / tw <= TARGET else 'FAIL'}  whole 1-epoch run POST -> DONE / direct train() = "
        f"{tj / tw:.2f} (the target read strictly): fixed cost {fixed_job:.1f} s vs {fixed_warm:.1f} s "
        f"direct (whole minus epoch); with these medians the whole-run ratio {reach}"
    )


def _split_verdict(s: _Sides) -> str:
    same = all(j.val_ids == s.val_ids and len(j.train_ids) == s.n_train for j in s.jobs)
    return (
        f"{'ok  ' if same else 'MISMATCH'}  every side trained on the same split "
        f"(validation: {', '.join(s.val_ids)})"
    )


def report_runs(res: Results) -> list[str]:
    """The overhead tables; returns the verdict lines."""
    s = _sides(res)
    if s is None:
        return []
    _print_epoch_wall(s)
    _print_epoch_cpu(s)
    _print_beside_cpu(s)
    _print_whole_run(s)
    _print_first_iteration(s)
    _print_phases(s)
    return [*_epoch_verdicts(s), _whole_run_verdict(s), _split_verdict(s)]


# ------------------------------------------------------------------ Dice


def report_dice(dice: DiceRun, cases: int) -> None:
    _heading(
        f"5. Validation Dice per epoch (direct trainer in this process, {cases} cases, no early stopping)"
    )
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
