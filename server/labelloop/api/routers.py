"""Every router, in the order they are mounted."""

from fastapi import APIRouter

from labelloop.api import datastore, infer, info, logs, model, session

__all__ = ["ROUTERS"]

ROUTERS: tuple[APIRouter, ...] = (
    info.router,
    datastore.router,
    infer.router,
    model.router,
    session.router,
    logs.router,
)
