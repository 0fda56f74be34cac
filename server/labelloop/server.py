"""The composition root: ``create_app(settings)`` builds the services and mounts the routers."""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import anyio.to_thread
from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware

from labelloop import __version__
from labelloop.activelearning import ActiveLearning
from labelloop.api import (
    ROUTERS,
    AuditMiddleware,
    AuthenticationMiddleware,
    BodySizeLimitMiddleware,
    CatchAllMiddleware,
    Metrics,
    MetricsMiddleware,
    Services,
    audit_router,
    auth_router,
    authorize,
    build_routes,
    check_routes,
    cookie_signed_in,
    health_router,
    install_error_handlers,
    mount_docs,
    mount_ohif,
    mount_web,
)
from labelloop.auth import AuditTrail, Auth, OidcVerifier
from labelloop.datastore import Datastore, DicomWebSource, ImportReport, Measurer, PacsLink, validate_id
from labelloop.db import Database
from labelloop.errors import LabelloopError
from labelloop.inference import BundleTask, InferenceService
from labelloop.jobs import JobQueue, JobService, die_with_parent, write_settings_file
from labelloop.registry import Registry
from labelloop.settings import Settings
from labelloop.tasks import App, InferTask, load_app

__all__ = [
    "build_auth",
    "build_services",
    "check_exposure",
    "create_app",
    "import_studies",
    "is_loopback",
    "start_workers",
    "write_settings_file",
]

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


def _label_max(app: App, tasks: dict[str, InferTask]) -> int | None:
    """The largest label index the app and its models know: labels may hold 0 to it."""
    indices = [*app.labels.values()]
    for task in tasks.values():
        indices += task.spec.labels.values()
    return max(indices, default=None) or None


def build_services(settings: Settings) -> Services:
    """Open (and migrate) the database, the datastore, the registry and the app; no HTTP involved."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    app = load_app(settings.app)
    infer_tasks = _infer_tasks(app, settings.bundles)
    db = Database(settings.resolved_database_url)
    try:
        return _services_on(settings, app, infer_tasks, db)
    except BaseException:
        db.dispose()
        raise


def _services_on(settings: Settings, app: App, infer_tasks: dict[str, InferTask], db: Database) -> Services:
    db.migrate()
    pacs = None
    if settings.studies and settings.studies.startswith(("http://", "https://")):
        source = DicomWebSource(settings.studies, settings.dicomweb, settings.data_dir / "dicomweb")
        pacs = PacsLink(source, app.labels)
    datastore = Datastore(
        db,
        settings.data_dir,
        settings=settings.datastore,
        session_settings=settings.sessions,
        name=app.name,
        description=app.description,
        remote=pacs,
        label_max=_label_max(app, infer_tasks),
        writeback_retry_s=settings.dicomweb.writeback_interval_s,
        writeback_timeout_s=settings.dicomweb.timeout_s,
        measurer=Measurer(dict(app.labels), app.lesions),
    )
    registry = Registry(db, datastore.blobs)
    inference = InferenceService(infer_tasks, registry, settings.inference)
    jobs = JobService(JobQueue(db), app, datastore, settings.jobs)
    activelearning = ActiveLearning(datastore, app.strategies, settings.activelearning)
    audit = AuditTrail(db)
    auth = build_auth(settings, db, audit)
    return Services(
        settings=settings,
        app=app,
        datastore=datastore,
        registry=registry,
        inference=inference,
        jobs=jobs,
        activelearning=activelearning,
        auth=auth,
        audit=audit,
        pacs=pacs,
    )


def build_auth(settings: Settings, db: Database, audit: AuditTrail) -> Auth:
    """Users and tokens on ``db``, log-ins recorded in ``audit``; an OIDC issuer's tokens too when set."""
    oidc = OidcVerifier(settings.auth) if settings.auth.oidc_issuer else None
    return Auth(settings.auth, db, settings.data_dir, audit, anonymous_user=settings.user, oidc=oidc)


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_exposure(settings: Settings, *, allow_unauthenticated: bool) -> None:
    """Refuse to serve a network address without auth (as Orthanc does since 1.5.8)."""
    if settings.auth.enabled or allow_unauthenticated or is_loopback(settings.host):
        return
    raise LabelloopError(
        f"Refusing to serve {settings.host} without authentication: anyone who can reach it could read "
        "and delete patient data. Turn auth on (LABELLOOP_AUTH__ENABLED=true, then add users with "
        "`labelloop user add NAME --role monailabel-admin --password-stdin`), serve on 127.0.0.1, or "
        "pass --allow-unauthenticated if a proxy in front of it authenticates every request."
    )


def start_workers(settings: Settings, settings_file: Path) -> list[subprocess.Popen[bytes]]:
    """``settings.jobs.workers`` worker processes that die with this server (jobs never run in it)."""
    processes = []
    for _ in range(settings.jobs.workers):
        processes.append(
            subprocess.Popen(
                [sys.executable, "-m", "labelloop.cli", "worker", "--settings-file", str(settings_file)],
                stdin=subprocess.DEVNULL,
                preexec_fn=die_with_parent,  # noqa: PLW1509 - only sets the death signal
            )
        )
    return processes


def stop_workers(processes: list[subprocess.Popen[bytes]], grace_s: float) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_s + 5
    for process in processes:
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def import_studies(services: Services) -> ImportReport | None:
    """Register ``settings.studies`` in place if it is a folder (a PACS is refreshed in the background)."""
    studies = services.settings.studies
    if not studies or services.pacs is not None:
        return None
    return services.datastore.import_folder(Path(studies), user=services.settings.user)


async def _every(interval_s: float, what: str, work: Callable[[], object]) -> None:
    """Run ``work`` on a thread every ``interval_s`` seconds until cancelled."""
    while True:
        try:
            await anyio.to_thread.run_sync(work)
        except Exception:
            logger.exception("%s failed", what)
        await anyio.sleep(interval_s)


@contextlib.asynccontextmanager
async def _running(settings: Settings, services: Services) -> AsyncIterator[list[subprocess.Popen[bytes]]]:
    """Start-up work, the job workers (yielded) and the periodic loops; on exit all have stopped.

    The loops run in an anyio task group, so cancelling them waits for a loop's thread that is
    mid-work (a bare ``asyncio`` cancel returns at once and leaves the thread using the database
    while the pool is disposed: the connection it holds is then never closed).
    """
    scratch, orphans = await anyio.to_thread.run_sync(services.datastore.clean_leftovers)
    if scratch or orphans:
        logger.info("removed %d stale scratch files and %d files whose row never committed", scratch, orphans)
    report = await anyio.to_thread.run_sync(import_studies, services)
    if report is not None:
        logger.info("studies %s: %s", settings.studies, report.summary())
    if settings.auth.enabled and not settings.auth.oidc_issuer and not services.auth.users.all():
        logger.warning(
            "auth is on but there are no users: add one with "
            "`labelloop user add NAME --role monailabel-admin --password-stdin`"
        )
    # Jobs that were running when the server last stopped are not left RUNNING.
    await anyio.to_thread.run_sync(services.jobs.queue.reap, settings.jobs.stale_after_s)
    workers = start_workers(settings, write_settings_file(settings))
    warmup = threading.Thread(target=services.inference.warmup, name="warmup", daemon=True)
    if settings.inference.warmup:
        warmup.start()
    try:
        async with anyio.create_task_group() as loops:
            for interval_s, what, work in _loops(settings, services):
                loops.start_soon(_every, interval_s, what, work)
            logger.info(
                "labelloop %s serving app %r from %s on http://%s:%d/ (auth %s)",
                __version__,
                services.app.name,
                settings.app,
                settings.host,
                settings.port,
                "on" if settings.auth.enabled else "off",
            )
            try:
                yield workers
            finally:
                loops.cancel_scope.cancel()
    finally:
        await anyio.to_thread.run_sync(stop_workers, workers, settings.jobs.cancel_grace_s)
        # Waits for a running inference (or the warm-up's model) to finish: both read the registry.
        await anyio.to_thread.run_sync(services.inference.close)
        if warmup.is_alive():
            await anyio.to_thread.run_sync(warmup.join, 60.0)


def _loops(settings: Settings, services: Services) -> list[tuple[float, str, Callable[[], object]]]:
    """The server's periodic work: (interval in s, name for the log, work run on a thread)."""
    loops: list[tuple[float, str, Callable[[], object]]] = []
    if services.pacs is not None:
        # The PACS is listed in the background: the server answers at once, series appear as found.
        loops.append(
            (
                settings.dicomweb.refresh_interval_s,
                "PACS refresh",
                lambda: services.datastore.refresh_remote(settings.user),
            )
        )
        # Final labels are committed before their SEG is sent: what did not reach the PACS
        # (down, or the server stopped in between) is sent again from the outbox.
        loops.append(
            (settings.dicomweb.writeback_interval_s, "PACS write-back", services.datastore.push_write_backs)
        )
    if settings.activelearning.reads > 1:
        # A crash between a read's save and its consensus leaves the consensus missing.
        loops.append(
            (
                settings.sessions.cleanup_interval_s,
                "double reading",
                services.activelearning.complete_pending_reads,
            )
        )
    loops.append(
        (settings.sessions.cleanup_interval_s, "session cleanup", services.datastore.sessions.remove_expired)
    )
    loops.append(
        (
            settings.jobs.heartbeat_interval_s,
            "job housekeeping",
            lambda: (services.jobs.queue.reap(settings.jobs.stale_after_s), services.jobs.autotrain()),
        )
    )
    return loops


def create_app(settings: Settings) -> FastAPI:
    """The labelloop ASGI application for ``settings``.

    Services are built in the lifespan, so importing this module or calling this function
    touches no database and no file.
    """

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = await anyio.to_thread.run_sync(build_services, settings)
        try:
            async with _running(settings, services) as workers:
                app.state.services = services
                app.state.worker_processes = workers
                yield
        finally:
            # Last: every thread that could still hold one of its connections has ended.
            services.datastore.db.dispose()

    app = FastAPI(
        title="labelloop",
        version=__version__,
        description="Active-learning annotation server for 3D medical images (MONAI Label REST API)",
        lifespan=lifespan,
        # The explorer's pages come from mount_docs: FastAPI's own load their scripts from a CDN.
        docs_url=None,
        redoc_url=None,
        # Every route first learns who calls it and whether their role may (api/permissions.py).
        dependencies=[Depends(authorize)],
    )
    install_error_handlers(app)
    mount_docs(app)
    mount_web(app, auth_enabled=settings.auth.enabled)  # the dashboard, at /
    mount_ohif(app, auth_enabled=settings.auth.enabled, signed_in=cookie_signed_in)  # OHIF, at /ohif/
    for router in ROUTERS:
        app.include_router(router)
    if settings.auth.enabled:
        app.include_router(auth_router)  # with auth off, /auth/ is a 404: clients read that as "off"
    app.include_router(audit_router)
    app.include_router(health_router)
    check_routes(app.routes)
    build_routes(app)
    # Added inside-out: CORS is outermost, so every answer (413 and 500 included) carries CORS headers;
    # authentication comes before any body is read; the audit trail is innermost, where the route
    # and the principal are known.
    app.add_middleware(AuditMiddleware)
    app.add_middleware(AuthenticationMiddleware)
    app.add_middleware(CatchAllMiddleware)
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.datastore.upload_max_bytes)
    app.state.metrics = Metrics(app)
    app.add_middleware(MetricsMiddleware)  # times every answer, the 401s and 413s included
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.cors_origins,
        # Bearer tokens need no cookies; with "*" a browser page of any site must not get credentials.
        allow_credentials="*" not in settings.cors_origins,
        allow_methods=["*"],
        allow_headers=["*"],
        expose_headers=["ETag", "Content-Disposition"],
    )
    return app
