"""The inference service: warm models per device, cached images, a bounded queue, worker threads."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from labelloop.errors import BusyError, ModelNotFoundError, ModelNotReadyError
from labelloop.imaging import Volume
from labelloop.inference.cache import ByteLRU
from labelloop.inference.devices import is_out_of_memory, resolve_device
from labelloop.registry import Registry
from labelloop.settings import InferenceSettings
from labelloop.tasks import InferOutput, InferRequest, InferSpec, InferTask

__all__ = ["ImageSource", "InferResult", "InferenceService"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageSource:
    """Where an inference image comes from.

    Attributes:
        key: its content hash (SHA-256); equal keys share cached loads and preprocessing.
        load: reads it (called on a worker thread, only on a cache miss).
        image_id: its datastore id, when it has one.
    """

    key: str
    load: Callable[[], Volume]
    image_id: str | None = None


@dataclass
class InferResult:
    """A finished inference: the task's output plus what the server adds."""

    model: str
    model_version: int | None
    image: Volume
    output: InferOutput
    latencies: dict[str, float] = field(default_factory=dict)
    cache: dict[str, bool] = field(default_factory=dict)
    device: str = "cpu"


class InferenceService:
    """Runs inference tasks off the event loop, one request per worker thread at a time.

    Models are loaded once per (model, version, device) and kept warm; when a new version
    becomes active the next request loads it, while requests already running finish on the
    weights they started with. Loaded images and preprocessed tensors are cached by content
    hash within ``settings.cache_bytes``.
    """

    def __init__(
        self, tasks: Mapping[str, InferTask], registry: Registry, settings: InferenceSettings
    ) -> None:
        self._tasks = dict(tasks)
        self._registry = registry
        self._settings = settings
        self.device = resolve_device(settings.device)
        self._executor = ThreadPoolExecutor(max_workers=settings.workers, thread_name_prefix="infer")
        self._closed = threading.Event()
        self._slots = threading.BoundedSemaphore(settings.queue_size)
        self._models: dict[tuple[str, int | None, str], Any] = {}
        self._models_lock = threading.Lock()
        self._load_locks: dict[str, threading.Lock] = {}
        self.images: ByteLRU[Volume] = ByteLRU(settings.cache_bytes // 2)
        self.prepared: ByteLRU[Any] = ByteLRU(settings.cache_bytes - settings.cache_bytes // 2)

    # ------------------------------------------------------------ what is hosted

    @property
    def names(self) -> list[str]:
        return list(self._tasks)

    def task(self, name: str) -> InferTask:
        task = self._tasks.get(name)
        if task is None:
            raise ModelNotFoundError(f"Model '{name}' not found; /info/ lists the models")
        return task

    def spec(self, name: str) -> InferSpec:
        return self.task(name).spec

    def state(self, name: str) -> dict[str, Any]:
        """``{"state": "ready" | "untrained", "version": n | None}`` of a model."""
        task = self.task(name)
        if not task.spec.needs_weights:
            return {"state": "ready", "version": None}
        active = self._registry.active(name)
        if active is None:
            return {"state": "untrained", "version": None}
        return {"state": "ready", "version": active.version}

    # ------------------------------------------------------------ running

    async def infer(
        self,
        name: str,
        source: ImageSource,
        params: Mapping[str, Any],
        label: Volume | None = None,
    ) -> InferResult:
        """Run model ``name`` on a worker thread; the event loop stays free meanwhile.

        Raises:
            ModelNotFoundError: no such model.
            ModelNotReadyError: it needs weights and has no active version.
            BusyError: ``queue_size`` requests are already waiting or running.
        """
        return await asyncio.wrap_future(self.submit(name, source, params, label))

    def submit(
        self,
        name: str,
        source: ImageSource,
        params: Mapping[str, Any],
        label: Volume | None = None,
    ) -> Future[InferResult]:
        """Queue a request; the future resolves on a worker thread."""
        self.task(name)
        if not self._slots.acquire(blocking=False):
            raise BusyError(
                f"{self._settings.queue_size} inference requests are already queued; try again shortly"
            )
        try:
            future = self._executor.submit(self._run, name, source, dict(params), label)
        except BaseException:
            self._slots.release()
            raise
        future.add_done_callback(lambda _: self._slots.release())
        return future

    def _weights(self, name: str, task: InferTask) -> tuple[int | None, Path | None]:
        if not task.spec.needs_weights:
            return None, None
        active = self._registry.active(name)
        if active is None:
            raise ModelNotReadyError(
                f"Model '{name}' has no trained version yet: train it first (POST /train/{name}) "
                f"or upload weights (PUT /model/{name})"
            )
        return active.version, active.path

    def _model(
        self, name: str, task: InferTask, version: int | None, weights: Path | None, device: Any
    ) -> Any:
        key = (name, version, str(device))
        with self._models_lock:
            if key in self._models:  # a model may legitimately be None (classical methods)
                return self._models[key]
            lock = self._load_locks.setdefault(name, threading.Lock())
        with lock:  # one load per model at a time; others wait for it instead of loading twice
            with self._models_lock:
                if key in self._models:
                    return self._models[key]
            started = time.perf_counter()
            model = task.load(weights, device)
            logger.info(
                "loaded model %s version %s on %s in %.2f s",
                name,
                version,
                device,
                time.perf_counter() - started,
            )
            with self._models_lock:
                # Older versions on this device are dropped; requests holding them finish first.
                for old in [k for k in self._models if k[0] == name and k[2] == str(device) and k != key]:
                    del self._models[old]
                self._models[key] = model
            return model

    def _image(self, source: ImageSource) -> tuple[Volume, bool]:
        found, cached = self.images.lookup(source.key)
        if found and cached is not None:
            return cached, True
        volume = source.load()
        self.images.put(source.key, volume)
        return volume, False

    def _prepared(self, task: InferTask, source: ImageSource, image: Volume, device: Any) -> tuple[Any, bool]:
        key = (source.key, task.preprocess_key, str(device))
        found, cached = self.prepared.lookup(key)
        if found:
            return cached, True
        prepared = task.preprocess(image, device)
        self.prepared.put(key, prepared)
        return prepared, False

    def _run(
        self, name: str, source: ImageSource, params: dict[str, Any], label: Volume | None
    ) -> InferResult:
        started = time.perf_counter()
        task = self.task(name)
        version, weights = self._weights(name, task)
        device = self.device
        model = self._model(name, task, version, weights, device)
        image, image_hit = self._image(source)
        prepared, prepared_hit = self._prepared(task, source, image, device)
        pre = time.perf_counter() - started
        request = InferRequest(params=params, image=image, device=device, label=label)
        try:
            output = task.infer(model, prepared, request)
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            output, device = self._after_out_of_memory(name, task, version, weights, source, image, request)
        total = time.perf_counter() - started
        latencies = {"pre": round(pre, 4), **{k: round(v, 4) for k, v in output.latencies.items()}}
        latencies["total"] = round(total, 4)
        return InferResult(
            model=name,
            model_version=version,
            image=image,
            output=output,
            latencies=latencies,
            cache={"image": image_hit, "prepared": prepared_hit},
            device=str(device),
        )

    def _after_out_of_memory(
        self,
        name: str,
        task: InferTask,
        version: int | None,
        weights: Path | None,
        source: ImageSource,
        image: Volume,
        request: InferRequest,
    ) -> tuple[InferOutput, Any]:
        """Retry with a sliding-window batch of 1, then on the CPU, instead of failing."""
        import torch

        logger.warning(
            "model %s ran out of memory on %s; retrying with a smaller batch", name, request.device
        )
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        model = self._model(name, task, version, weights, request.device)
        prepared, _ = self._prepared(task, source, image, request.device)
        try:
            return task.infer(model, prepared, replace(request, sw_batch_size=1)), request.device
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
        logger.warning("model %s ran out of memory again; running this request on the CPU", name)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        cpu = torch.device("cpu")
        model = self._model(name, task, version, weights, cpu)
        prepared, _ = self._prepared(task, source, image, cpu)
        return task.infer(model, prepared, replace(request, device=cpu, sw_batch_size=1)), cpu

    def warmup(self) -> None:
        """Load every model that can run now (active versions, classical and bundle models); stops
        early once ``close`` was called."""
        for name, task in self._tasks.items():
            if self._closed.is_set():
                return
            try:
                version, weights = self._weights(name, task)
                self._model(name, task, version, weights, self.device)
            except ModelNotReadyError:
                continue
            except Exception:
                logger.exception("warm-up of model %s failed", name)

    def close(self) -> None:
        """Drop queued requests and wait for the running ones (they read the registry's database)."""
        self._closed.set()
        self._executor.shutdown(wait=True, cancel_futures=True)
