"""The audit trail (HIPAA §164.312(b) audit controls): who did what, when, from where, with what outcome.

Rows are appended to ``audit_events`` and never changed. Each row's ``hash`` is
``sha256(prev_hash + canonical JSON of its content)`` (hex), where the content is the row's
``seq, ts, user, action, outcome, target, address, details`` and the first row's ``prev_hash`` is
:data:`GENESIS_HASH`. Canonical JSON: sorted keys, ``,``/``:`` separators, UTF-8 unescaped, floats as
``repr`` (Python's ``json`` does that), so an auditor can recompute every hash from an export, and a
row re-hashes to the same value on SQLite and PostgreSQL. Editing or deleting a row breaks the chain
from there on. Removing the newest rows leaves a valid chain: to catch that, keep the newest hash
(``events(limit=1)``) somewhere the database's users cannot write.

Actions are named ``<noun>.<verb>`` (``label.download``, ``image.read``, ``user.create``) or a bare
verb (``login``); ``auth.fhir`` maps them to FHIR's codes by that noun and verb.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

from sqlalchemy import ColumnElement, Connection, RowMapping, String, func, insert, select

from labelloop.auth.models import audit_events
from labelloop.db import Database
from labelloop.errors import InvalidParamsError

__all__ = [
    "GENESIS_HASH",
    "AuditEvent",
    "AuditTrail",
    "AuditVerification",
    "Outcome",
    "canonical_json",
]

#: The ``prev_hash`` of the first row.
GENESIS_HASH = "0" * 64

Outcome = Literal["success", "failure"]
_OUTCOMES: tuple[Outcome, ...] = ("success", "failure")
_LENGTHS = {c.name: c.type.length for c in audit_events.c if isinstance(c.type, String) and c.type.length}
_c = audit_events.c


def canonical_json(value: Any) -> str:
    """JSON as hashed: sorted keys, no spaces, UTF-8 unescaped, no NaN."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _text(value: str | None, column: str) -> str | None:
    """``value`` as both backends store it: no NUL or lone surrogate (PostgreSQL refuses them), cut to
    the column's length (SQLite would keep more, PostgreSQL refuse it), so the hash covers what is kept."""
    if value is None:
        return None
    clean = value.encode("utf-8", "replace").decode("utf-8").replace("\x00", "\ufffd")
    return clean[: _LENGTHS[column]]


@dataclass(frozen=True)
class AuditEvent:
    """One row of the trail. ``ts`` is float epoch seconds (UTC); ``details`` is a JSON object."""

    seq: int
    ts: float
    user: str
    action: str
    outcome: Outcome
    target: str | None
    address: str | None
    details: dict[str, Any]
    prev_hash: str
    hash: str

    def content(self) -> dict[str, Any]:
        """What ``hash`` covers, with ``prev_hash``."""
        return {k: v for k, v in asdict(self).items() if k not in ("prev_hash", "hash")}

    def expected_hash(self) -> str:
        """The hash this row's ``prev_hash`` and content call for."""
        text = self.prev_hash + canonical_json(self.content())
        # surrogatepass: a lone surrogate that reached a JSON column still hashes the same way each time.
        return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()

    @classmethod
    def _from_row(cls, row: RowMapping) -> AuditEvent:
        return cls(**{name: row[name] for name in audit_events.c.keys()})


@dataclass(frozen=True)
class AuditVerification:
    """What :meth:`AuditTrail.verify` found.

    Attributes:
        ok: every row checked is intact and in sequence.
        rows: how many rows were checked (up to and including the first broken one).
        first_broken_seq: the first row whose hash, ``prev_hash`` or ``seq`` is wrong; ``None`` if ok.
        reason: what is wrong with it, naming the seq; ``None`` if ok.
    """

    ok: bool
    rows: int
    first_broken_seq: int | None = None
    reason: str | None = None


def _break(event: AuditEvent, prev_seq: int, prev_hash: str) -> str | None:
    """Why ``event`` cannot follow the row ``prev_seq`` with ``prev_hash`` (0: the start), or ``None``."""
    before = f"seq {prev_seq}" if prev_seq else "the start of the trail"
    if event.seq != prev_seq + 1:
        gap = range(prev_seq + 1, event.seq)
        missing = f"seq {gap[0]}" if len(gap) == 1 else f"seqs {gap[0]}-{gap[-1]}"
        return f"seq {event.seq} follows {before}: {missing} missing (deleted)"
    if event.prev_hash != prev_hash:
        return (
            f"seq {event.seq}: prev_hash does not match the hash of {before} "
            "(a row was changed and its hash recomputed)"
        )
    if event.expected_hash() != event.hash:
        return f"seq {event.seq}: hash does not match the row's content (the row was changed)"
    return None


def _where(
    *,
    action: str | None = None,
    user: str | None = None,
    address: str | None = None,
    outcome: str | None = None,
    since: float | None = None,
    until: float | None = None,
) -> list[ColumnElement[bool]]:
    """Filters on the trail; ``None`` filters nothing. Strings are cleaned as :func:`_text` stores them."""
    where: list[ColumnElement[bool]] = []
    for column, value in (("action", action), ("user", user), ("address", address), ("outcome", outcome)):
        if value is not None:
            where.append(_c[column] == _text(value, column))
    if since is not None:
        where.append(_c.ts >= since)
    if until is not None:
        where.append(_c.ts < until)
    return where


class AuditTrail:
    """The hash-chained ``audit_events`` table of one database.

    Appends are serialised so two writers never take the same ``seq`` or ``prev_hash``: on
    PostgreSQL an advisory lock (``Database.lock``) held to the end of the writing transaction,
    across processes and servers; on SQLite the write transaction's ``BEGIN IMMEDIATE`` already is.
    """

    def __init__(self, db: Database, clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self._clock = clock

    def record(
        self,
        action: str,
        *,
        user: str,
        outcome: str = "success",
        target: str | None = None,
        address: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> AuditEvent:
        """Append one event in its own write transaction (so it stays when the caller's work fails)."""
        with self._db.write() as conn:
            return self.record_in(
                conn, action, user=user, outcome=outcome, target=target, address=address, details=details
            )

    def record_in(
        self,
        conn: Connection,
        action: str,
        *,
        user: str,
        outcome: str = "success",
        target: str | None = None,
        address: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> AuditEvent:
        """Append one event in the caller's write transaction: it commits or rolls back with that work.

        ``conn`` must come from ``Database.write()`` (READ COMMITTED on PostgreSQL, the default). On
        PostgreSQL the append lock is held until that transaction ends, so record late in it.
        ``ValueError`` for an unknown ``outcome``, an empty or too long ``action``, or ``details``
        that JSON cannot hold exactly (NaN, infinity, non-string keys of mixed types).
        """
        if outcome not in _OUTCOMES:
            raise ValueError(f"outcome must be one of {_OUTCOMES}, not {outcome!r}")
        if not action or len(action) > _LENGTHS["action"]:
            raise ValueError(f"action must have 1 to {_LENGTHS['action']} characters: {action!r}")
        # As the JSON column gives it back (string keys, lists for tuples), so the hash matches on read.
        stored_details = json.loads(canonical_json(dict(details or {})))
        self._db.lock(conn, "audit")
        head = conn.execute(select(_c.seq, _c.hash).order_by(_c.seq.desc()).limit(1)).first()
        seq, prev_hash = (1, GENESIS_HASH) if head is None else (head.seq + 1, head.hash)
        ts = float(self._clock())  # under the lock, so ts grows with seq
        if not math.isfinite(ts):
            raise ValueError(f"the clock gave {ts}")
        unhashed = AuditEvent(
            seq=seq,
            ts=ts,
            user=_text(user, "user") or "",
            action=action,
            outcome=outcome,
            target=_text(target, "target"),
            address=_text(address, "address"),
            details=stored_details,
            prev_hash=prev_hash,
            hash="",
        )
        event = AuditEvent(**{**asdict(unhashed), "hash": unhashed.expected_hash()})
        conn.execute(insert(audit_events).values(**asdict(event)))
        return event

    def events(
        self,
        *,
        since: float | None = None,
        until: float | None = None,
        user: str | None = None,
        action: str | None = None,
        limit: int = 1000,
        after_seq: int | None = None,
    ) -> list[AuditEvent]:
        """Matching events in ``seq`` order (newest last), at most ``limit`` of them.

        Without ``after_seq``, the newest ``limit`` matches (a tail); with it, the first ``limit``
        matches after that seq (a page: pass the last seq back for the next one; 0 starts at the
        beginning). ``since`` is inclusive, ``until`` exclusive (epoch seconds).
        """
        if limit < 1:
            raise InvalidParamsError("limit must be at least 1")
        where = _where(action=action, user=user, since=since, until=until)
        query = select(audit_events).where(*where).limit(limit)
        if after_seq is not None:
            query = query.where(_c.seq > after_seq).order_by(_c.seq)
        else:
            query = query.order_by(_c.seq.desc())
        with self._db.read() as conn:
            found = [AuditEvent._from_row(row) for row in conn.execute(query).mappings()]
        return found if after_seq is not None else found[::-1]

    def count(
        self,
        *,
        action: str,
        user: str | None = None,
        address: str | None = None,
        outcome: str | None = None,
        since: float,
    ) -> int:
        """How many ``action`` events since ``since`` (inclusive) match; ``None`` filters nothing."""
        where = _where(action=action, user=user, address=address, outcome=outcome, since=since)
        query = select(func.count()).select_from(audit_events).where(*where)
        with self._db.read() as conn:
            return int(conn.execute(query).scalar_one())

    def verify(self, *, batch_size: int = 1000) -> AuditVerification:
        """Walk the whole chain in seq order, ``batch_size`` rows per read, and report the first break.

        A row is broken when its hash does not match its content, its ``prev_hash`` does not match
        the previous row's hash, or its seq skips one (a deleted row). Rows appended meanwhile are
        checked too.
        """
        prev_seq, prev_hash, rows = 0, GENESIS_HASH, 0
        while page := self.events(after_seq=prev_seq, limit=batch_size):
            for event in page:
                rows += 1
                if (reason := _break(event, prev_seq, prev_hash)) is not None:
                    return AuditVerification(False, rows, event.seq, reason)
                prev_seq, prev_hash = event.seq, event.hash
        return AuditVerification(True, rows)
