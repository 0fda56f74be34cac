"""Inside a job's process under the Ray runner: the job's work on the Ray cluster (``ray_runner``).

``RayEngine.execute`` runs a job as ``execute_job`` does (the claim watch, stop requests, progress
and the final status are its), with the work put on the cluster:

* training: the app's ``TrainTask.train`` under Ray Train's ``TorchTrainer``, one call per Ray Train
  worker (``torch.distributed`` set up by Ray Train: the trainer takes its rank's share). Each worker
  loads the app from its folder; rank 0's reports and log lines reach the job's ``TrainContext``
  through a ``_Channel`` actor, which carries the stop request back to every worker;
* batch inference and scoring: one Ray task per image, at most ``ray.max_tasks_in_flight`` at once;
  a Ray worker process keeps the app and the loaded model for its next image. Results are saved
  here, in the order the tasks finish, and each moves the job's progress on.

Only this process reads or writes the database; the cluster reads images, labels and weights and
writes checkpoints by their paths under the data directory, which every node shares.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from labelloop.datastore import ORIGINAL_TAG, Datastore, validate_tag
from labelloop.errors import ModelNotReadyError
from labelloop.imaging import read_volume
from labelloop.inference import InferenceService
from labelloop.jobs.batch import save_batch_label, select_images
from labelloop.jobs.execute import execute_job
from labelloop.jobs.queue import JobQueue
from labelloop.jobs.scoring import dice_of_files, dice_pairs, plan_scoring, record_dice
from labelloop.registry import Registry
from labelloop.settings import JobSettings, RaySettings
from labelloop.tasks import App, InferRequest, TrainContext, TrainData, TrainResult, TrainTask, load_app

__all__ = ["RayEngine", "RayTrainTask"]

logger = logging.getLogger(__name__)

#: How often a Ray Train worker asks the channel whether the run should stop, in seconds.
STOP_CHECK_S = 0.5


# ---------------------------------------------------------------- on the cluster


#: In a Ray worker process: app folder -> the loaded app; (folder, model, version, device) -> model.
_APPS: dict[str, App] = {}
_MODELS: dict[tuple[str, ...], Any] = {}


def _settle(nice: int, threads: int | None) -> None:
    """Run this Ray worker process at niceness ``nice`` (at least) and ``threads`` torch threads."""
    if hasattr(os, "getpriority") and os.getpriority(os.PRIO_PROCESS, 0) < nice:
        os.setpriority(os.PRIO_PROCESS, 0, nice)
    if threads:
        import torch

        torch.set_num_threads(threads)


def _app(folder: str) -> App:
    app = _APPS.get(folder)
    if app is None:
        app = _APPS[folder] = load_app(Path(folder))
    return app


def _loaded(key: tuple[str, ...], load: Callable[[], Any]) -> Any:
    """The model for ``key``, loaded once per Ray worker process (only the newest one is kept)."""
    if key not in _MODELS:
        _MODELS.clear()
        _MODELS[key] = load()
    return _MODELS[key]


def _device() -> Any:
    """The GPU Ray gave this task (it sets ``CUDA_VISIBLE_DEVICES``), else the CPU."""
    import ray
    import torch

    return torch.device("cuda") if ray.get_gpu_ids() else torch.device("cpu")


def _node() -> str:
    import ray

    return str(ray.util.get_node_ip_address())


def _infer_image(
    folder: str,
    model: str,
    version: int | None,
    weights: str | None,
    image: str,
    params: dict[str, Any],
    nice: int,
    threads: int | None,
) -> dict[str, Any]:
    """A Ray task: infer ``model`` on the image file ``image``; the label map and its affine."""
    _settle(nice, threads)
    started = time.perf_counter()
    task = _app(folder).infer_tasks[model]
    device = _device()
    path = Path(weights) if weights else None
    network = _loaded((folder, model, str(version), str(device)), lambda: task.load(path, device))
    volume = read_volume(Path(image))
    prepared = task.preprocess(volume, device)
    pre = time.perf_counter() - started
    output = task.infer(network, prepared, InferRequest(params=params, image=volume, device=device))
    latencies = {"pre": round(pre, 4), **{k: round(v, 4) for k, v in output.latencies.items()}}
    latencies["total"] = round(time.perf_counter() - started, 4)
    return {
        "label": np.asarray(output.label).astype(np.uint8),
        "affine": np.asarray(volume.geometry.affine),
        "latencies": latencies,
        "node": _node(),
    }


def _score_image(
    folder: str, method: str, version: int, weights: str, image: str, nice: int, threads: int | None
) -> tuple[float | None, dict[str, Any]]:
    """A Ray task: the app's scoring method ``method`` on the image file ``image``."""
    _settle(nice, threads)
    scorer = _app(folder).scoring[method]
    device = _device()
    network = _loaded(
        (folder, "scoring", method, str(version), str(device)), lambda: scorer.load(Path(weights), device)
    )
    output = scorer.score(network, read_volume(Path(image)), device)
    return output.value, dict(output.details)


def _dice_pair(final: str, original: str) -> float | None:
    """A Ray task: the Dice between a final label and the model output it started from."""
    return dice_of_files(Path(final), Path(original))


class _Channel:
    """A Ray actor between a Ray Train run and its driver: rank 0's reports and log lines one way,
    the stop request the other."""

    def __init__(self) -> None:
        self._messages: list[tuple[str, Any]] = []
        self._stop = False

    def put(self, kind: str, body: Any) -> None:
        self._messages.append((kind, body))

    def drain(self) -> list[tuple[str, Any]]:
        messages, self._messages = self._messages, []
        return messages

    def stop(self) -> None:
        self._stop = True

    def stopped(self) -> bool:
        return self._stop


class _WorkerContext:
    """The ``TrainContext`` of a Ray Train worker: rank 0 reports and logs through the channel; every
    rank reads the stop request from it (at most every ``STOP_CHECK_S``)."""

    def __init__(self, channel: Any, rank: int, device: Any, workdir: Path, resume: Path | None) -> None:
        self._channel, self._rank, self._device = channel, rank, device
        self._workdir, self._resume = workdir, resume
        self._checked = 0.0
        self._stop = False

    @property
    def device(self) -> Any:
        return self._device

    @property
    def workdir(self) -> Path:
        return self._workdir

    def report(self, stats: Mapping[str, Any]) -> None:
        if self._rank == 0:
            self._channel.put.remote("report", dict(stats))

    def log(self, message: str) -> None:
        if self._rank == 0:
            self._channel.put.remote("log", message)

    def should_stop(self) -> bool:
        import ray

        now = time.monotonic()
        if not self._stop and now - self._checked >= STOP_CHECK_S:
            self._stop = bool(ray.get(self._channel.stopped.remote()))
            self._checked = now
        return self._stop

    def resume_checkpoint(self) -> Path | None:
        return self._resume


def _train_worker(config: dict[str, Any]) -> None:
    """One Ray Train worker: the app's trainer on this rank; rank 0 sends the result to the channel."""
    import ray
    import ray.train
    import ray.train.torch

    _settle(config["nice"], config["threads"])
    trainer = _app(config["folder"]).train_tasks[config["trainer"]]
    options = trainer.config_model.model_validate(config["options"])
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()
    channel = config["channel"]
    channel.put.remote("log", f"Ray Train worker {rank + 1} of {world}: node {_node()}, {device}")
    ctx = _WorkerContext(channel, rank, device, Path(config["workdir"]), config["resume"])
    result = trainer.train(ctx, config["data"], options, config["init"])
    if rank == 0:
        weights = str(result.weights) if result.weights is not None else None
        body = {"weights": weights, "metrics": result.metrics, "stats": result.stats}
        ray.get(channel.put.remote("done", body))


# ---------------------------------------------------------------- in the job's process


def _absolute(item: Any) -> Any:
    return dataclasses.replace(item, image=Path(item.image).resolve(), label=Path(item.label).resolve())


def _cause(exc: BaseException) -> BaseException:
    """The exception a Ray task raised, out of Ray's wrapper."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, Exception) else exc


class RayEngine:
    """A job's work on the Ray cluster ``settings.address`` (joined on first use, left by ``close``)."""

    def __init__(self, settings: RaySettings, app_folder: Path, nice: int) -> None:
        self.settings = settings
        self.app_folder = str(app_folder.resolve())
        self.nice = nice
        self._registry: Registry | None = None
        self._remote: dict[str, Any] = {}

    # ------------------------------------------------------------ the job

    def execute(
        self,
        job_id: str,
        *,
        app: App,
        datastore: Datastore,
        registry: Registry,
        inference: InferenceService,
        queue: JobQueue,
        settings: JobSettings,
        jobs_dir: Path,
    ) -> int:
        """``execute_job`` with the app's trainers under Ray Train and batch inference and scoring
        as Ray tasks; returns the exit code."""
        self._registry = registry
        trainers = {name: RayTrainTask(self, name, task) for name, task in app.train_tasks.items()}
        try:
            return execute_job(
                job_id,
                app=dataclasses.replace(app, train_tasks=trainers),
                datastore=datastore,
                registry=registry,
                inference=inference,
                queue=queue,
                settings=settings,
                jobs_dir=jobs_dir,
                batch_infer=self.batch_infer,
                scoring=self.scoring,
            )
        finally:
            self.close()

    def close(self) -> None:
        """Leave the cluster (Ray ends what this driver still runs there)."""
        import sys

        if "ray" in sys.modules:
            import ray

            if ray.is_initialized():
                ray.shutdown()

    # ------------------------------------------------------------ the cluster

    def _ray(self) -> Any:
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # nothing leaves the cluster
        os.environ.setdefault(
            "RAY_DEDUP_LOGS", "0"
        )  # every worker's lines reach the job log (read on import)
        import ray

        if not ray.is_initialized():
            # ray.init makes SIGTERM exit the process; here it is the stop request (execute_job's).
            on_sigterm = signal.getsignal(signal.SIGTERM)
            ray.init(address=self.settings.address, log_to_driver=True, logging_level=logging.WARNING)
            if threading.current_thread() is threading.main_thread():
                signal.signal(signal.SIGTERM, on_sigterm)
            resources = ray.cluster_resources()
            logger.info(
                "joined the Ray cluster at %s: %d nodes, %g CPUs, %g GPUs",
                self.settings.address,
                len([n for n in ray.nodes() if n.get("Alive")]),
                resources.get("CPU", 0),
                resources.get("GPU", 0),
            )
        return ray

    def _remote_of(self, function: Callable[..., Any], **options: Any) -> Any:
        ray = self._ray()
        if function.__name__ not in self._remote:
            self._remote[function.__name__] = ray.remote(function)
        return self._remote[function.__name__].options(**options)

    def _gpus(self) -> float:
        return float(self._ray().cluster_resources().get("GPU", 0))

    def _task_options(self) -> dict[str, Any]:
        gpus = self.settings.task_gpus
        if gpus is None:
            gpus = 1.0 if self._gpus() > 0 else 0.0
        return {"num_cpus": self.settings.task_cpus, "num_gpus": gpus}

    def _each(
        self, items: Iterable[str], submit: Callable[[str], Any], stop: threading.Event
    ) -> Iterator[tuple[str, Any]]:
        """``(item, result)`` as the tasks ``submit(item)`` starts finish, ``max_tasks_in_flight`` at
        a time; stops submitting once ``stop`` is set, and cancels what is still pending on the way out."""
        ray = self._ray()
        todo = collections.deque(items)
        pending: dict[Any, str] = {}
        try:
            while todo or pending:
                while todo and len(pending) < self.settings.max_tasks_in_flight and not stop.is_set():
                    item = todo.popleft()
                    pending[submit(item)] = item
                if stop.is_set():
                    return
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=0.5)
                for ref in ready:
                    item = pending.pop(ref)
                    try:
                        value = ray.get(ref)
                    except ray.exceptions.RayTaskError as exc:
                        raise _cause(exc) from exc
                    yield item, value
        finally:
            for ref in pending:
                ray.cancel(ref, force=True)

    # ------------------------------------------------------------ batch inference

    def batch_infer(
        self,
        model: str,
        images: str,
        params: dict[str, Any],
        datastore: Datastore,
        inference: InferenceService,
        user: str,
        progress: Callable[[int, int, str], None],
        stop: threading.Event,
    ) -> dict[str, Any]:
        """``run_batch_infer`` with one Ray task per image; each result becomes a label version."""
        tag = validate_tag(params.get("label_tag") or ORIGINAL_TAG)
        task = inference.task(model)
        version, weights = None, None
        if task.spec.needs_weights:
            active = self._registry.active(model) if self._registry is not None else None
            if active is None:
                raise ModelNotReadyError(f"Model '{model}' has no trained version yet: train it first")
            version, weights = active.version, str(Path(active.path).resolve())
        ids = select_images(datastore, images)
        remote = self._remote_of(_infer_image, **self._task_options())

        def submit(image_id: str) -> Any:
            path = datastore.images.file(datastore.images.get(image_id)).resolve()
            return remote.remote(
                self.app_folder,
                model,
                version,
                weights,
                str(path),
                params,
                self.nice,
                self.settings.torch_threads,
            )

        results: dict[str, Any] = {}
        for image_id, out in self._each(ids, submit, stop):
            entry: dict[str, Any] = {
                "tag": tag,
                "model_version": version,
                "latencies": out["latencies"],
                "node": out["node"],
            }
            if params.get("save_label", True):
                entry["label"] = image_id
                entry["version"] = save_batch_label(
                    datastore,
                    image_id,
                    tag,
                    out["label"],
                    out["affine"],
                    model=model,
                    model_version=version,
                    user=user,
                )
            results[image_id] = entry
            progress(len(results), len(ids), image_id)
        return results

    # ------------------------------------------------------------ scoring

    def scoring(
        self,
        name: str,
        app: App,
        datastore: Datastore,
        registry: Registry,
        device: Any,
        progress: Callable[[int, int, str], None],
        stop: threading.Event,
        *,
        log: Callable[[str], object] = lambda _: None,
        scores_version: Callable[[str, int], object] = lambda _model, _version: None,
    ) -> dict[str, Any] | None:
        """``run_scoring`` with one Ray task per image (``device`` is the cluster's to choose)."""
        if name == "dice":
            return self._dice(datastore, progress, stop)
        method = app.scoring.get(name)
        if method is None:
            raise ValueError(f"unknown scoring method {name!r}")
        plan = plan_scoring(name, method, datastore, registry, scores_version)
        todo = {image.id: image for image in plan.todo}
        remote = self._remote_of(_score_image, **self._task_options())
        weights = str(Path(plan.active.path).resolve())
        version = plan.active.version

        def submit(image_id: str) -> Any:
            path = str(datastore.images.file(todo[image_id]).resolve())
            return remote.remote(
                self.app_folder, name, version, weights, path, self.nice, self.settings.torch_threads
            )

        results = plan.start()
        done = 0
        for image_id, (value, details) in self._each(list(todo), submit, stop):
            if not plan.keep(todo[image_id], value, details, log):
                return None
            results[image_id] = value
            done += 1
            progress(done, len(todo), image_id)
        return results

    def _dice(
        self, datastore: Datastore, progress: Callable[[int, int, str], None], stop: threading.Event
    ) -> dict[str, Any]:
        pairs, originals = dice_pairs(datastore)
        finals = {label.image_id: label for label in pairs}
        remote = self._remote_of(_dice_pair, num_cpus=self.settings.task_cpus)

        def submit(image_id: str) -> Any:
            final, original = finals[image_id].path, originals[image_id].path
            return remote.remote(str(Path(final).resolve()), str(Path(original).resolve()))

        scores: dict[str, Any] = {}
        for image_id, score in self._each(list(finals), submit, stop):
            scores[image_id] = score
            record_dice(datastore, image_id, score, originals[image_id].version)
            progress(len(scores), len(finals), image_id)
        return scores

    # ------------------------------------------------------------ training

    def train(
        self,
        trainer: str,
        ctx: TrainContext,
        data: TrainData,
        config: Any,
        init_weights: Path | None,
    ) -> TrainResult:
        """The app's trainer ``trainer`` under ``TorchTrainer``: rank 0's progress and log lines go to
        ``ctx``, ``ctx.should_stop()`` reaches every worker; rank 0's result is the run's."""
        ray = self._ray()
        from ray.train import RunConfig, ScalingConfig
        from ray.train.torch import TorchTrainer

        use_gpu = self.settings.use_gpu if self.settings.use_gpu is not None else self._gpus() > 0
        if getattr(config, "device", "auto") == "cpu":
            use_gpu = False  # the run's own choice wins
        workers = self.settings.train_workers
        resources = {"CPU": self.settings.cpus_per_worker, **({"GPU": 1.0} if use_gpu else {})}
        workdir = Path(ctx.workdir).resolve()
        resume = ctx.resume_checkpoint()
        channel_class = self._remote.setdefault("_Channel", ray.remote(num_cpus=0)(_Channel))
        channel = channel_class.remote()
        ctx.log(
            f"training on the Ray cluster at {self.settings.address}: {workers} Ray Train worker(s), "
            + ("one GPU each" if use_gpu else f"{self.settings.cpus_per_worker:g} CPUs each")
        )
        run = TorchTrainer(
            _train_worker,
            train_loop_config={
                "folder": self.app_folder,
                "trainer": trainer,
                "options": config.model_dump(mode="json"),
                "data": TrainData(
                    train=[_absolute(i) for i in data.train], val=[_absolute(i) for i in data.val]
                ),
                "init": init_weights.resolve() if init_weights is not None else None,
                "resume": resume.resolve() if resume is not None else None,
                "workdir": str(workdir),
                "channel": channel,
                "nice": self.nice,
                "threads": self.settings.torch_threads,
            },
            scaling_config=ScalingConfig(
                num_workers=workers, use_gpu=use_gpu, resources_per_worker=resources
            ),
            run_config=RunConfig(name="ray-train", storage_path=str(workdir)),
        )
        outcome: dict[str, Any] = {}

        def fit() -> None:
            try:
                outcome["fit"] = run.fit()
            except BaseException as exc:  # handed to the caller's thread below
                outcome["error"] = exc

        thread = threading.Thread(target=fit, name="ray-train-fit", daemon=True)
        thread.start()
        asked = False
        try:
            while True:
                running = thread.is_alive()  # read first: what the run sent before it ended is drained below
                if not asked and ctx.should_stop():
                    channel.stop.remote()
                    asked = True
                for kind, body in ray.get(channel.drain.remote()):
                    if kind == "report":
                        ctx.report(body)
                    elif kind == "log":
                        ctx.log(body)
                    else:
                        outcome["done"] = body
                if not running:
                    break
                thread.join(0.25)
        finally:
            ray.kill(channel)
        if "error" in outcome:
            raise RuntimeError(f"the Ray Train run failed: {_train_failure(outcome['error'])}") from outcome[
                "error"
            ]
        done = outcome.get("done")
        if done is None:
            raise RuntimeError("the Ray Train run ended without a result from its rank 0")
        weights = Path(done["weights"]) if done["weights"] else None
        return TrainResult(weights, done["metrics"], done["stats"])


def _train_failure(exc: BaseException) -> str:
    """The first worker's error of a failed Ray Train run (Ray's own message otherwise)."""
    failures = getattr(exc, "worker_failures", None)
    if isinstance(failures, Mapping) and failures:
        rank, error = sorted(failures.items())[0]
        return f"worker {rank}: {type(_cause(error)).__name__}: {_cause(error)}"
    return f"{type(exc).__name__}: {exc}"


class RayTrainTask(TrainTask[Any]):
    """An app's trainer whose ``train`` runs on the Ray cluster (``RayEngine.train``)."""

    def __init__(self, engine: RayEngine, name: str, task: TrainTask[Any]) -> None:
        self.model = task.model
        self.spec = task.spec
        self.config_model = task.config_model
        self._engine = engine
        self._name = name

    def train(
        self, ctx: TrainContext, data: TrainData, config: Any, init_weights: Path | None
    ) -> TrainResult:
        return self._engine.train(self._name, ctx, data, config, init_weights)
