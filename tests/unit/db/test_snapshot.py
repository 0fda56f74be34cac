"""``Database.snapshot()``: the reads of one thread share a transaction until its first write.

On SQLite and a real PostgreSQL. Transactions are counted by the ``BEGIN`` statements the engine
sends (SQLite) or by the engine's ``begin`` events (both).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, event, insert, select

from labelloop.db import Database

_meta = MetaData()
notes = Table("snapshot_notes", _meta, Column("id", Integer, primary_key=True), Column("text", String))


@pytest.fixture
def db(tmp_path: Path, database_url: str | None) -> Iterator[Database]:
    database = Database(database_url or f"sqlite:///{tmp_path / 'snapshot.db'}")
    _meta.create_all(database.engine)
    try:
        yield database
    finally:
        _meta.drop_all(database.engine)
        database.dispose()


def _begins(db: Database) -> list[int]:
    count = [0]

    @event.listens_for(db.engine, "begin")
    def _count(_conn: object) -> None:
        count[0] += 1

    return count


def _count_notes(db: Database) -> int:
    with db.read() as conn:
        return len(conn.execute(select(notes.c.id)).all())


def test_reads_in_a_snapshot_share_one_transaction(db: Database) -> None:
    begins = _begins(db)
    for _ in range(3):
        _count_notes(db)
    assert begins[0] == 3, "outside a snapshot every read is its own transaction"
    with db.snapshot():
        for _ in range(3):
            _count_notes(db)
    assert begins[0] == 4


def test_a_write_ends_the_snapshot_so_later_reads_see_it(db: Database) -> None:
    with db.snapshot():
        assert _count_notes(db) == 0
        with db.write() as conn:
            conn.execute(insert(notes).values(text="after the first read"))
        assert _count_notes(db) == 1, "a read after the block's own write must see it"


def test_other_threads_read_outside_the_snapshot(db: Database) -> None:
    seen: list[int] = []
    with db.snapshot():
        assert _count_notes(db) == 0  # this thread's snapshot is now open

        def other() -> None:
            with db.write() as conn:
                conn.execute(insert(notes).values(text="another thread"))
            seen.append(_count_notes(db))

        thread = threading.Thread(target=other)
        thread.start()
        thread.join()
    assert seen == [1], "another thread neither shares the snapshot nor is ended by it"
    assert _count_notes(db) == 1


def test_a_failed_read_ends_the_snapshot_and_is_not_reused(db: Database) -> None:
    begins = _begins(db)
    with db.snapshot():
        with pytest.raises(RuntimeError), db.read():
            raise RuntimeError("a caller's error inside the read")
        assert _count_notes(db) == 0
        assert _count_notes(db) == 0
    assert begins[0] == 3, "after a failed read, each read opens its own transaction"
