"""``/train/``, ``/scoring/``, ``/batch/infer``: jobs as MONAI Label task objects (sections 2.3, 2.6, 2.7)."""

from __future__ import annotations

from functools import partial
from typing import Annotated, Any, Literal

import anyio.to_thread
from fastapi import APIRouter, Body, Path, Query
from fastapi.responses import JSONResponse

from labelloop.api import schemas
from labelloop.api.deps import ServicesDep, UserDep
from labelloop.api.schemas import ID_SCHEMA, errors
from labelloop.errors import NotFoundError
from labelloop.jobs import Job, JobKind, JobService, JobStatus

__all__ = ["router"]

router = APIRouter(tags=["train, scoring, batch inference"], responses=schemas.AUTH_ERRORS)

Params = Annotated[dict[str, Any] | None, Body()]
#: Trainer, scoring method and model names are ids; another name is a 404.
NamePath = Annotated[str, Path(json_schema_extra=ID_SCHEMA)]

#: The status routes answer one task object, or a list of them with ``?all=true``.
_TASKS = schemas.TaskRead | list[schemas.TaskRead]
#: A submitted job's task object, or with ``run_sync=true`` what the job returned (training: its stats).
_SUBMITTED = schemas.TaskRead | dict[str, Any]
#: What each trainer or scoring method of a run-them-all request answered.
_EACH = dict[str, schemas.EachTaskRead]
#: A body that is not JSON (400), too large (413), not an object or with a bad option (422).
_SUBMIT_ERRORS = errors(400, 404, 413, 422, 429)
_STATUS_ERRORS = errors(404, 422)

_TITLE = {JobKind.TRAIN: "Train", JobKind.SCORING: "Scoring", JobKind.BATCH_INFER: "Batch_infer"}


def _status(kind: JobKind, services: ServicesDep, all_: bool, check_if_running: bool) -> Any:
    jobs: JobService = services.jobs
    if check_if_running:
        job = jobs.running(kind)
        if job is None:
            raise NotFoundError(f"No {_TITLE[kind]} Tasks are currently Running")
        return schemas.task_json(job)
    if all_:
        return [schemas.task_json(job) for job in jobs.history(kind)]
    # A running task first: a queued one behind it is not what a client polling status waits for.
    running = jobs.running(kind)
    latest = running if running is not None and running.status == JobStatus.RUNNING else jobs.latest(kind)
    if latest is None:
        raise NotFoundError(f"No {_TITLE[kind]} Tasks Found")
    return schemas.task_json(latest)


async def _stop(kind: JobKind, services: ServicesDep, user: str) -> JSONResponse:
    job = await anyio.to_thread.run_sync(services.jobs.stop, kind, user)
    return JSONResponse(schemas.task_json(job) if job is not None else None)


async def _finish(services: ServicesDep, job: Job, run_sync: bool) -> Any:
    if not run_sync:
        return schemas.task_json(job)
    done = await services.jobs.wait(job.id)
    if done.status == JobStatus.DONE and isinstance(done.result, dict):
        return done.result.get("train_stats", done.result) if done.kind == JobKind.TRAIN else done.result
    return schemas.task_json(done)


# ---------------------------------------------------------------- train


@router.post(
    "/train/{model}",
    summary="Train a model in a worker process (429 while one is queued or running)",
    response_model=_SUBMITTED,
    response_model_exclude_unset=True,
    responses=_SUBMIT_ERRORS,
)
async def train(
    services: ServicesDep,
    user: UserDep,
    model: NamePath,
    params: Params = None,
    run_sync: Annotated[bool, Query()] = False,
    enqueue: Annotated[bool, Query()] = False,
) -> Any:
    job = await anyio.to_thread.run_sync(
        lambda: services.jobs.submit_train(model, params or {}, user, enqueue=enqueue)
    )
    return await _finish(services, job, run_sync)


@router.post(
    "/train/",
    summary="Deprecated: queue every trainer (OHIF uses it)",
    response_model=_EACH,
    response_model_exclude_unset=True,
    responses=errors(400, 404, 413, 422),
)
async def train_all(services: ServicesDep, user: UserDep, params: Params = None) -> Any:
    jobs = await anyio.to_thread.run_sync(partial(services.jobs.submit_all_trainers, params or {}, user))
    return {name: {"result": schemas.task_json(job), "detail": None} for name, job in jobs.items()}


@router.get(
    "/train/",
    summary="The newest train task, all of them, or the running one (404 if none)",
    response_model=_TASKS,
    response_model_exclude_unset=True,
    responses=_STATUS_ERRORS,
)
def train_status(
    services: ServicesDep,
    all: Annotated[bool, Query()] = False,
    check_if_running: Annotated[bool, Query()] = False,
) -> Any:
    return _status(JobKind.TRAIN, services, all, check_if_running)


@router.delete(
    "/train/",
    summary="Stop the running train task and cancel queued ones (null if none)",
    response_model=schemas.TaskRead | None,
)
async def train_stop(services: ServicesDep, user: UserDep) -> JSONResponse:
    return await _stop(JobKind.TRAIN, services, user)


@router.get(
    "/train/{task_id}",
    summary="One train task by id (ours)",
    response_model_exclude_unset=True,
    responses=_STATUS_ERRORS,
)
def train_task(services: ServicesDep, task_id: NamePath) -> schemas.TaskRead:
    job = services.jobs.get(task_id)
    if job.kind != JobKind.TRAIN:
        raise NotFoundError(f"Task '{task_id}' is not a train task")
    return schemas.task(job)


# ---------------------------------------------------------------- scoring


@router.post(
    "/scoring/{method}",
    summary="Run a scoring method in a worker process",
    response_model=_SUBMITTED,
    response_model_exclude_unset=True,
    responses=_SUBMIT_ERRORS,
)
async def scoring(
    services: ServicesDep,
    user: UserDep,
    method: NamePath,
    params: Params = None,
    run_sync: Annotated[bool, Query()] = False,
) -> Any:
    job = await anyio.to_thread.run_sync(partial(services.jobs.submit_scoring, method, params or {}, user))
    return await _finish(services, job, run_sync)


@router.post(
    "/scoring/",
    summary="Deprecated: run every scoring method",
    response_model=_EACH,
    response_model_exclude_unset=True,
    responses=errors(400, 413, 422),
)
async def scoring_all(services: ServicesDep, user: UserDep, params: Params = None) -> Any:
    results: dict[str, Any] = {}
    for method in services.jobs.scoring_methods():
        try:
            job = await anyio.to_thread.run_sync(
                partial(services.jobs.submit_scoring, method, params or {}, user)
            )
            results[method] = {"result": schemas.task_json(job), "detail": None}
        except Exception as exc:  # one busy method must not hide the others
            results[method] = {"result": None, "detail": str(exc)}
    return results


@router.get(
    "/scoring/",
    summary="The newest scoring task, all of them, or the running one",
    response_model=_TASKS,
    response_model_exclude_unset=True,
    responses=_STATUS_ERRORS,
)
def scoring_status(
    services: ServicesDep,
    all: Annotated[bool, Query()] = False,
    check_if_running: Annotated[bool, Query()] = False,
) -> Any:
    return _status(JobKind.SCORING, services, all, check_if_running)


@router.delete(
    "/scoring/", summary="Stop scoring (null if none runs)", response_model=schemas.TaskRead | None
)
async def scoring_stop(services: ServicesDep, user: UserDep) -> JSONResponse:
    return await _stop(JobKind.SCORING, services, user)


# ---------------------------------------------------------------- batch inference

_BATCH_DEFAULTS: dict[str, Any] = {
    "device": "cuda",
    "multi_gpu": True,
    "gpus": "all",
    "logging": "WARNING",
    "save_label": True,
    "label_tag": "original",
    "max_workers": 1,
    "max_batch_size": 0,
}


@router.post(
    "/batch/infer/{model}",
    summary="Infer a model over many images in a worker process",
    response_model=_SUBMITTED,
    response_model_exclude_unset=True,
    responses=_SUBMIT_ERRORS,
)
async def batch_infer(
    services: ServicesDep,
    user: UserDep,
    model: NamePath,
    params: Params = None,
    images: Annotated[Literal["all", "labeled", "unlabeled"], Query()] = "all",
    run_sync: Annotated[bool, Query()] = False,
) -> Any:
    body = params if params is not None else dict(_BATCH_DEFAULTS)  # a body replaces the defaults
    job = await anyio.to_thread.run_sync(
        partial(services.jobs.submit_batch_infer, model, images, body, user, services.inference.names)
    )
    return await _finish(services, job, run_sync)


@router.get(
    "/batch/infer",
    summary="The newest batch inference task, all of them, or the running one",
    response_model=_TASKS,
    response_model_exclude_unset=True,
    responses=_STATUS_ERRORS,
)
def batch_status(
    services: ServicesDep,
    all: Annotated[bool, Query()] = False,
    check_if_running: Annotated[bool, Query()] = False,
) -> Any:
    return _status(JobKind.BATCH_INFER, services, all, check_if_running)


@router.delete(
    "/batch/infer", summary="Stop batch inference (null if none runs)", response_model=schemas.TaskRead | None
)
async def batch_stop(services: ServicesDep, user: UserDep) -> JSONResponse:
    return await _stop(JobKind.BATCH_INFER, services, user)
