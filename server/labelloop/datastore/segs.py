"""DICOM SEGs exchanged with the PACS: the write-back outbox, and the record of SEGs read from it.

Writing back (``direction = "out"``): a final label of a PACS image is turned into a SEG and
checked (it must read back as the label) before anything is saved; the SEG's bytes are stored
and an outbox row is inserted **in the transaction that commits the label version**. Only then
is the SEG sent by STOW-RS, at once and, if the PACS is down or the server dies first, again by
the periodic write-back (``PacsSegs.push_due``) with exponential back-off. So a save that fails
(an ``If-Match`` conflict, a crash before the commit) leaves no SEG in the PACS, and a committed
label always reaches it. STOW-RS of the same SOP instance again is harmless (the PACS keeps one).
A PACS that refuses the SEG outright (an HTTP 4xx other than 408/429) marks it ``failed``, with
the reason, for a person to see (``GET /datastore/pacs``).

Reading (``direction = "in"``): each SEG instance found in the PACS is recorded as ``imported``
(with the label version it became) or ``skipped`` (with the reason), so it is read once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import Connection, and_, delete, func, insert, or_, select, update

from labelloop.datastore.models import pacs_segs, pacs_skipped_series
from labelloop.datastore.records import Context, StoreOutcome

__all__ = ["PacsSegs", "SegRecord", "SeriesSkip", "StagedSeg"]

logger = logging.getLogger(__name__)

#: How long a push may take before another server may push the same SEG (s), beyond the timeout.
_CLAIM_MARGIN_S = 5.0
#: The longest wait between two tries of a pending write-back (s).
MAX_BACKOFF_S = 3600.0


@dataclass(frozen=True)
class StagedSeg:
    """A SEG built for a label version and stored under ``key`` until the PACS has it."""

    sop_instance_uid: str
    series_uid: str
    key: str


@dataclass(frozen=True)
class SegRecord:
    """One SEG exchanged with the PACS (see the module docstring for ``direction`` and ``state``)."""

    sop_instance_uid: str
    series_uid: str
    direction: Literal["out", "in"]
    state: str
    image_id: str | None
    tag: str | None
    version: int | None
    attempts: int
    reason: str | None
    created_at: float
    updated_at: float
    next_attempt_at: float | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "seg_sop_instance_uid": self.sop_instance_uid,
            "seg_series_uid": self.series_uid,
            "direction": self.direction,
            "state": self.state,
            "image": self.image_id,
            "tag": self.tag,
            "version": self.version,
            "attempts": self.attempts,
            "reason": self.reason,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "next_attempt_at": self.next_attempt_at,
        }


@dataclass(frozen=True)
class SeriesSkip:
    """An image series of the PACS that cannot be used, and why."""

    series_uid: str
    study_uid: str
    instances: int | None
    reason: str
    first_seen: float
    last_seen: float


#: Sends a SEG's bytes to the PACS.
Pusher = Callable[[bytes], StoreOutcome]


def _record(row: Any) -> SegRecord:
    return SegRecord(
        sop_instance_uid=row["sop_instance_uid"],
        series_uid=row["series_uid"],
        direction=row["direction"],
        state=row["state"],
        image_id=row["image_id"],
        tag=row["tag"],
        version=row["version"],
        attempts=int(row["attempts"]),
        reason=row["reason"],
        created_at=float(row["created_at"]),
        updated_at=float(row["updated_at"]),
        next_attempt_at=row["next_attempt_at"],
    )


class PacsSegs:
    """The ``pacs_segs`` and ``pacs_skipped_series`` tables."""

    def __init__(self, ctx: Context, *, retry_after_s: float = 15.0, claim_s: float = 60.0) -> None:
        self._ctx = ctx
        self.retry_after_s = retry_after_s
        self.claim_s = claim_s + _CLAIM_MARGIN_S

    # ------------------------------------------------------------ the outbox

    def add_in(self, conn: Connection, staged: StagedSeg, image_id: str, tag: str, version: int) -> None:
        """Queue ``staged`` for the PACS in the caller's transaction, claimed by the caller (who
        pushes it right after the commit; the periodic push takes over once the claim expires)."""
        now = self._ctx.clock()
        conn.execute(
            insert(pacs_segs).values(
                sop_instance_uid=staged.sop_instance_uid,
                series_uid=staged.series_uid,
                direction="out",
                state="pending",
                image_id=image_id,
                tag=tag,
                version=version,
                seg_key=staged.key,
                attempts=0,
                created_at=now,
                updated_at=now,
                next_attempt_at=now,
                claimed_until=now + self.claim_s,
            )
        )

    def _claim(self, uid: str | None, limit: int) -> list[tuple[str, str]]:
        """Claim due pending write-backs (or the one ``uid``): ``(uid, blob key)`` pairs."""
        now = self._ctx.clock()
        c = pacs_segs.c
        due = and_(c.direction == "out", c.state == "pending")
        if uid is None:
            due = and_(
                due,
                c.next_attempt_at <= now,
                or_(c.claimed_until.is_(None), c.claimed_until < now),
            )
        else:
            due = and_(due, c.sop_instance_uid == uid)
        with self._ctx.db.write() as conn:
            rows = conn.execute(select(c.sop_instance_uid, c.seg_key).where(due).limit(limit)).all()
            claimed = []
            for row in rows:
                result = conn.execute(
                    update(pacs_segs)
                    .where(c.sop_instance_uid == row.sop_instance_uid, c.state == "pending")
                    .values(claimed_until=now + self.claim_s)
                )
                if result.rowcount:
                    claimed.append((row.sop_instance_uid, row.seg_key))
        return claimed

    def push(self, uid: str, pusher: Pusher) -> SegRecord | None:
        """Send the pending SEG ``uid`` now (the saver's own attempt, under its claim)."""
        for claimed_uid, key in self._claim(uid, 1):
            self._push_one(claimed_uid, key, pusher)
        return self.get(uid)

    def push_due(self, pusher: Pusher, limit: int = 50) -> int:
        """Send the pending SEGs whose next try is due and that no one holds; returns how many
        reached the PACS."""
        stored = 0
        for uid, key in self._claim(None, limit):
            stored += self._push_one(uid, key, pusher)
        return stored

    def _push_one(self, uid: str, key: str | None, pusher: Pusher) -> bool:
        c = pacs_segs.c
        try:
            raw = self._ctx.blobs.path(key).read_bytes() if key else None
        except OSError as exc:
            raw, outcome = None, StoreOutcome(False, f"The SEG's file is gone: {exc}", permanent=True)
        else:
            outcome = pusher(raw) if raw is not None else StoreOutcome(False, "The SEG has no file", True)
        now = self._ctx.clock()
        with self._ctx.db.write() as conn:
            row = conn.execute(select(c.attempts).where(c.sop_instance_uid == uid)).first()
            attempts = (int(row.attempts) if row is not None else 0) + 1
            if outcome.stored:
                values: dict[str, Any] = {"state": "stored", "seg_key": None, "reason": None}
            elif outcome.permanent:
                values = {"state": "failed", "reason": outcome.error}
            else:
                wait = min(self.retry_after_s * 2 ** (attempts - 1), MAX_BACKOFF_S)
                values = {"reason": outcome.error, "next_attempt_at": now + wait}
            conn.execute(
                update(pacs_segs)
                .where(c.sop_instance_uid == uid)
                .values(attempts=attempts, updated_at=now, claimed_until=None, **values)
            )
        if outcome.stored:
            if key:
                self._ctx.blobs.delete(key)
            logger.info("SEG %s stored in the PACS (try %d)", uid, attempts)
        elif outcome.permanent:
            logger.error("SEG %s refused by the PACS, not retried: %s", uid, outcome.error)
        else:
            logger.warning("SEG %s not stored yet (try %d), will retry: %s", uid, attempts, outcome.error)
        return outcome.stored

    def keys(self) -> set[str]:
        """Blob keys of SEGs still waiting for the PACS (not leftovers)."""
        c = pacs_segs.c
        with self._ctx.db.read() as conn:
            return {row.seg_key for row in conn.execute(select(c.seg_key).where(c.seg_key.is_not(None)))}

    # ------------------------------------------------------------ SEGs read from the PACS

    def known(self, uids: Iterable[str]) -> set[str]:
        """Which of these SEG instances were written or read already."""
        wanted = list(uids)
        if not wanted:
            return set()
        c = pacs_segs.c
        with self._ctx.db.read() as conn:
            return {
                row.sop_instance_uid
                for row in conn.execute(select(c.sop_instance_uid).where(c.sop_instance_uid.in_(wanted)))
            }

    def record_import(
        self,
        conn: Connection | None,
        uid: str,
        series_uid: str,
        *,
        image_id: str | None = None,
        tag: str | None = None,
        version: int | None = None,
        reason: str | None = None,
    ) -> None:
        """Note a SEG read from the PACS: imported as ``(image_id, tag, version)``, or skipped
        (``reason``). In the caller's transaction when ``conn`` is given."""
        now = self._ctx.clock()
        values = {
            "sop_instance_uid": uid,
            "series_uid": series_uid,
            "direction": "in",
            "state": "skipped" if reason else "imported",
            "image_id": image_id,
            "tag": tag,
            "version": version,
            "attempts": 1,
            "reason": reason,
            "created_at": now,
            "updated_at": now,
        }
        if conn is not None:
            conn.execute(insert(pacs_segs).values(**values))
            return
        with self._ctx.db.write() as own:
            own.execute(delete(pacs_segs).where(pacs_segs.c.sop_instance_uid == uid))
            own.execute(insert(pacs_segs).values(**values))

    # ------------------------------------------------------------ unusable series

    def skipped_series(self) -> dict[str, SeriesSkip]:
        c = pacs_skipped_series.c
        with self._ctx.db.read() as conn:
            rows = conn.execute(select(pacs_skipped_series).order_by(c.first_seen)).mappings().all()
        return {
            row["series_uid"]: SeriesSkip(
                row["series_uid"],
                row["study_uid"],
                row["instances"],
                row["reason"],
                float(row["first_seen"]),
                float(row["last_seen"]),
            )
            for row in rows
        }

    def skip_series(self, series_uid: str, study_uid: str, instances: int | None, reason: str) -> None:
        """Remember that a series cannot be used (until its number of instances changes)."""
        now = self._ctx.clock()
        c = pacs_skipped_series.c
        with self._ctx.db.write() as conn:
            row = conn.execute(select(c.first_seen).where(c.series_uid == series_uid)).first()
            conn.execute(delete(pacs_skipped_series).where(c.series_uid == series_uid))
            conn.execute(
                insert(pacs_skipped_series).values(
                    series_uid=series_uid,
                    study_uid=study_uid,
                    instances=instances,
                    reason=reason[:4000],
                    first_seen=float(row.first_seen) if row is not None else now,
                    last_seen=now,
                )
            )

    def unskip_series(self, series_uid: str) -> None:
        with self._ctx.db.write() as conn:
            conn.execute(delete(pacs_skipped_series).where(pacs_skipped_series.c.series_uid == series_uid))

    # ------------------------------------------------------------ reading

    def get(self, uid: str) -> SegRecord | None:
        with self._ctx.db.read() as conn:
            row = (
                conn.execute(select(pacs_segs).where(pacs_segs.c.sop_instance_uid == uid)).mappings().first()
            )
        return _record(row) if row is not None else None

    def for_version(self, image_id: str, tag: str, version: int) -> SegRecord | None:
        """The write-back of a label version, if it has one."""
        c = pacs_segs.c
        with self._ctx.db.read() as conn:
            row = (
                conn.execute(
                    select(pacs_segs).where(
                        c.direction == "out", c.image_id == image_id, c.tag == tag, c.version == version
                    )
                )
                .mappings()
                .first()
            )
        return _record(row) if row is not None else None

    def counts(self) -> dict[str, dict[str, int]]:
        """``{"out": {"pending": n, "stored": n, "failed": n}, "in": {"imported": n, "skipped": n}}``."""
        c = pacs_segs.c
        out: dict[str, dict[str, int]] = {
            "out": {"pending": 0, "stored": 0, "failed": 0},
            "in": {"imported": 0, "skipped": 0},
        }
        with self._ctx.db.read() as conn:
            for row in conn.execute(
                select(c.direction, c.state, func.count()).group_by(c.direction, c.state)
            ):
                out.setdefault(row[0], {})[row[1]] = int(row[2])
        return out

    def attention(self, limit: int = 100) -> list[SegRecord]:
        """SEGs a person should look at: write-backs not stored yet or refused, SEGs not imported."""
        c = pacs_segs.c
        with self._ctx.db.read() as conn:
            rows = (
                conn.execute(
                    select(pacs_segs)
                    .where(c.state.in_(("pending", "failed", "skipped")))
                    .order_by(c.updated_at.desc())
                    .limit(limit)
                )
                .mappings()
                .all()
            )
        return [_record(row) for row in rows]
