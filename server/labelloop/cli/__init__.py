"""``labelloop serve | import | migrate | user | audit | keys | sample-data``: thin commands over services.

Every flag also reads its ``LABELLOOP_*`` environment variable (through ``Settings``); a
flag given on the command line wins.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from labelloop import __version__
from labelloop.cli import users
from labelloop.cli.common import (
    SERVER_FLAGS,
    Progress,
    add_settings_flags,
    configure_logging,
    settings_epilog,
    settings_from,
)
from labelloop.settings import Settings

__all__ = ["main"]

logger = logging.getLogger("labelloop")


def _cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from labelloop.errors import LabelloopError
    from labelloop.server import check_exposure, create_app

    settings = settings_from(args)
    try:
        check_exposure(settings, allow_unauthenticated=args.allow_unauthenticated)
    except LabelloopError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    configure_logging(settings, to_file=True)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,
        timeout_graceful_shutdown=10,
    )
    return 0


def _cmd_import(args: argparse.Namespace) -> int:
    from labelloop.server import build_services

    settings = settings_from(args)
    configure_logging(settings, to_file=False)
    services = build_services(settings)
    report = services.datastore.import_folder(
        Path(args.folder), user=settings.user, progress=Progress(f"import {args.folder}")
    )
    print(report.summary())
    for name, reason in report.skipped:
        print(f"  skipped {name}: {reason}")
    return 0


def _cmd_migrate(args: argparse.Namespace) -> int:
    from labelloop.db import Database

    settings = settings_from(args)
    configure_logging(settings, to_file=False)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(settings.resolved_database_url)
    try:
        db.migrate()
    finally:
        db.dispose()
    print(f"database at head: {settings.resolved_database_url.split('@')[-1]}")
    return 0


def _cmd_sample_data(args: argparse.Namespace) -> int:
    from labelloop.sampledata import SampleDataError, build_sample_data

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        summary = build_sample_data(
            Path(args.out),
            real=args.real,
            synthetic=args.synthetic,
            seed=args.seed,
            labelled=args.labelled,
            progress=Progress("sample data"),
        )
    except SampleDataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for kind, ids in summary.items():
        if isinstance(ids, list):
            print(f"{kind}: {len(ids)} cases")
    print(f"sample data in {args.out}")
    return 0


def _load_settings_file(path: str) -> Settings:
    return Settings.model_validate_json(Path(path).read_text())


def _cmd_worker(args: argparse.Namespace) -> int:
    # Only the database and the worker loop: an idle worker holds no torch, app or web stack (jobs
    # import those in their own processes), so not ``build_services``, which loads the app.
    from labelloop.db import Database
    from labelloop.jobs import JobQueue, SubprocessRunner, Worker, die_with_parent, write_settings_file

    if args.settings_file:
        settings = _load_settings_file(args.settings_file)
        settings_file = Path(args.settings_file)
        die_with_parent()  # started by a server: go when it goes
    else:
        settings = settings_from(args)
        settings_file = write_settings_file(settings)
    configure_logging(settings, to_file=True)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(settings.resolved_database_url)
    if not args.settings_file:
        db.migrate()  # a server migrates before it starts its workers
    jobs_dir = settings.data_dir / "jobs"
    runner = SubprocessRunner(settings_file, jobs_dir, settings.jobs.nice)
    if settings.jobs.runner == "ray":
        from labelloop.jobs.ray_runner import RayRunner

        runner = RayRunner(settings_file, jobs_dir, settings.jobs.nice, settings.ray.address)
    worker = Worker(JobQueue(db), runner, settings.jobs, jobs_dir)
    worker.install_signal_handlers()
    try:
        worker.run_forever()
    finally:
        db.dispose()
    return 0


def _cmd_run_job(args: argparse.Namespace) -> int:
    from labelloop.jobs import JobQueue, execute_job
    from labelloop.server import build_services

    settings = _load_settings_file(args.settings_file)
    configure_logging(settings, to_file=False)
    services = build_services(settings)
    run: Callable[..., int] = execute_job
    if settings.jobs.runner == "ray":  # the job's work runs on the Ray cluster (jobs/ray_runner.py)
        from labelloop.jobs.ray_engine import RayEngine

        run = RayEngine(settings.ray, settings.app, settings.jobs.nice).execute
    return run(
        args.job_id,
        app=services.app,
        datastore=services.datastore,
        registry=services.registry,
        inference=services.inference,
        queue=JobQueue(services.datastore.db),
        settings=settings.jobs,
        jobs_dir=settings.data_dir / "jobs",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="labelloop", description=__doc__.splitlines()[0] if __doc__ else None
    )
    parser.add_argument("--version", action="version", version=f"labelloop {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser(
        "serve",
        help="Serve the app and studies over HTTP (MONAI Label REST API)",
        description="Serve the app and studies over HTTP (MONAI Label REST API). A flag given here wins "
        "over its environment variable.",
        epilog=settings_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_settings_flags(serve, list(SERVER_FLAGS))
    serve.add_argument(
        "--allow-unauthenticated",
        action="store_true",
        help="Serve a non-loopback address with auth off (only behind a proxy that authenticates)",
    )
    serve.set_defaults(func=_cmd_serve)

    imp = commands.add_parser("import", help="Register a MONAI Label-style studies folder in place")
    imp.add_argument("folder", help="Folder with images at the top and labels/<tag>/<id>.<ext>")
    add_settings_flags(imp, ["--app", "--data-dir", "--database-url", "--log-level"])
    imp.set_defaults(func=_cmd_import)

    worker = commands.add_parser("worker", help="Run queued jobs (training, scoring, batch inference)")
    add_settings_flags(worker, ["--app", "--data-dir", "--database-url", "--log-level"])
    worker.add_argument("--settings-file", help=argparse.SUPPRESS)
    worker.set_defaults(func=_cmd_worker)

    run_job = commands.add_parser("run-job", help="(internal) Run one claimed job; workers start it")
    run_job.add_argument("job_id")
    run_job.add_argument("--settings-file", required=True)
    run_job.set_defaults(func=_cmd_run_job)

    mig = commands.add_parser("migrate", help="Apply database migrations and exit")
    add_settings_flags(mig, ["--data-dir", "--database-url", "--log-level"])
    mig.set_defaults(func=_cmd_migrate)

    sample = commands.add_parser(
        "sample-data",
        help="Write sample studies: a synthetic CT cohort and (--real) real cases from PyPI",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    sample.add_argument("--out", required=True, help="Folder to write the studies to")
    sample.add_argument("--real", action="store_true", help="Also fetch the real pyradiomics 3.0.1 cases")
    sample.add_argument("--synthetic", type=int, default=20, help="Number of synthetic CT cases")
    sample.add_argument("--seed", type=int, default=0, help="Seed of the synthetic cohort")
    sample.add_argument(
        "--labelled", type=int, default=4, help="Synthetic cases that start with a final label"
    )
    sample.set_defaults(func=_cmd_sample_data)
    users.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
