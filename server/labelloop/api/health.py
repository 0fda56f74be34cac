"""``GET /health``: whether this server can do its work, for load balancers and container health checks.

Open without a log-in (it tells nothing about patients): the database answers, and the job workers
this server started are running. 200 when all is well, 503 otherwise, with the same body.
"""

from __future__ import annotations

from typing import Literal

import anyio.to_thread
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from labelloop.api.deps import ServicesDep

__all__ = ["router"]

router = APIRouter(tags=["health"])


class WorkersHealth(BaseModel):
    expected: int = Field(description="Job workers this server starts (jobs.workers)")
    running: int = Field(description="Of those, processes still running")
    live_in_database: int = Field(
        description="Workers of every server on this database with a recent heartbeat"
    )


class HealthRead(BaseModel):
    status: Literal["ok", "unhealthy"]
    database: bool = Field(description="The database answered a query")
    workers: WorkersHealth


@router.get(
    "/health",
    summary="Whether the database answers and this server's job workers run (200, else 503)",
    response_model=HealthRead,
    responses={503: {"model": HealthRead, "description": "The database or a worker is down"}},
)
async def health(services: ServicesDep, request: Request) -> JSONResponse:
    database = await anyio.to_thread.run_sync(services.datastore.db.ping)
    processes = getattr(request.app.state, "worker_processes", [])
    running = sum(1 for p in processes if p.poll() is None)
    live = 0
    if database:
        stale = services.settings.jobs.stale_after_s
        live = await anyio.to_thread.run_sync(services.jobs.queue.live_workers, stale)
    expected = services.settings.jobs.workers
    healthy = database and running >= expected
    body = HealthRead(
        status="ok" if healthy else "unhealthy",
        database=database,
        workers=WorkersHealth(expected=expected, running=running, live_in_database=live),
    )
    return JSONResponse(body.model_dump(), status_code=200 if healthy else 503)
