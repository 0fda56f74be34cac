"""The database: engine and transactions, the shared metadata, the Alembic migrations. Owns no table."""

from labelloop.db.database import MIGRATIONS, Database
from labelloop.db.metadata import ID, metadata

__all__ = ["ID", "MIGRATIONS", "Database", "metadata"]
