"""Running totals (live images, live labels per tag) updated inside the writers' transactions."""

from __future__ import annotations

from sqlalchemy import Connection, delete, func, insert, select

from labelloop.datastore.models import counters, images, labels
from labelloop.db import Database

__all__ = ["IMAGES", "label_counter", "bump", "read_counters", "recount"]

IMAGES = "images"


def label_counter(tag: str) -> str:
    return f"labels:{tag}"


def bump(db: Database, conn: Connection, name: str, delta: int) -> None:
    """Add ``delta`` to counter ``name`` (created at 0), in the caller's transaction."""
    add = {"value": counters.c.value + delta}
    if db.is_sqlite:
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        lite = sqlite_insert(counters).values(name=name, value=delta)
        conn.execute(lite.on_conflict_do_update(index_elements=[counters.c.name], set_=add))
    else:
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        pg = pg_insert(counters).values(name=name, value=delta)
        conn.execute(pg.on_conflict_do_update(index_elements=[counters.c.name], set_=add))


_ALL_COUNTERS = select(counters.c.name, counters.c.value)  # built once: a hot read (stats, /info/)


def read_counters(conn: Connection) -> dict[str, int]:
    return {row.name: int(row.value) for row in conn.execute(_ALL_COUNTERS)}


def recount(conn: Connection) -> dict[str, int]:
    """Rebuild every counter from the rows themselves (migrations; repairs). O(N) once."""
    totals = {
        IMAGES: int(conn.execute(select(func.count()).where(images.c.deleted_at.is_(None))).scalar_one())
    }
    for tag, count in conn.execute(
        select(labels.c.tag, func.count())
        .join(images, images.c.id == labels.c.image_id)
        .where(labels.c.deleted_at.is_(None), labels.c.head_version > 0, images.c.deleted_at.is_(None))
        .group_by(labels.c.tag)
    ):
        totals[label_counter(str(tag))] = int(count)
    conn.execute(delete(counters))
    if totals:
        conn.execute(insert(counters), [{"name": k, "value": v} for k, v in totals.items()])
    return totals
