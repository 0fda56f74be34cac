"""Alembic environment: runs on the connection (or engine) handed over in ``config.attributes``.

``Database.migrate`` hands over a connection inside its locked transaction; pytest-alembic
hands over an engine.

Upgrades do not read the tables in code. Autogenerate and pytest-alembic's model check do:
they compare against ``labelloop.db.metadata``, which holds every package's tables once those
packages are imported (``labelloop.server`` imports them all). This package imports none of
them itself, so that ``db`` stays below the services that own the tables.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, Engine, create_engine

from labelloop.db.metadata import metadata

config = context.config
connectable = config.attributes.get("connection")


def _run(conn: Connection) -> None:
    context.configure(connection=conn, target_metadata=metadata, render_as_batch=True, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


if isinstance(connectable, Connection):
    _run(connectable)
else:
    if not isinstance(connectable, Engine):
        url = config.get_main_option("sqlalchemy.url")
        if not url:
            raise RuntimeError("set sqlalchemy.url or pass a connection in config.attributes")
        connectable = create_engine(url)
    with connectable.begin() as conn:
        _run(conn)
