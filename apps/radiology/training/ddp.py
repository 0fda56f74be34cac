"""Data-parallel training: ``train_ddp`` runs ``loop.run_rank`` in one spawned process per rank.

The ranks join a ``torch.distributed`` process group (NCCL, one GPU each; gloo on the CPU in
tests) through a file store in the run's workdir. The coordinating process forwards rank 0's
reports and log lines to its own ``TrainContext`` and passes stop requests on to the ranks.
"""

from __future__ import annotations

import os
import pickle
import queue
import traceback
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labelloop.tasks import LocalTrainContext, TrainContext, TrainResult

from .job import Dist, TrainJob
from .loop import run_rank

__all__ = ["DdpResult", "ddp_worker", "train_ddp"]


@dataclass
class DdpResult:
    """A data-parallel run: rank 0's result, and a digest of each rank's final weights."""

    result: TrainResult
    digests: list[str]


# Run in each spawned rank (as ``exec``'s code, with ``package``, ``folder``, ``worker`` and
# ``kwargs``): the server imports the app from its folder under a name of its own, which a fresh
# process cannot import, so the rank imports the app package the same way before it imports this
# module (``worker``, under the app's name) and unpickles anything of it.
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
importlib.import_module(worker).ddp_worker(**kwargs)
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
    # this module is ``<app>.training.ddp``: the app package is two levels up
    package, folder = __name__.rsplit(".", 2)[0], str(Path(__file__).resolve().parents[1])
    shared = {"world_size": world_size, "backend": backend, "store": str(store), "payload": payload}
    ranks = []
    for rank in range(world_size):
        kwargs = {**shared, "rank": rank, "messages": messages, "stop": stop}
        code = (_BOOTSTRAP, {"package": package, "folder": folder, "worker": __name__, "kwargs": kwargs})
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
