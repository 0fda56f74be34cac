"""Who holds which cases and how long a case takes, from the ``leases`` table, for curators.

Two aggregate queries: the open leases per holder now, and per holder the median time from a
hand-out (the lease's start) to the final label that ended it (``end_reason = 'saved'``). The median
is computed by the database with window functions (SQLite 3.25+ and PostgreSQL alike). Times are
epoch seconds (UTC).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, func, or_, select

from labelloop.activelearning.models import leases
from labelloop.db import Database

__all__ = ["HolderWork", "lease_progress"]


@dataclass(frozen=True)
class HolderWork:
    """One lease holder's cases.

    Attributes:
        holding: cases leased to them now (open and not yet run out).
        saved: leases they ended with a final label.
        median_s: the median seconds from hand-out to that save; ``None`` when ``saved`` is 0.
    """

    holder: str
    holding: int
    saved: int
    median_s: float | None


def lease_progress(db: Database, now: float) -> list[HolderWork]:
    """Every holder with an open lease at ``now`` or a saved one, by name."""
    with db.read() as conn:
        holding = _holding(conn, now)
        saved = _saved(conn)
    return [
        HolderWork(name, holding.get(name, 0), *saved.get(name, (0, None)))
        for name in sorted(holding.keys() | saved.keys())
    ]


def _holding(conn: Connection, now: float) -> dict[str, int]:
    query = (
        select(leases.c.holder, func.count())
        .where(leases.c.ended_at.is_(None), leases.c.expires_at > now)
        .group_by(leases.c.holder)
    )
    return {str(holder): int(count) for holder, count in conn.execute(query)}


def _saved(conn: Connection) -> dict[str, tuple[int, float | None]]:
    """Per holder: (saved leases, median seconds from hand-out to save)."""
    duration = (leases.c.ended_at - leases.c.created_at).label("duration")
    ranked = (
        select(
            leases.c.holder,
            duration,
            func.row_number().over(partition_by=leases.c.holder, order_by=duration).label("rank"),
            func.count().over(partition_by=leases.c.holder).label("n"),
        )
        .where(leases.c.end_reason == "saved")
        .subquery()
    )
    # The middle row of an odd count, the mean of the two middle rows of an even one (integer division).
    middle = or_(ranked.c.rank == (ranked.c.n + 1) // 2, ranked.c.rank == ranked.c.n // 2 + 1)
    query = (
        select(ranked.c.holder, func.max(ranked.c.n), func.avg(ranked.c.duration))
        .where(middle)
        .group_by(ranked.c.holder)
    )
    return {
        str(holder): (int(n), float(median) if median is not None else None)
        for holder, n, median in conn.execute(query)
    }
