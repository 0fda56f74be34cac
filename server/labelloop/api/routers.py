"""Every router, in the order they are mounted."""

from fastapi import APIRouter, FastAPI
from starlette.routing import NoMatchFound

from labelloop.api import (
    activelearning,
    datastore,
    infer,
    info,
    logs,
    measurements,
    metrics,
    model,
    pacs,
    progress,
    proxy,
    session,
    tasks,
)
from labelloop.quiet import WARNINGS_LOCK

__all__ = ["ROUTERS", "build_routes"]

ROUTERS: tuple[APIRouter, ...] = (
    info.router,
    datastore.router,
    progress.router,
    measurements.router,
    pacs.router,
    infer.router,
    activelearning.router,
    model.router,
    tasks.router,
    session.router,
    logs.router,
    metrics.router,
    proxy.router,
)


def build_routes(app: FastAPI) -> None:
    """Build every included route's request models now, before the app serves.

    FastAPI builds an included router's routes (their pydantic models) on the first request that
    reaches it. That costs the first request about 0.1 s, and it is not thread-safe: pydantic
    silences a warning of its own with ``warnings.catch_warnings()``, which swaps the process's
    global filter list, so two apps answering their first requests in two threads of one process
    (the tests run servers so) can lose each other's filter and raise it. Asking for a name that
    no route has walks every route once, in the thread that creates the app, under the lock every
    warning-silencing block of labelloop holds (``labelloop.quiet``): two apps created at once in
    two threads build one after the other.
    """
    try:
        with WARNINGS_LOCK:
            app.url_path_for("\0 no route has this name")
    except NoMatchFound:
        return
    raise AssertionError("a route is named like the sentinel")  # pragma: no cover
