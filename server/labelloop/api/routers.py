"""Every router, in the order they are mounted."""

from fastapi import APIRouter

from labelloop.api import datastore, info, logs, session

__all__ = ["ROUTERS"]

ROUTERS: tuple[APIRouter, ...] = (info.router, datastore.router, session.router, logs.router)
