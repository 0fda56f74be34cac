"""Every router, in the order they are mounted."""

from fastapi import APIRouter

from labelloop.api import (
    activelearning,
    datastore,
    infer,
    info,
    logs,
    model,
    pacs,
    progress,
    proxy,
    session,
    tasks,
)

__all__ = ["ROUTERS"]

ROUTERS: tuple[APIRouter, ...] = (
    info.router,
    datastore.router,
    progress.router,
    pacs.router,
    infer.router,
    activelearning.router,
    model.router,
    tasks.router,
    session.router,
    logs.router,
    proxy.router,
)
