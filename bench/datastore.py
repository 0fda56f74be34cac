"""Datastore latency against catalogue size: stats, label save, image-info update, ``output=all``.

For each size N (default 1,000, 10,000 and 100,000 images) the benchmark

1. runs the migrations on a fresh database and fills the catalogue directly with bulk
   inserts (seconds, not minutes): N images registered in place, all pointing at ONE small
   real NIfTI file (32x32x16 int16), with the column values ``ImageStore.register`` would
   write; 20% of them with a ``final`` label and 10% with an ``original`` (model output)
   label, rows as ``LabelStore.save`` writes them, pointing at one label blob stored under
   the data directory;
2. starts ``labelloop serve`` on that data dir as a separate process and measures over HTTP
   with one keep-alive ``requests.Session``:
   ``GET /datastore/?output=stats``, ``PUT /datastore/label`` (a new image each time, and
   repeatedly on the same image), ``PUT /datastore/image/info`` and
   ``GET /datastore/?output=all`` (with its response size);
3. times a *re-implementation* of the reference server's write pattern (MONAI Label's
   ``LocalDatastore``: every label save copies the file and rewrites the whole
   ``datastore_v2.json`` index with ``json.dumps(..., indent=2)`` under a file lock) at the
   same N. It is not the reference server: no HTTP, no pydantic ``.dict()``, no file-watcher
   reload, so it is a lower bound of what the reference pays per save.

Usage::

    python bench/datastore.py [--sizes 1000,10000,100000] [--samples 200] [--database-url URL]

With ``--database-url`` (PostgreSQL) each size runs in a fresh schema of that database,
created and dropped by the benchmark; nothing else in the database is touched.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import random
import shutil
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import requests
from sqlalchemy import insert, make_url, text

if __package__ in (None, ""):  # run as ``python bench/datastore.py``
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._util import (  # noqa: E402
    Stats,
    interrupt_on_sigterm,
    measure,
    ms,
    render_table,
    scratch_dir,
    serve,
    summarize,
)
from labelloop.datastore import sha256_file  # noqa: E402
from labelloop.datastore.counters import recount  # noqa: E402
from labelloop.datastore.models import images, label_versions, labels  # noqa: E402
from labelloop.db import Database  # noqa: E402
from labelloop.imaging import read_geometry, write_volume  # noqa: E402

SHAPE = (32, 32, 16)
AFFINE = np.array(
    [[-0.8, 0.0, 0.0, 100.0], [0.0, -0.8, 0.0, 80.0], [0.0, 0.0, 2.5, -40.0], [0.0, 0.0, 0.0, 1.0]]
)
USER = "admin"
FINAL_EVERY = 5  # 20% of the images have a final label
ORIGINAL_EVERY = 10  # 10% have a model output ("original")
CHUNK = 10_000
TARGET_S = 0.010  # stats and label save: under 10 ms median
FLAT_FACTOR = 1.5  # "does not grow": p50 at the largest N at most 1.5x the smallest N's
LABEL_INFO = [{"name": "liver", "idx": 1}, {"name": "spleen", "idx": 2}]


def image_id(i: int) -> str:
    return f"case_{i:06d}"


# ------------------------------------------------------------------ populating the catalogue


@dataclass(frozen=True)
class Files:
    """The one image file every row points at, and the label file used for uploads."""

    image: Path
    label: Path
    label_bytes: bytes


def write_files(folder: Path) -> Files:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    image = folder / "bench-image.nii.gz"
    write_volume(image, rng.integers(-1000, 1000, size=SHAPE, dtype=np.int16), AFFINE)
    label = folder / "bench-label.nii.gz"
    write_volume(label, rng.integers(0, 3, size=SHAPE, dtype=np.uint8), AFFINE)
    return Files(image=image.resolve(), label=label.resolve(), label_bytes=label.read_bytes())


def _chunks(rows: Iterator[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def populate(db: Database, data_dir: Path, files: Files, n: int) -> tuple[int, int]:
    """Insert ``n`` registered images plus their labels in bulk; returns (#final, #original)."""
    geometry, fmt = read_geometry(files.image)
    geometry_json = geometry.to_json()
    stat = files.image.stat()
    image_sha = sha256_file(files.image)
    # The label blob, stored where BlobStore.put would put it (labels/<xx>/<uuid>/<name>).
    token = uuid.uuid4().hex
    label_key = f"labels/{token[:2]}/{token}/{files.label.name}"
    (data_dir / label_key).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(files.label, data_dir / label_key)
    label_sha = hashlib.sha256(files.label_bytes).hexdigest()
    label_size = len(files.label_bytes)
    base = time.time() - n - 3600

    def image_rows() -> Iterator[dict[str, Any]]:
        for i in range(n):
            created = base + i
            yield {
                "id": image_id(i),
                "location": str(files.image),
                "owned": False,
                "name": f"{image_id(i)}.nii.gz",
                "ext": ".nii.gz",
                "format": fmt,
                "geometry": geometry_json,
                "sha256": image_sha,
                "size_bytes": stat.st_size,
                "mtime_ns": stat.st_mtime_ns,
                "info": {"user": USER},
                "created_by": USER,
                "created_at": created,
                "updated_at": created,
                "deleted_at": None,
                "deleted_reason": None,
            }

    def labelled() -> Iterator[tuple[int, str]]:
        for i in range(n):
            if i % FINAL_EVERY == 0:
                yield i, "final"
            if i % ORIGINAL_EVERY == 3:
                yield i, "original"

    def head_rows() -> Iterator[dict[str, Any]]:
        for i, tag in labelled():
            yield {
                "image_id": image_id(i),
                "tag": tag,
                "head_version": 1,
                "updated_at": base + i + 60,
                "deleted_at": None,
            }

    def version_rows() -> Iterator[dict[str, Any]]:
        for i, tag in labelled():
            final = tag == "final"
            params: dict[str, Any] = (
                {"label_info": LABEL_INFO, "client_id": "user-xyz"}
                if final
                else {"model": "segmentation", "params": {"label_names": {"liver": 1, "spleen": 2}}}
            )
            yield {
                "image_id": image_id(i),
                "tag": tag,
                "version": 1,
                "location": label_key,
                "name": f"{image_id(i)}.nii.gz",
                "ext": ".nii.gz",
                "sha256": label_sha,
                "size_bytes": label_size,
                "image_sha256": image_sha,
                "params": params,
                "info": {},
                "author": USER,
                "client_id": "user-xyz" if final else None,
                "created_at": base + i + 60,
                "parent_version": None,
                "model": None if final else "segmentation",
                "model_version": None if final else 1,
                "source": "upload" if final else "infer",
            }

    with db.write() as conn:
        for batch in _chunks(image_rows(), CHUNK):
            conn.execute(insert(images), batch)
        for batch in _chunks(head_rows(), CHUNK):
            conn.execute(insert(labels), batch)
        for batch in _chunks(version_rows(), CHUNK):
            conn.execute(insert(label_versions), batch)
        # The running totals the writers keep, as migration 0005 builds them for existing rows.
        recount(conn)
    if not db.is_sqlite:
        # What autovacuum does soon after a bulk load; SQLite is left as a server leaves it.
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE"))
    finals = sum(1 for _, tag in labelled() if tag == "final")
    return finals, sum(1 for _ in labelled()) - finals


@contextmanager
def fresh_database(data_dir: Path, database_url: str | None) -> Iterator[str]:
    """SQLite under ``data_dir``, or a fresh schema of ``database_url`` dropped afterwards."""
    if not database_url:
        yield f"sqlite:///{(data_dir / 'labelloop.db').resolve()}"
        return
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        raise SystemExit("--database-url is for PostgreSQL; SQLite is the default")
    schema = f"labelloop_bench_{uuid.uuid4().hex[:10]}"
    admin = Database(database_url)
    try:
        with admin.write() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        scoped = url.update_query_dict({"options": f"-csearch_path={schema}"})
        yield scoped.render_as_string(hide_password=False)
    finally:
        with admin.write() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


# ------------------------------------------------------------------ the reference's write pattern


class JsonIndexStore:
    """MONAI Label's ``LocalDatastore`` write pattern, re-implemented (not the reference server).

    A label save copies the file to ``labels/<tag>/<id><ext>``, updates the in-memory model
    and rewrites the whole ``datastore_v2.json`` with ``json.dumps(model, indent=2,
    default=str)`` under a file lock, then stats the file (as ``_update_datastore_file`` does).
    """

    def __init__(self, root: Path, model: dict[str, Any]) -> None:
        self.root = root
        self.model = model
        self.index = root / "datastore_v2.json"
        self.lock_path = root / ".lock"
        root.mkdir(parents=True, exist_ok=True)
        self._write()

    def _write(self) -> None:
        with open(self.lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                with open(self.index, "w") as f:
                    f.write(json.dumps(self.model, indent=2, default=str))
                self.index.stat()
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def save_label(self, image: str, tag: str, source: Path, params: dict[str, Any]) -> None:
        name = f"{image}.nii.gz"
        dest = self.root / "labels" / tag / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, dest)
        info = {**params, "ts": int(time.time()), "name": name}
        self.model["objects"][image]["labels"][tag] = {"ext": ".nii.gz", "info": info}
        self._write()


# ------------------------------------------------------------------ measuring


@dataclass
class SizeResult:
    n: int
    finals: int
    originals: int
    populate_s: float
    stats: Stats
    save_new: Stats
    save_same: Stats
    info: Stats
    all: Stats
    all_bytes: int
    baseline: Stats
    load: tuple[float, float] = (0.0, 0.0)  # 1-minute load average before and after measuring


class Client:
    """The HTTP calls being measured, on one keep-alive session; every answer is checked."""

    def __init__(self, url: str, files: Files) -> None:
        self.url = url
        self.http = requests.Session()
        self.files = files
        self.last_all: bytes = b""

    def _check(self, response: requests.Response, what: str) -> requests.Response:
        if response.status_code != 200:
            raise RuntimeError(f"{what}: HTTP {response.status_code}: {response.text[:500]}")
        return response

    def stats(self) -> dict[str, Any]:
        r = self._check(self.http.get(f"{self.url}/datastore/", params={"output": "stats"}), "stats")
        body: dict[str, Any] = r.json()
        return body

    def save_label(self, image: str, tag: str = "final") -> None:
        self._check(
            self.http.put(
                f"{self.url}/datastore/label",
                params={"image": image, "tag": tag},
                files={"label": ("label.nii.gz", self.files.label_bytes, "application/octet-stream")},
                data={"params": json.dumps({"label_info": LABEL_INFO, "client_id": "bench"})},
            ),
            f"label save {image}",
        )

    def update_info(self, image: str) -> None:
        info = {"strategy": {"random": {"ts": int(time.time()), "client_id": "bench"}}}
        self._check(
            self.http.put(
                f"{self.url}/datastore/image/info",
                params={"image": image},
                data={"info": json.dumps(info)},
            ),
            f"info update {image}",
        )

    def all(self) -> int:
        r = self._check(self.http.get(f"{self.url}/datastore/", params={"output": "all"}), "output=all")
        self.last_all = r.content
        return len(r.content)

    def close(self) -> None:
        self.http.close()


def run_size(n: int, samples: int, database_url: str | None, work: Path) -> SizeResult:
    print(f"\n== N = {n:,} images", flush=True)
    data_dir = work / "data"
    data_dir.mkdir(parents=True)
    files = write_files(work / "src")
    with fresh_database(data_dir, database_url) as url:
        start = time.perf_counter()
        db = Database(url)
        try:
            db.migrate()
            finals, originals = populate(db, data_dir, files, n)
        finally:
            db.dispose()
        populate_s = time.perf_counter() - start
        print(f"   populated {n:,} images, {finals:,} final, {originals:,} original in {populate_s:.1f} s")

        rng = random.Random(n)
        unlabelled = [i for i in range(n) if i % FINAL_EVERY != 0]
        warmup = 10
        picks = rng.sample(unlabelled, min(len(unlabelled), 2 * (samples + warmup) + 1))
        save_ids = [image_id(i) for i in picks[: samples + warmup]]
        info_ids = [image_id(i) for i in picks[samples + warmup : 2 * (samples + warmup)]]
        same_id = image_id(picks[-1])
        if len(save_ids) < samples + warmup or len(info_ids) < samples + warmup:
            raise SystemExit(f"N={n} is too small for {samples} samples of fresh images")

        # SQLite: the server's default database under the data dir; PostgreSQL: the fresh schema.
        with serve(data_dir, database_url=url if database_url else None) as server:
            load_before = os.getloadavg()[0]
            client = Client(server.url, files)
            try:
                stats = client.stats()
                if stats["total"] != n or stats["completed"] != finals:
                    raise RuntimeError(f"the server sees {stats}, expected total {n}, completed {finals}")
                t_stats = measure(lambda i: client.stats(), samples=samples, warmup=warmup)
                print(f"   stats            p50 {ms(summarize(t_stats).p50)} ms", flush=True)
                t_new = measure(lambda i: client.save_label(save_ids[i]), samples=samples, warmup=warmup)
                print(f"   label save (new) p50 {ms(summarize(t_new).p50)} ms", flush=True)
                t_same = measure(lambda i: client.save_label(same_id), samples=samples, warmup=warmup)
                print(f"   label save (same) p50 {ms(summarize(t_same).p50)} ms", flush=True)
                t_info = measure(lambda i: client.update_info(info_ids[i]), samples=samples, warmup=warmup)
                print(f"   info update      p50 {ms(summarize(t_info).p50)} ms", flush=True)
                all_bytes = client.all()  # warm-up
                t_all = measure(lambda i: client.all(), samples=samples, budget_s=30.0, min_samples=5)
                print(
                    f"   output=all       p50 {ms(summarize(t_all).p50)} ms, {all_bytes / 1e6:.1f} MB "
                    f"({len(t_all)} samples)",
                    flush=True,
                )
                after = client.stats()
                load_after = os.getloadavg()[0]
                model: dict[str, Any] = json.loads(client.last_all)
            finally:
                client.close()
        expected_final = finals + samples + warmup + 1
        if after["completed"] != expected_final or len(model["objects"]) != n:
            raise RuntimeError(f"after the run the server sees {after}, expected completed {expected_final}")

    # The reference's pattern at the same N, on the same datastore model (as output=all returned it).
    store = JsonIndexStore(work / "json-reference", model)
    params = {"label_info": LABEL_INFO, "client_id": "bench"}
    t_base = measure(
        lambda i: store.save_label(save_ids[i % len(save_ids)], "final", files.label, params),
        samples=samples,
        warmup=2,
        budget_s=20.0,
        min_samples=3,
    )
    index_mb = store.index.stat().st_size / 1e6
    print(
        f"   JSON-rewrite save p50 {ms(summarize(t_base).p50)} ms "
        f"({len(t_base)} samples, index {index_mb:.1f} MB)",
        flush=True,
    )
    return SizeResult(
        n=n,
        finals=finals,
        originals=originals,
        populate_s=populate_s,
        stats=summarize(t_stats),
        save_new=summarize(t_new),
        save_same=summarize(t_same),
        info=summarize(t_info),
        all=summarize(t_all),
        all_bytes=all_bytes,
        baseline=summarize(t_base),
        load=(load_before, load_after),
    )


# ------------------------------------------------------------------ report


def _stats_of(result: SizeResult, attr: str) -> Stats:
    value = getattr(result, attr)
    assert isinstance(value, Stats)
    return value


def pair(s: Stats) -> str:
    return f"{ms(s.p50)} / {ms(s.p95)}"


def report(results: list[SizeResult], samples: int, database_url: str | None) -> None:
    backend = make_url(database_url).get_backend_name() if database_url else "sqlite"
    print()
    print(
        f"labelloop datastore benchmark - {backend}, server in a separate process, HTTP on 127.0.0.1, "
        f"times in ms as p50 / p95 ({samples} samples each; output=all and the JSON rewrite "
        "are time-capped, sample counts in brackets)"
    )
    headers = [
        "N images",
        "stats",
        "label save (new img)",
        "label save (same img)",
        "info update",
        "output=all",
        "all MB",
        "JSON-rewrite save*",
        "ratio**",
        "load***",
    ]
    rows = []
    for r in results:
        rows.append(
            [
                f"{r.n:,}",
                pair(r.stats),
                pair(r.save_new),
                pair(r.save_same),
                pair(r.info),
                f"{pair(r.all)} [{r.all.n}]",
                f"{r.all_bytes / 1e6:.1f}",
                f"{pair(r.baseline)} [{r.baseline.n}]",
                f"{r.save_new.p50 / r.baseline.p50:.2f}",
                f"{r.load[0]:.1f}>{r.load[1]:.1f}",
            ]
        )
    print(render_table(headers, rows))
    print(
        "*  JSON-rewrite save: a re-implementation of the reference server's (MONAI Label LocalDatastore)\n"
        "   write pattern - copy the label, json.dumps(indent=2) the whole datastore_v2.json under a file\n"
        "   lock - run in-process at the same N. It is NOT the reference server and omits its HTTP,\n"
        "   pydantic and file-watcher costs, so it is a lower bound of what the reference pays.\n"
        "** ratio: labelloop label save (new img) p50 / JSON-rewrite save p50 (below 1: labelloop faster).\n"
        f"*** 1-minute load average before>after the HTTP measurements, on {os.cpu_count()} CPUs; client\n"
        "   and server share them, and other work on the machine inflates every column."
    )
    print()
    first, last = results[0], results[-1]
    verdicts: list[str] = []
    for name, attr in (("stats", "stats"), ("label save", "save_new")):
        p50 = {r.n: _stats_of(r, attr).p50 for r in results}
        worst = max(results, key=lambda r: p50[r.n])
        under = p50[worst.n] < TARGET_S
        verdicts.append(
            f"{'PASS' if under else 'FAIL'}  {name} median < {TARGET_S * 1000:.0f} ms at every N "
            f"(worst {ms(p50[worst.n])} ms at N={worst.n:,})"
        )
        if len(results) > 1:
            growth = p50[last.n] / p50[first.n]
            flat = growth <= FLAT_FACTOR
            verdicts.append(
                f"{'PASS' if flat else 'FAIL'}  {name} does not grow with N: p50 x{growth:.2f} from "
                f"N={first.n:,} to N={last.n:,} (flat means <= x{FLAT_FACTOR})"
            )
    if len(results) > 1:
        growth = last.baseline.p50 / first.baseline.p50
        verdicts.append(
            f"info  JSON-rewrite save grows x{growth:.1f} from N={first.n:,} to N={last.n:,}; "
            f"output=all grows x{last.all.p50 / first.all.p50:.1f} (it is O(N) by nature)"
        )
    for line in verdicts:
        print(line)
    print(
        "populate: "
        + ", ".join(
            f"N={r.n:,} {r.populate_s:.1f} s ({r.finals:,} final, {r.originals:,} original)" for r in results
        )
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--sizes",
        default="1000,10000,100000",
        help="Comma-separated numbers of registered images (default: 1000,10000,100000)",
    )
    parser.add_argument("--samples", type=int, default=200, help="Timed requests per operation (200)")
    parser.add_argument(
        "--database-url",
        default=None,
        help="PostgreSQL URL (postgresql+psycopg://...); each size runs in a fresh schema that is "
        "dropped afterwards. Default: SQLite in the temporary data dir",
    )
    args = parser.parse_args(argv)
    sizes = [int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip()]
    if not sizes or min(sizes) < 1 or args.samples < 1:
        parser.error("sizes and samples must be positive")
    interrupt_on_sigterm()
    results: list[SizeResult] = []
    try:
        for n in sizes:
            with scratch_dir(f"labelloop-bench-{n}-") as work:
                results.append(run_size(n, args.samples, args.database_url, work))
    except KeyboardInterrupt:
        print("\ninterrupted; temporary files and the server were cleaned up", file=sys.stderr)
        if results:
            report(results, args.samples, args.database_url)
        return 130
    report(results, args.samples, args.database_url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
