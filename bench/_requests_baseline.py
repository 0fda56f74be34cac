"""The baseline of ``bench/small_requests.py``: a minimal FastAPI app doing the same I/O as labelloop.

It is what a small request costs with nothing but the framework, the server and the storage
under it, measured in the same run as labelloop so the ratio tells what labelloop's own layers
add. Run by ``bench/small_requests.py`` as ``uvicorn`` in a child process (same uvicorn defaults as
``labelloop serve``: httptools, uvloop where installed, one process)::

    python bench/_requests_baseline.py --data-dir DIR --database-url URL --info FILE --port N

Endpoints (the paths labelloop answers, so one client drives both):

- ``GET /info/``: the JSON document in ``--info`` (labelloop's own ``/info/`` answer of the same
  run), returned through a pydantic-free ``JSONResponse``: no database, as the reference's
  ``/info/`` reads its descriptor from memory.
- ``GET /datastore/?output=stats``: one grouped count over the labels table.
- ``PUT /datastore/label?image=&tag=``: the multipart upload streamed to a file in the data
  directory, flushed and ``fsync``-ed, renamed into place (the directory ``fsync``-ed, as labelloop's
  blob store does), and a row inserted in one committed
  transaction (SQLite in WAL mode with ``synchronous=FULL``, PostgreSQL with its defaults): an
  acknowledged label is on disk, as labelloop promises.
- ``POST /activelearning/random``: one at a time, in one transaction, the caller's open lease, else a random
  image without an open lease, leased for 10 minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import threading
import time
import uuid
from pathlib import Path
from typing import Annotated, Any

import uvicorn
from fastapi import Body, FastAPI, File, Query, UploadFile
from fastapi.responses import JSONResponse
from sqlalchemy import (
    Column,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    create_engine,
    event,
    func,
    insert,
    select,
)
from sqlalchemy.engine import Engine

metadata = MetaData()
images = Table("images", metadata, Column("id", String, primary_key=True))
labels = Table(
    "labels",
    metadata,
    Column("image_id", String, primary_key=True),
    Column("tag", String, primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("location", String, nullable=False),
    Column("created_at", Float, nullable=False),
)
leases = Table(
    "leases",
    metadata,
    Column("image_id", String, primary_key=True),
    Column("holder", String, nullable=False),
    Column("expires_at", Float, nullable=False),
)
LEASE_S = 600.0


def engine_for(url: str) -> Engine:
    if not url.startswith("sqlite"):
        return create_engine(url, pool_size=16, max_overflow=8)
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    return engine


def build(data_dir: Path, database_url: str, info: dict[str, Any], image_ids: list[str]) -> FastAPI:
    engine = engine_for(database_url)
    metadata.drop_all(engine)
    metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(insert(images), [{"id": i} for i in image_ids])
    handout = threading.Lock()
    blobs = data_dir / "labels"
    blobs.mkdir(parents=True, exist_ok=True)
    app = FastAPI()

    @app.get("/info/")
    def get_info() -> JSONResponse:
        return JSONResponse(info)

    @app.get("/datastore/")
    def stats(output: Annotated[str, Query()] = "stats") -> dict[str, Any]:
        with engine.connect() as conn:
            total = conn.execute(select(func.count()).select_from(images)).scalar_one()
            rows = conn.execute(
                select(labels.c.tag, func.count(func.distinct(labels.c.image_id))).group_by(labels.c.tag)
            ).all()
        by_tag = {tag: n for tag, n in rows}
        return {"total": total, "completed": by_tag.get("final", 0), "label_tags": by_tag}

    @app.put("/datastore/label")
    def save_label(image: str, label: Annotated[UploadFile, File()], tag: str = "final") -> dict[str, Any]:
        token = uuid.uuid4().hex
        target = blobs / token[:2] / f"{token}-{label.filename or 'label'}"
        target.parent.mkdir(exist_ok=True)
        partial = target.with_name(f".{target.name}.part")
        with open(partial, "wb") as f:
            shutil.copyfileobj(label.file, f, 1 << 20)
            f.flush()
            os.fsync(f.fileno())
        os.replace(partial, target)
        directory = os.open(target.parent, os.O_RDONLY)  # the rename is durable too, as labelloop's
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
        with engine.begin() as conn:
            version = conn.execute(
                select(func.coalesce(func.max(labels.c.version), 0)).where(
                    labels.c.image_id == image, labels.c.tag == tag
                )
            ).scalar_one()
            conn.execute(
                insert(labels).values(
                    image_id=image, tag=tag, version=version + 1, location=str(target), created_at=time.time()
                )
            )
        return {"image": image, "tag": tag, "version": version + 1}

    @app.post("/activelearning/{strategy}")
    def next_sample(strategy: str, params: Annotated[dict[str, Any] | None, Body()] = None) -> dict[str, Any]:
        holder = str((params or {}).get("client_id", "anonymous"))
        now = time.time()
        # One hand-out at a time (this app is one process): two must never pick the same image.
        with handout, engine.begin() as conn:
            held = conn.execute(
                select(leases.c.image_id).where(leases.c.holder == holder, leases.c.expires_at > now)
            ).first()
            if held is not None:
                return {"id": held[0]}
            taken = select(leases.c.image_id).where(leases.c.expires_at > now)
            free = conn.execute(select(images.c.id).where(images.c.id.not_in(taken))).scalars().all()
            if not free:
                return {}
            pick = random.choice(free)
            conn.execute(leases.delete().where(leases.c.image_id == pick))
            conn.execute(insert(leases).values(image_id=pick, holder=holder, expires_at=now + LEASE_S))
        return {"id": pick}

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--info", type=Path, required=True, help="JSON file: the /info/ answer")
    parser.add_argument("--images", type=Path, required=True, help="JSON file: the image ids")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    info = json.loads(args.info.read_text())
    image_ids = json.loads(args.images.read_text())
    app = build(args.data_dir, args.database_url, info, image_ids)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
