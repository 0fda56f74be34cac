"""Leases: which annotator works on which image, until when (the ``leases`` table).

A lease keeps an image away from other annotators while its holder works on it. It ends when
the holder saves a final label (``saved``), gives it back (``released``) or skips it for the
next one (``skipped``, with the reason they gave), or when it runs out (``expired``). Every
method works in the caller's transaction, so a lease changes together with what caused it (the
hand-out of the next sample, a label save).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import Connection, func, insert, select, update

from labelloop.activelearning.models import leases

__all__ = ["Lease", "LeaseBook", "LeaseEnd", "Skip"]

#: Why a lease ended (the ``end_reason`` column's CHECK constraint lists the same).
LeaseEnd = Literal["saved", "released", "expired", "deleted", "skipped"]


@dataclass(frozen=True)
class Skip:
    """An image its holder skipped, when (epoch seconds) and why (``None``: no reason given)."""

    image_id: str
    holder: str
    strategy: str
    skipped_at: float
    reason: str | None


@dataclass(frozen=True)
class Lease:
    """An open lease; times in epoch seconds."""

    image_id: str
    holder: str
    strategy: str
    created_at: float
    expires_at: float


class LeaseBook:
    """Open, extend, end and list leases; ``lease_s`` is how long a lease lasts, in seconds."""

    def __init__(self, lease_s: float, clock: Callable[[], float]) -> None:
        self.lease_s = lease_s
        self._clock = clock

    def expire_in(self, conn: Connection, now: float) -> None:
        """End every lease whose time ran out by ``now``."""
        conn.execute(
            update(leases)
            .where(leases.c.ended_at.is_(None), leases.c.expires_at <= now)
            .values(ended_at=now, end_reason="expired")
        )

    def open_in(self, conn: Connection) -> list[Lease]:
        """Every open lease (expire first to leave out the ones past their time)."""
        rows = conn.execute(select(leases).where(leases.c.ended_at.is_(None))).mappings()
        return [
            Lease(r["image_id"], r["holder"], r["strategy"], float(r["created_at"]), float(r["expires_at"]))
            for r in rows
        ]

    def count_open_in(self, conn: Connection, now: float) -> dict[str, int]:
        """Leases open at ``now`` (not ended, not past their time) by strategy; reads only."""
        rows = conn.execute(
            select(leases.c.strategy, func.count())
            .where(leases.c.ended_at.is_(None), leases.c.expires_at > now)
            .group_by(leases.c.strategy)
        ).all()
        return {str(strategy): int(n) for strategy, n in rows}

    def holds_in(self, conn: Connection, image_id: str, holder: str) -> bool:
        """Whether ``holder`` has an open lease on ``image_id``."""
        count = conn.execute(
            select(func.count()).where(
                leases.c.image_id == image_id, leases.c.holder == holder, leases.c.ended_at.is_(None)
            )
        ).scalar_one()
        return bool(count)

    def grant_in(self, conn: Connection, image_id: str, holder: str, strategy: str, now: float) -> Lease:
        """A new lease of ``image_id`` to ``holder``, handed out by ``strategy``."""
        expires = now + self.lease_s
        conn.execute(
            insert(leases).values(
                image_id=image_id, holder=holder, strategy=strategy, created_at=now, expires_at=expires
            )
        )
        return Lease(image_id, holder, strategy, now, expires)

    def extend_in(self, conn: Connection, lease: Lease, now: float) -> Lease:
        """``lease`` running ``lease_s`` from ``now``."""
        expires = now + self.lease_s
        conn.execute(
            update(leases)
            .where(
                leases.c.image_id == lease.image_id,
                leases.c.holder == lease.holder,
                leases.c.ended_at.is_(None),
            )
            .values(expires_at=expires)
        )
        return Lease(lease.image_id, lease.holder, lease.strategy, lease.created_at, expires)

    def end_in(
        self, conn: Connection, image_id: str, holder: str, reason: LeaseEnd, note: str | None = None
    ) -> bool:
        """End ``holder``'s open lease on ``image_id``; False if it held none."""
        result = conn.execute(
            update(leases)
            .where(leases.c.image_id == image_id, leases.c.holder == holder, leases.c.ended_at.is_(None))
            .values(ended_at=self._clock(), end_reason=reason, note=note)
        )
        return bool(result.rowcount)

    def skipped_in(self, conn: Connection, holder: str) -> set[str]:
        """The images ``holder`` skipped (they are not handed to them again)."""
        rows = conn.execute(
            select(leases.c.image_id).where(leases.c.holder == holder, leases.c.end_reason == "skipped")
        )
        return set(rows.scalars())

    def skips_in(self, conn: Connection, since: float | None, limit: int) -> list[Skip]:
        """The ``limit`` latest skips (newest first), those after ``since`` only when given."""
        query = select(leases).where(leases.c.end_reason == "skipped")
        if since is not None:
            query = query.where(leases.c.ended_at > since)
        rows = conn.execute(query.order_by(leases.c.ended_at.desc(), leases.c.id.desc()).limit(limit))
        return [
            Skip(r["image_id"], r["holder"], r["strategy"], float(r["ended_at"]), r["note"])
            for r in rows.mappings()
        ]
