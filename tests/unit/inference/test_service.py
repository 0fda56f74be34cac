"""The inference service with a fake task: warm models per version, caches, its queue and workers."""

from __future__ import annotations

import asyncio
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from labelloop.datastore import Datastore, sha256_file
from labelloop.db import Database
from labelloop.errors import BusyError, ModelNotFoundError, ModelNotReadyError
from labelloop.imaging import Volume, read_volume
from labelloop.inference import ImageSource, InferenceService, InferResult
from labelloop.registry import Registry
from labelloop.settings import InferenceSettings
from labelloop.tasks import InferOutput, InferRequest, InferSpec, InferTask


class FakeTask(InferTask):
    """Labels every voxel above 0 HU; its "model" is the bytes of the weights file it was loaded with.

    ``gate``: each ``infer`` waits for it; ``barrier``: each ``infer`` waits for the others there;
    ``out_of_memory``: the first that many ``infer`` calls fail as if the device had run out of memory.
    """

    def __init__(
        self,
        *,
        needs_weights: bool = True,
        gate: threading.Event | None = None,
        barrier: threading.Barrier | None = None,
        out_of_memory: int = 0,
    ) -> None:
        self.spec = InferSpec(
            type="segmentation",
            labels={"spleen": 1},
            dimension=3,
            description="fake",
            needs_weights=needs_weights,
        )
        self.gate = gate
        self.barrier = barrier
        self.out_of_memory = out_of_memory
        self.loads: list[tuple[bytes | None, str]] = []
        self.preprocessed = 0
        self.requests: list[InferRequest] = []
        self.entered = threading.Semaphore(0)

    def load(self, weights: Path | None, device: Any) -> Any:
        content = weights.read_bytes() if weights is not None else None
        self.loads.append((content, str(device)))
        return content

    def preprocess(self, image: Volume, device: Any) -> Any:
        self.preprocessed += 1
        return np.asarray(image.array) > 0

    def infer(self, model: Any, prepared: Any, request: InferRequest) -> InferOutput:
        self.requests.append(request)
        self.entered.release()
        if self.gate is not None:
            assert self.gate.wait(10), "the test never opened the gate"
        if self.barrier is not None:
            self.barrier.wait()
        if self.out_of_memory > 0:
            self.out_of_memory -= 1
            raise RuntimeError("CUDA out of memory (fake)")
        return InferOutput(label=prepared.astype(np.uint8), result={"weights": model})


class OtherPreprocessing(FakeTask):
    @property
    def preprocess_key(self) -> str:
        return "other"


ServiceFactory = Callable[..., InferenceService]
Publish = Callable[[bytes], None]


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    db = Database(f"sqlite:///{tmp_path / 'labelloop.db'}")
    db.migrate()
    yield Registry(db, Datastore(db, tmp_path / "data").blobs)
    db.dispose()


@pytest.fixture
def make_service(registry: Registry) -> Iterator[ServiceFactory]:
    """``make_service({"name": task}, **InferenceSettings)`` on the CPU; all are closed after the test."""
    made: list[InferenceService] = []

    def make(tasks: Mapping[str, InferTask], **settings: Any) -> InferenceService:
        service = InferenceService(tasks, registry, InferenceSettings(**{"device": "cpu", **settings}))
        made.append(service)
        return service

    yield make
    for service in made:
        service.close()


@pytest.fixture
def publish(registry: Registry, tmp_path: Path) -> Publish:
    """``publish(content)``: weights with these bytes become the active version of model ``seg``."""

    def publish(content: bytes) -> None:
        source = tmp_path / "upload.pt"
        source.write_bytes(content)
        registry.publish("seg", source, source="upload", user="tester", activate=True)

    return publish


def image_source(path: Path, loads: list[str] | None = None) -> ImageSource:
    """The image at ``path`` keyed by its content hash; each load appends its file name to ``loads``."""

    def load() -> Volume:
        if loads is not None:
            loads.append(path.name)
        return read_volume(path)

    return ImageSource(key=sha256_file(path), load=load)


@pytest.fixture
def ct(volumes: Callable[..., Path]) -> ImageSource:
    return image_source(volumes("ct.nii.gz"))


def run(service: InferenceService, source: ImageSource, name: str = "seg") -> InferResult:
    return service.submit(name, source, {}).result(timeout=10)


# ------------------------------------------------------------ models and versions


def test_a_model_runs_with_the_weights_of_its_active_version(
    make_service: ServiceFactory, publish: Publish, ct: ImageSource
) -> None:
    publish(b"v1")
    result = run(make_service({"seg": FakeTask()}), ct)
    assert (result.model, result.model_version, result.device) == ("seg", 1, "cpu")
    assert result.output.result["weights"] == b"v1"
    np.testing.assert_array_equal(result.output.label, np.asarray(ct.load().array) > 0)


def test_a_model_is_loaded_once_and_kept_warm(
    make_service: ServiceFactory, publish: Publish, ct: ImageSource
) -> None:
    task = FakeTask()
    service = make_service({"seg": task})
    publish(b"v1")
    for _ in range(3):
        run(service, ct)
    assert task.loads == [(b"v1", "cpu")]


def test_warmup_loads_the_active_version_before_any_request(
    make_service: ServiceFactory, publish: Publish
) -> None:
    trained, untrained = FakeTask(), FakeTask()
    publish(b"v1")
    make_service({"seg": trained, "untrained": untrained}).warmup()
    assert (trained.loads, untrained.loads) == ([(b"v1", "cpu")], [])


def test_a_newly_active_version_is_used_from_the_next_request_on(
    make_service: ServiceFactory, publish: Publish, ct: ImageSource
) -> None:
    task = FakeTask()
    service = make_service({"seg": task})
    publish(b"v1")
    before = run(service, ct)
    publish(b"v2")
    after = [run(service, ct) for _ in range(2)]
    assert [r.model_version for r in (before, *after)] == [1, 2, 2]
    assert [r.output.result["weights"] for r in (before, *after)] == [b"v1", b"v2", b"v2"]
    assert task.loads == [(b"v1", "cpu"), (b"v2", "cpu")]


def test_a_rollback_serves_the_older_weights_again(
    make_service: ServiceFactory, publish: Publish, registry: Registry, ct: ImageSource
) -> None:
    service = make_service({"seg": FakeTask()})
    publish(b"v1")
    publish(b"v2")
    run(service, ct)
    registry.activate("seg", 1)
    result = run(service, ct)
    assert (result.model_version, result.output.result["weights"]) == (1, b"v1")


def test_a_warm_model_whose_version_was_retired_is_not_used(
    make_service: ServiceFactory, publish: Publish, registry: Registry, ct: ImageSource
) -> None:
    service = make_service({"seg": FakeTask()})
    publish(b"v1")
    run(service, ct)
    registry.retire_active("seg")
    with pytest.raises(ModelNotReadyError, match="no trained version"):
        run(service, ct)


def test_a_model_without_an_active_version_is_not_ready(
    make_service: ServiceFactory, ct: ImageSource
) -> None:
    task = FakeTask()
    with pytest.raises(ModelNotReadyError, match="'seg'"):
        run(make_service({"seg": task}), ct)
    assert task.loads == [] and task.requests == []


def test_a_model_that_needs_no_weights_runs_without_a_version(
    make_service: ServiceFactory, ct: ImageSource
) -> None:
    task = FakeTask(needs_weights=False)
    result = run(make_service({"seg": task}), ct)
    assert result.model_version is None and task.loads == [(None, "cpu")]


def test_state_tells_untrained_from_ready_with_its_version(
    make_service: ServiceFactory, publish: Publish
) -> None:
    service = make_service({"seg": FakeTask(), "classical": FakeTask(needs_weights=False)})
    assert service.state("seg") == {"state": "untrained", "version": None}
    assert service.state("classical") == {"state": "ready", "version": None}
    publish(b"v1")
    publish(b"v2")
    assert service.state("seg") == {"state": "ready", "version": 2}


def test_an_unknown_model_is_refused_before_it_is_queued(
    make_service: ServiceFactory, ct: ImageSource
) -> None:
    service = make_service({"seg": FakeTask()}, queue_size=1)
    for call in (
        lambda: service.submit("nope", ct, {}),
        lambda: service.state("nope"),
        lambda: service.spec("nope"),
    ):
        with pytest.raises(ModelNotFoundError, match="'nope'"):
            call()
    assert service.names == ["seg"]


def test_infer_awaits_the_result_from_a_worker_thread(make_service: ServiceFactory, ct: ImageSource) -> None:
    task = FakeTask(needs_weights=False)
    result = asyncio.run(make_service({"seg": task}).infer("seg", ct, {"threshold": 3}))
    assert result.model == "seg" and task.requests[0].params == {"threshold": 3}


# ------------------------------------------------------------ concurrency


def test_a_full_queue_refuses_new_requests_as_busy(make_service: ServiceFactory, ct: ImageSource) -> None:
    gate = threading.Event()
    service = make_service({"seg": FakeTask(needs_weights=False, gate=gate)}, workers=1, queue_size=2)
    queued = [service.submit("seg", ct, {}) for _ in range(2)]
    with pytest.raises(BusyError, match="2 inference requests"):
        service.submit("seg", ct, {})
    gate.set()
    assert all(f.result(timeout=10).model == "seg" for f in queued)


def test_one_worker_runs_one_request_at_a_time(make_service: ServiceFactory, ct: ImageSource) -> None:
    gate = threading.Event()
    task = FakeTask(needs_weights=False, gate=gate)
    service = make_service({"seg": task}, workers=1)
    futures = [service.submit("seg", ct, {}) for _ in range(2)]
    assert task.entered.acquire(timeout=10)
    time.sleep(0.2)
    assert len(task.requests) == 1 and not futures[1].done()
    gate.set()
    assert [f.result(timeout=10).model for f in futures] == ["seg", "seg"]


def test_two_workers_run_two_requests_at_once(make_service: ServiceFactory, ct: ImageSource) -> None:
    task = FakeTask(needs_weights=False, barrier=threading.Barrier(2, timeout=10))
    service = make_service({"seg": task}, workers=2)
    futures = [service.submit("seg", ct, {}) for _ in range(2)]
    assert [f.result(timeout=15).model for f in futures] == ["seg", "seg"]  # else the barrier breaks


def test_a_request_out_of_memory_is_retried_with_a_sliding_window_batch_of_one(
    make_service: ServiceFactory, ct: ImageSource
) -> None:
    task = FakeTask(needs_weights=False, out_of_memory=1)
    assert run(make_service({"seg": task}), ct).model == "seg"
    assert [r.sw_batch_size for r in task.requests] == [None, 1]


def test_an_error_that_is_not_out_of_memory_reaches_the_caller(
    make_service: ServiceFactory, ct: ImageSource
) -> None:
    class Failing(FakeTask):
        def infer(self, model: Any, prepared: Any, request: InferRequest) -> InferOutput:
            self.requests.append(request)
            raise ValueError("bad click")

    task = Failing(needs_weights=False)
    with pytest.raises(ValueError, match="bad click"):
        run(make_service({"seg": task}), ct)
    assert len(task.requests) == 1


# ------------------------------------------------------------ caches


def test_images_and_their_preprocessing_are_cached_by_content_hash(
    make_service: ServiceFactory, volumes: Callable[..., Path], tmp_path: Path
) -> None:
    task = FakeTask(needs_weights=False)
    service = make_service({"seg": task})
    path = volumes("ct.nii.gz")
    copy = Path(shutil.copy(path, tmp_path / "same-content.nii.gz"))
    loads: list[str] = []
    first = run(service, image_source(path, loads))
    again = run(service, image_source(copy, loads))
    assert (first.cache, again.cache) == (
        {"image": False, "prepared": False},
        {"image": True, "prepared": True},
    )
    assert loads == ["ct.nii.gz"] and task.preprocessed == 1


def test_an_image_with_other_content_is_loaded_and_preprocessed(
    make_service: ServiceFactory, volumes: Callable[..., Path]
) -> None:
    task = FakeTask(needs_weights=False)
    service = make_service({"seg": task})
    loads: list[str] = []
    run(service, image_source(volumes("a.nii.gz", seed=1), loads))
    other = run(service, image_source(volumes("b.nii.gz", seed=2), loads))
    assert other.cache == {"image": False, "prepared": False}
    assert loads == ["a.nii.gz", "b.nii.gz"] and task.preprocessed == 2


def test_images_beyond_the_cache_budget_are_loaded_again(
    make_service: ServiceFactory, volumes: Callable[..., Path]
) -> None:
    image_bytes = 24 * 20 * 12 * 2  # the default test image: int16
    service = make_service({"seg": FakeTask(needs_weights=False)}, cache_bytes=image_bytes)
    loads: list[str] = []
    source = image_source(volumes("ct.nii.gz"), loads)
    results = [run(service, source) for _ in range(2)]
    assert [r.cache["image"] for r in results] == [False, False] and loads == ["ct.nii.gz"] * 2
    assert service.images.used <= service.images.budget == image_bytes // 2


def test_tasks_share_preprocessing_only_when_their_preprocess_key_is_the_same(
    make_service: ServiceFactory, ct: ImageSource
) -> None:
    tasks = {
        "seg": FakeTask(needs_weights=False),
        "twin": FakeTask(needs_weights=False),
        "other": OtherPreprocessing(needs_weights=False),
    }
    service = make_service(tasks)
    prepared_hits = [run(service, ct, name).cache["prepared"] for name in tasks]
    assert prepared_hits == [False, True, False]
    assert [t.preprocessed for t in tasks.values()] == [1, 0, 1]
