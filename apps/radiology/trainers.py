"""The radiology app's trainers (``segmentation`` and ``deepedit``), their options, and DDP.

Each trainer validates its options into a ``TrainConfig`` (``validate_config`` at submit
time, again in ``train``) and runs ``trainer.run_rank``: in this process on the CPU or one
GPU, or, when several GPUs are present and the device is not pinned to one, in one spawned
process per GPU joined by ``torch.distributed`` (NCCL; gloo on the CPU in tests).
"""

from __future__ import annotations

import difflib
import math
import os
import pickle
import queue
import re
import traceback
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labelloop.errors import InvalidParamsError
from labelloop.tasks import LocalTrainContext, TrainContext, TrainData, TrainResult, TrainSpec, TrainTask

from .clicks import ClickConfig
from .config import NETWORK, NetworkConfig
from .trainer import Dist, TrainJob, run_rank

__all__ = [
    "DeepEditTrainer",
    "DdpResult",
    "SegmentationTrainer",
    "TrainConfig",
    "parse_config",
    "train_ddp",
]

#: Options every trainer shows; a list means "one of these, the first is the default".
SHARED_OPTIONS: dict[str, Any] = {
    "max_epochs": 50,
    "val_split": 0.2,
    "learning_rate": 1e-3,
    "early_stop_patience": 10,
    "train_batch_size": 2,
    "samples_per_image": 2,
    "pretrained": True,
    "cache_bytes": 2 * 1024**3,
    "device": ["auto", "cpu", "cuda"],
}
#: DeepEdit's extra options: how clicks are simulated (``ClickConfig``).
CLICK_OPTIONS: dict[str, Any] = {"click_probability": 0.5, "max_clicks": 3, "error_clicks": True}


@dataclass(frozen=True)
class TrainConfig:
    """Validated options of a training run.

    Attributes:
        max_epochs: epochs to run (a resumed run continues up to this count).
        val_split: fraction of images the server holds out for validation (``[0, 1)``).
        learning_rate: AdamW learning rate (``0`` freezes the weights).
        early_stop_patience: stop after this many epochs without improvement; ``-1``: never.
        train_batch_size: images per step; each gives ``samples_per_image`` patches.
        samples_per_image: random patches cropped from each image per step.
        pretrained: fine-tune from the active model version when there is one.
        cache_bytes: memory budget of the cached, preprocessed cases, bytes.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``; the server resolves it into
            ``ctx.device``. With several GPUs, ``auto`` and ``cuda`` train on all of them.
        seed: seeds weight initialisation, patch sampling and simulated clicks.
        clicks: how DeepEdit clicks are simulated; ``None`` for segmentation.
    """

    max_epochs: int = 50
    val_split: float = 0.2
    learning_rate: float = 1e-3
    early_stop_patience: int = 10
    train_batch_size: int = 2
    samples_per_image: int = 2
    pretrained: bool = True
    cache_bytes: int = 2 * 1024**3
    device: str = "auto"
    seed: int = 0
    clicks: ClickConfig | None = None


def _number(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise InvalidParamsError(f"'{key}' must be a number, not {value!r}")
    try:
        number = float(value)
    except ValueError:
        raise InvalidParamsError(f"'{key}' must be a number, not {value!r}") from None
    if not math.isfinite(number):
        raise InvalidParamsError(f"'{key}' must be a finite number, not {value!r}")
    return number


def _int(key: str, value: Any, low: int, high: int | None = None) -> int:
    number = _number(key, value)
    if number != int(number) or number < low or (high is not None and number > high):
        bounds = f"from {low} to {high}" if high is not None else f"{low} or more"
        raise InvalidParamsError(f"'{key}' must be a whole number {bounds}, not {value!r}")
    return int(number)


def _float(key: str, value: Any, low: float, high: float, *, below_high: bool = False) -> float:
    number = _number(key, value)
    if not low <= number <= high or (below_high and number == high):
        bounds = f"from {low:g} to {'below ' if below_high else ''}{high:g}"
        raise InvalidParamsError(f"'{key}' must be a number {bounds}, not {value!r}")
    return number


def _flag(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise InvalidParamsError(f"'{key}' must be true or false, not {value!r}")


def _device(key: str, value: Any) -> str:
    if isinstance(value, str) and re.fullmatch(r"auto|cpu|cuda(:\d+)?", value):
        return value
    raise InvalidParamsError(f"'{key}' must be auto, cpu, cuda or cuda:N, not {value!r}")


_CHECKS: dict[str, Any] = {
    "max_epochs": lambda k, v: _int(k, v, 1),
    "val_split": lambda k, v: _float(k, v, 0.0, 1.0, below_high=True),
    "learning_rate": lambda k, v: _float(k, v, 0.0, 1.0),
    "early_stop_patience": lambda k, v: -1 if _int(k, v, -1) == -1 else _int(k, v, 1),
    "train_batch_size": lambda k, v: _int(k, v, 1),
    "samples_per_image": lambda k, v: _int(k, v, 1),
    "pretrained": _flag,
    "cache_bytes": lambda k, v: _int(k, v, 0),
    "device": _device,
    "seed": lambda k, v: _int(k, v, 0, 2**32 - 1),
    "click_probability": lambda k, v: _float(k, v, 0.0, 1.0),
    "max_clicks": lambda k, v: _int(k, v, 1, 100),
    "error_clicks": _flag,
}


def parse_config(config: Mapping[str, Any], options: Mapping[str, Any]) -> dict[str, Any]:
    """The run's options: ``options``' defaults overridden by ``config``, each checked.

    Keys that are no option are ignored (clients send ``client_id``, ``model`` and the like),
    unless they look like a misspelt option. Raises ``InvalidParamsError`` naming the key.
    """
    known = [*options, "seed"]
    for key in config:
        if key not in known and (close := difflib.get_close_matches(str(key), known, n=1, cutoff=0.88)):
            raise InvalidParamsError(f"Unknown option '{key}'; did you mean '{close[0]}'?")
    values = {"seed": 0, **{k: v[0] if isinstance(v, list) else v for k, v in options.items()}}
    values.update({k: v for k, v in config.items() if k in known})
    return {key: _CHECKS[key](key, value) for key, value in values.items()}


class _RadiologyTrainer(TrainTask):
    """Trains one of the app's UNets on the normalised grid that inference uses."""

    options: dict[str, Any] = SHARED_OPTIONS

    def __init__(self, labels: Mapping[str, int], network: NetworkConfig = NETWORK) -> None:
        self.labels = dict(labels)
        self.network = network

    def validate_config(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """The options of a run as stored with the job (JSON-able); ``InvalidParamsError`` if bad."""
        return parse_config(config, self.options)

    def config(self, config: Mapping[str, Any]) -> TrainConfig:
        """The options of a run, typed."""
        values = self.validate_config(config)
        clicks = {k: values.pop(k) for k in CLICK_OPTIONS if k in values}
        return TrainConfig(**values, clicks=ClickConfig(**clicks) if clicks else None)

    def job(
        self, ctx: TrainContext, data: TrainData, config: Mapping[str, Any], init_weights: Path | None
    ) -> TrainJob:
        """What ``run_rank`` needs, from the arguments of ``train``."""
        if not data.train:
            raise InvalidParamsError("Nothing to train on: the training set is empty")
        return TrainJob(
            labels=self.labels,
            config=self.config(config),
            train=tuple(data.train),
            val=tuple(data.val),
            workdir=Path(ctx.workdir),
            init_weights=init_weights,
            resume=ctx.resume_checkpoint(),
            network=self.network,
        )

    def train(
        self, ctx: TrainContext, data: TrainData, config: Mapping[str, Any], init_weights: Path | None
    ) -> TrainResult:
        import torch

        job = self.job(ctx, data, config, init_weights)
        device = torch.device(ctx.device)
        gpus = torch.cuda.device_count() if device.type == "cuda" else 0
        if gpus > 1 and job.config.device in ("auto", "cuda"):
            ctx.log(f"training on {gpus} GPUs (DistributedDataParallel)")
            return train_ddp(ctx, job, world_size=gpus, backend="nccl").result
        return run_rank(ctx, job).result


class SegmentationTrainer(_RadiologyTrainer):
    """Trains ``segmentation``: ``unet(1, n_labels)`` on the image alone."""

    model = "segmentation"
    spec = TrainSpec(
        description="Train the 3D UNet segmentation model on the final labels",
        config=SHARED_OPTIONS,
    )


class DeepEditTrainer(_RadiologyTrainer):
    """Trains ``deepedit``: ``unet(1 + n_labels, n_labels)`` on the image and simulated clicks."""

    model = "deepedit"
    options = {**SHARED_OPTIONS, **CLICK_OPTIONS}
    spec = TrainSpec(
        description="Train DeepEdit on the final labels with simulated clicks",
        config={**SHARED_OPTIONS, **CLICK_OPTIONS},
    )


# ---------------------------------------------------------------- data-parallel training


@dataclass
class DdpResult:
    """A data-parallel run: rank 0's result, and a digest of each rank's final weights."""

    result: TrainResult
    digests: list[str]


# Run in each spawned rank (as ``exec``'s code, with ``package``, ``folder`` and ``kwargs``): the
# server imports the app from its folder under a name of its own, which a fresh process cannot
# import, so the rank imports it the same way before unpickling anything of it.
_BOOTSTRAP = """
import importlib, importlib.util, sys
try:
    importlib.import_module(package)
except ModuleNotFoundError:
    spec = importlib.util.spec_from_file_location(
        package, folder + "/__init__.py", submodule_search_locations=[folder]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[package] = module
    spec.loader.exec_module(module)
importlib.import_module(package + ".trainers").ddp_worker(**kwargs)
"""


def train_ddp(ctx: TrainContext, job: TrainJob, world_size: int, backend: str = "nccl") -> DdpResult:
    """Run ``job`` on ``world_size`` spawned ranks (``nccl``: one GPU each; ``gloo``: CPU).

    This process stays the coordinator: it forwards rank 0's reports and log lines to ``ctx``
    and passes ``ctx.should_stop()`` on to the ranks. Raises ``RuntimeError`` if a rank fails.
    """
    import multiprocessing

    spawn = multiprocessing.get_context("spawn")
    messages = spawn.Queue()
    stop = spawn.Event()
    store = job.workdir / f".ddp-{uuid.uuid4().hex}"
    payload = pickle.dumps(job)
    package, folder = __name__.rpartition(".")[0], str(Path(__file__).resolve().parent)
    shared = {"world_size": world_size, "backend": backend, "store": str(store), "payload": payload}
    ranks = []
    for rank in range(world_size):
        kwargs = {**shared, "rank": rank, "messages": messages, "stop": stop}
        code = (_BOOTSTRAP, {"package": package, "folder": folder, "kwargs": kwargs})
        ranks.append(spawn.Process(target=exec, args=code, name=f"labelloop-train-rank{rank}", daemon=True))
    for process in ranks:
        process.start()
    done: dict[int, dict[str, Any]] = {}
    try:
        while len(done) < world_size:
            if ctx.should_stop():
                stop.set()
            try:
                kind, rank, body = messages.get(timeout=0.5)
            except queue.Empty:
                failed = [p for p in ranks if p.exitcode not in (None, 0)]
                if failed:
                    raise RuntimeError(f"{failed[0].name} exited with code {failed[0].exitcode}") from None
                continue
            if kind == "report":
                ctx.report(body)
            elif kind == "log":
                ctx.log(body)
            elif kind == "error":
                raise RuntimeError(f"training rank {rank} failed:\n{body}")
            else:
                done[rank] = body
        for process in ranks:
            process.join(timeout=60)
    finally:
        for process in ranks:
            if process.is_alive():
                process.terminate()
                process.join(timeout=10)
        messages.close()
        messages.join_thread()
        store.unlink(missing_ok=True)
    first = done[0]
    weights = Path(first["weights"]) if first["weights"] else None
    return DdpResult(
        TrainResult(weights, first["metrics"], first["stats"]), [done[r]["digest"] for r in range(world_size)]
    )


class _RankContext(LocalTrainContext):
    """A spawned rank's ``TrainContext``: rank 0 sends reports and log lines to the coordinator."""

    def __init__(self, job: TrainJob, device: Any, messages: Any, stop: Any, rank: int) -> None:
        super().__init__(job.workdir, device, job.resume)
        self._messages, self._stop, self._rank = messages, stop, rank

    def report(self, stats: Mapping[str, Any]) -> None:
        if self._rank == 0:
            self._messages.put(("report", 0, dict(stats)))

    def log(self, message: str) -> None:
        if self._rank == 0:
            self._messages.put(("log", 0, message))

    def should_stop(self) -> bool:
        return bool(self._stop.is_set())


def ddp_worker(
    rank: int, world_size: int, backend: str, store: str, payload: bytes, messages: Any, stop: Any
) -> None:
    """One rank of ``train_ddp``: join the process group, ``run_rank``, send the outcome back."""
    import torch
    import torch.distributed

    try:
        job: TrainJob = pickle.loads(payload)
        if backend == "nccl":
            device = torch.device("cuda", rank)
            torch.cuda.set_device(device)
        else:
            device = torch.device("cpu")
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // world_size))
        torch.distributed.init_process_group(
            backend, init_method=f"file://{store}", rank=rank, world_size=world_size
        )
        try:
            outcome = run_rank(_RankContext(job, device, messages, stop, rank), job, Dist(rank, world_size))
        finally:
            torch.distributed.destroy_process_group()
        result = outcome.result
        weights = str(result.weights) if result.weights is not None else None
        body = {
            "weights": weights,
            "metrics": result.metrics,
            "stats": result.stats,
            "digest": outcome.digest,
        }
        messages.put(("done", rank, body))
    except BaseException:
        messages.put(("error", rank, traceback.format_exc()))
        raise
