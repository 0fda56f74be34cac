"""The composition root: ``create_app(settings)`` builds the services and mounts the routers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import anyio.to_thread
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from labelloop import __version__
from labelloop.api import (
    ROUTERS,
    BodySizeLimitMiddleware,
    CatchAllMiddleware,
    Services,
    install_error_handlers,
)
from labelloop.datastore import Database, Datastore, ImportReport, validate_id
from labelloop.errors import LabelloopError
from labelloop.inference import InferenceService
from labelloop.registry import Registry
from labelloop.settings import Settings
from labelloop.tasks import App, BundleTask, InferTask, load_app

__all__ = ["create_app", "build_services", "import_studies"]

logger = logging.getLogger(__name__)


def _infer_tasks(app: App, bundles: list[Path]) -> dict[str, InferTask]:
    tasks: dict[str, InferTask] = dict(app.infer_tasks)
    for folder in bundles:
        bundle = BundleTask(folder)
        if bundle.name in tasks:
            raise LabelloopError(f"Bundle {folder} is named like an existing model '{bundle.name}'")
        tasks[bundle.name] = bundle
    for name in tasks:
        validate_id(name, "model name")
    return tasks


def build_services(settings: Settings) -> Services:
    """Open (and migrate) the database, the datastore, the registry and the app; no HTTP involved."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    app = load_app(settings.app)
    db = Database(settings.resolved_database_url)
    db.migrate()
    datastore = Datastore(
        db,
        settings.data_dir,
        settings=settings.datastore,
        session_settings=settings.sessions,
        name=app.name,
        description=app.description,
    )
    registry = Registry(db, datastore.blobs)
    inference = InferenceService(_infer_tasks(app, settings.bundles), registry, settings.inference)
    return Services(settings=settings, app=app, datastore=datastore, registry=registry, inference=inference)


def import_studies(services: Services) -> ImportReport | None:
    """Register ``settings.studies`` in place when it is a local folder."""
    studies = services.settings.studies
    if not studies:
        return None
    if studies.startswith(("http://", "https://")):
        raise LabelloopError("DICOMweb studies are not supported yet; give a local folder")
    return services.datastore.import_folder(Path(studies), user=services.settings.user)


async def _clean_sessions_forever(services: Services) -> None:
    interval = services.settings.sessions.cleanup_interval_s
    while True:
        try:
            await anyio.to_thread.run_sync(services.datastore.sessions.remove_expired)
        except Exception:
            logger.exception("session cleanup failed")
        await asyncio.sleep(interval)


def create_app(settings: Settings) -> FastAPI:
    """The labelloop ASGI application for ``settings``.

    Services are built in the lifespan, so importing this module or calling this function
    touches no database and no file.
    """

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = await anyio.to_thread.run_sync(build_services, settings)
        removed = services.datastore.blobs.clean_scratch(older_than_s=3600)
        if removed:
            logger.info("removed %d stale scratch files", removed)
        report = await anyio.to_thread.run_sync(import_studies, services)
        if report is not None:
            logger.info("studies %s: %s", settings.studies, report.summary())
        app.state.services = services
        if settings.inference.warmup:
            threading.Thread(target=services.inference.warmup, name="warmup", daemon=True).start()
        cleaner = asyncio.create_task(_clean_sessions_forever(services))
        logger.info("labelloop %s serving app %r from %s", __version__, services.app.name, settings.app)
        try:
            yield
        finally:
            cleaner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await cleaner
            services.inference.close()
            services.datastore.db.dispose()

    app = FastAPI(
        title="labelloop",
        version=__version__,
        description="Active-learning annotation server for 3D medical images (MONAI Label REST API)",
        lifespan=lifespan,
        docs_url="/",
        redoc_url="/docs",
    )
    install_error_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    # Added inside-out: CORS is outermost, so every answer (413 and 500 included) carries CORS headers.
    app.add_middleware(CatchAllMiddleware)
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.datastore.upload_max_bytes)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.cors_origins,
        allow_credentials=True,
        allow_methods=["*"],
        allow_headers=["*"],
        expose_headers=["ETag", "Content-Disposition"],
    )
    return app
