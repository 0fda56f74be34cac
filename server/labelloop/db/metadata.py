"""The one ``MetaData`` every package's tables register on, and the column type of ids.

Each package owns its tables in its own ``models.py`` (``datastore``, ``jobs``, ``registry``,
``activelearning``); they all share this metadata so that foreign keys between them resolve and
Alembic sees one schema. The naming convention gives constraints stable names across SQLite
and PostgreSQL, which the migrations rely on.
"""

from __future__ import annotations

from sqlalchemy import MetaData, String

__all__ = ["ID", "metadata"]

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

#: Image ids, tags and model names: ``^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$``.
ID = String(128)
