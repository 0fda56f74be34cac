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
verb (``login``); :func:`fhir_audit_event` maps them to FHIR's codes by that noun and verb.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
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
    "fhir_audit_event",
    "fhir_bundle",
]

#: The ``prev_hash`` of the first row.
GENESIS_HASH = "0" * 64

Outcome = Literal["success", "failure"]
_OUTCOMES: tuple[Outcome, ...] = ("success", "failure")
_LENGTHS = {c.name: c.type.length for c in audit_events.c if isinstance(c.type, String) and c.type.length}
_c = audit_events.c


def _canonical(value: Any) -> str:
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
        text = self.prev_hash + _canonical(self.content())
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
        stored_details = json.loads(_canonical(dict(details or {})))
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


# ------------------------------------------------------------ FHIR R4


_DCM = "http://dicom.nema.org/resources/ontology/DCM"
_ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
_SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"
_Code = tuple[str, str]

# DICOM audit event types (PS3.16 CID 400), the codes of FHIR's audit-event-type value set.
_APPLICATION: _Code = ("110100", "Application Activity")
_AUDIT_LOG: _Code = ("110101", "Audit Log Used")
_EXPORT: _Code = ("110106", "Export")
_IMPORT: _Code = ("110107", "Import")
_PATIENT_RECORD: _Code = ("110110", "Patient Record")
_QUERY: _Code = ("110112", "Query")
_SECURITY_ALERT: _Code = ("110113", "Security Alert")
_AUTHENTICATION: _Code = ("110114", "User Authentication")

_AUTH_VERBS: dict[str, _Code] = {"login": ("110122", "Login"), "logout": ("110123", "Logout")}
# Changes to who may do what: Security Alert with its DICOM subtype (CID 403).
_SECURITY_NOUNS: dict[str, _Code] = {
    "user": ("110137", "User Security Attributes Changed"),
    "password": ("110137", "User Security Attributes Changed"),
    "token": ("110137", "User Security Attributes Changed"),
    "role": ("110136", "Security Roles Changed"),
    "key": ("110129", "Security Configuration"),
    "settings": ("110129", "Security Configuration"),
}
_PATIENT_NOUNS = frozenset({"image", "label", "session", "study", "series", "volume", "dataset", "datastore"})
_QUERY_VERBS = frozenset({"query", "search", "list", "find"})
# FHIR AuditEventAction; any other verb (log-in, query, inference, training) is E, Execute.
_ACTION_CODES = {
    **dict.fromkeys(("create", "upload", "save", "submit", "add", "import"), "C"),
    **dict.fromkeys(("read", "get", "view", "download", "fetch", "export"), "R"),
    **dict.fromkeys(("update", "edit", "change", "rename", "enable", "disable", "revoke", "rotate"), "U"),
    **dict.fromkeys(("delete", "remove", "purge"), "D"),
}


def _classify(action: str) -> tuple[_Code, _Code | None, str]:
    """The DICOM event type, subtype and FHIR action code of ``<noun>.<verb>`` (or a bare verb)."""
    parts = action.lower().split(".")
    noun, verb = parts[0], parts[-1]
    code = _ACTION_CODES.get(verb, "E")
    if verb in _AUTH_VERBS:
        return _AUTHENTICATION, _AUTH_VERBS[verb], code
    if noun == "audit":
        return _AUDIT_LOG, None, code
    if verb in ("export", "import"):
        return (_EXPORT if verb == "export" else _IMPORT), None, code
    if noun in _SECURITY_NOUNS:
        return _SECURITY_ALERT, _SECURITY_NOUNS[noun], code
    if verb in _QUERY_VERBS:
        return _QUERY, None, code
    return (_PATIENT_RECORD if noun in _PATIENT_NOUNS else _APPLICATION), None, code


def _coding(system: str, code: _Code) -> dict[str, str]:
    return {"system": system, "code": code[0], "display": code[1]}


def _agent(event: AuditEvent) -> dict[str, Any]:
    who = {"identifier": {"value": event.user}, "display": event.user}
    agent: dict[str, Any] = {"who": who, "requestor": True}
    if event.address:
        try:
            ipaddress.ip_address(event.address)
            kind = "2"  # IP address
        except ValueError:
            kind = "1"  # machine name
        agent["network"] = {"address": event.address, "type": kind}
    return agent


def _entity(event: AuditEvent) -> dict[str, Any] | None:
    """What the event was about: the target, with each detail as an ``entity.detail`` string."""
    details = [
        {"type": key, "valueString": value if isinstance(value, str) else _canonical(value)}
        for key, value in sorted(event.details.items())
    ]
    if event.target is None and not details:
        return None
    entity: dict[str, Any] = {"type": _coding(_ENTITY_TYPE, ("2", "System Object"))}
    if event.target is not None:
        entity["what"] = {"identifier": {"value": event.target}, "display": event.target}
    if details:
        entity["detail"] = details
    return entity


def fhir_audit_event(event: AuditEvent) -> dict[str, Any]:
    """``event`` as a FHIR R4 ``AuditEvent`` resource (JSON), ``id`` its seq.

    ``type`` is a DICOM audit event type chosen by the action's noun and verb: ``login``/``logout``
    User Authentication (with its subtype), ``audit.*`` Audit Log Used, ``*.export``/``*.import``
    Export/Import, ``user.*``/``token.*``/``role.*`` Security Alert, ``*.list``/``*.search`` Query,
    ``image.*``/``label.*``/``session.*`` Patient Record, anything else Application Activity. A
    failure is outcome ``4`` (minor failure), with ``details["reason"]`` as ``outcomeDesc``.
    """
    event_type, subtype, action_code = _classify(event.action)
    resource: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "id": str(event.seq),
        "type": _coding(_DCM, event_type),
    }
    if subtype is not None:
        resource["subtype"] = [_coding(_DCM, subtype)]
    resource["action"] = action_code
    recorded = datetime.fromtimestamp(event.ts, UTC).isoformat(timespec="microseconds")
    resource["recorded"] = recorded.replace("+00:00", "Z")
    resource["outcome"] = "0" if event.outcome == "success" else "4"
    reason = event.details.get("reason")
    if event.outcome == "failure" and isinstance(reason, str):
        resource["outcomeDesc"] = reason
    resource["agent"] = [_agent(event)]
    resource["source"] = {
        "observer": {"display": "labelloop"},
        "type": [_coding(_SOURCE_TYPE, ("4", "Application Server"))],
    }
    if (entity := _entity(event)) is not None:
        resource["entity"] = [entity]
    return resource


def fhir_bundle(
    events: Iterable[AuditEvent], *, kind: Literal["collection", "searchset"] = "collection"
) -> dict[str, Any]:
    """A FHIR R4 ``Bundle`` of the events' ``AuditEvent`` resources: a ``collection`` (an export) or the
    ``searchset`` answering a query (each entry ``search.mode`` ``match``)."""
    entries: list[dict[str, Any]] = []
    for event in events:
        entry: dict[str, Any] = {"resource": fhir_audit_event(event)}
        if kind == "searchset":
            entry["search"] = {"mode": "match"}
        entries.append(entry)
    return {"resourceType": "Bundle", "type": kind, "entry": entries}
