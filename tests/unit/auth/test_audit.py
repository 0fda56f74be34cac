"""The audit trail on SQLite and PostgreSQL: the hash chain, tamper detection, concurrent appends,
queries, and the FHIR R4 export."""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, select, update

from labelloop.auth.audit import GENESIS_HASH, AuditEvent, AuditTrail
from labelloop.auth.fhir import fhir_audit_event, fhir_bundle
from labelloop.auth.models import audit_events
from labelloop.db import Database
from labelloop.errors import InvalidParamsError

T0 = 1_765_098_000.0
CONTENT = ("seq", "ts", "user", "action", "outcome", "target", "address", "details")


class Clock:
    """A clock that stands still until a test moves it."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def url(database_url: str | None, tmp_path: Path) -> str:
    return database_url or f"sqlite:///{tmp_path / 'a.db'}"


@pytest.fixture
def db(url: str) -> Iterator[Database]:
    db = Database(url)
    db.migrate()
    yield db
    db.dispose()


def record_many(trail: AuditTrail, n: int, **kwargs: Any) -> list[AuditEvent]:
    return [
        trail.record("label.save", user="alice", target=f"img{i}", details={"version": i}, **kwargs)
        for i in range(1, n + 1)
    ]


def stored_rows(db: Database) -> list[dict[str, Any]]:
    with db.read() as conn:
        return [
            dict(row) for row in conn.execute(select(audit_events).order_by(audit_events.c.seq)).mappings()
        ]


def rehash(prev_hash: str, row: dict[str, Any]) -> str:
    """The documented hash, computed here without the module: what an auditor would run on an export."""
    content = json.dumps(
        {k: row[k] for k in CONTENT}, sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    return hashlib.sha256((prev_hash + content).encode()).hexdigest()


def tamper(db: Database, seq: int, **values: Any) -> None:
    """Change a row behind the trail's back, as someone with database access could."""
    with db.write() as conn:
        conn.execute(update(audit_events).where(audit_events.c.seq == seq).values(**values))


# ------------------------------------------------------------ the chain


def test_a_chain_of_records_verifies_and_follows_the_documented_hash(db: Database) -> None:
    recorded = record_many(AuditTrail(db, Clock()), 5)
    rows = stored_rows(db)
    assert [row["seq"] for row in rows] == [1, 2, 3, 4, 5]
    prev = GENESIS_HASH
    for row in rows:
        assert row["prev_hash"] == prev
        assert row["hash"] == rehash(prev, row)
        prev = row["hash"]
    assert recorded[-1].hash == prev
    result = AuditTrail(db).verify(batch_size=2)  # three batches: 2, 2, 1
    assert (result.ok, result.rows, result.first_broken_seq, result.reason) == (True, 5, None, None)


def test_a_stored_row_rehashes_identically_with_floats_and_unicode(db: Database) -> None:
    details = {
        "score": 0.1 + 0.2,
        "tiny": 5e-324,
        "huge": 1.7976931348623157e308,
        "negative_zero": -0.0,
        "big_int": 2**62 + 1,
        "nested": {"z": [1.5, "ünïcode ✓", None, True], "a": {"b": 1 / 3}},
        "name": "Zürich — 東京",
    }
    event = AuditTrail(db, Clock(T0 + 0.123456789)).record(
        "label.download", user="jörg", target="img-ü", address="::1", details=details
    )
    (row,) = stored_rows(db)
    assert row["hash"] == rehash(GENESIS_HASH, row) == event.hash
    assert {k: row[k] for k in CONTENT} == event.content()
    assert json.dumps(row["details"], sort_keys=True) == json.dumps(details, sort_keys=True)  # -0.0 kept
    assert row["ts"] == T0 + 0.123456789
    assert AuditTrail(db).events() == [event]
    assert AuditTrail(db).verify().ok


@pytest.mark.parametrize(
    "change",
    [
        {"details": {"version": 99}},
        {"user": "mallory"},
        {"ts": T0 + 1e-6},
        {"target": None},
        {"outcome": "failure"},
    ],
    ids=lambda change: next(iter(change)),
)
def test_editing_a_row_behind_the_trails_back_is_reported_at_that_seq(
    db: Database, change: dict[str, Any]
) -> None:
    record_many(AuditTrail(db, Clock()), 5)
    tamper(db, 3, **change)
    result = AuditTrail(db).verify(batch_size=2)
    assert (result.ok, result.first_broken_seq, result.rows) == (False, 3, 3)
    assert result.reason is not None and result.reason.startswith("seq 3:") and "content" in result.reason


@pytest.mark.parametrize(
    ("deleted", "broken", "missing"),
    [((3,), 4, "seq 3 missing"), ((1,), 2, "seq 1 missing"), ((2, 3), 4, "seqs 2-3 missing")],
    ids=["middle", "first", "two"],
)
def test_deleting_rows_reports_the_gap(
    db: Database, deleted: tuple[int, ...], broken: int, missing: str
) -> None:
    record_many(AuditTrail(db, Clock()), 5)
    with db.write() as conn:
        conn.execute(delete(audit_events).where(audit_events.c.seq.in_(deleted)))
    result = AuditTrail(db).verify(batch_size=2)  # the middle gap falls between two batches
    assert (result.ok, result.first_broken_seq) == (False, broken)
    assert result.reason is not None and f"seq {broken}" in result.reason and missing in result.reason


def test_a_changed_and_rehashed_row_is_caught_at_the_next_row(db: Database) -> None:
    record_many(AuditTrail(db, Clock()), 5)
    row = stored_rows(db)[2]
    forged = {**row, "details": {"version": 99}}
    tamper(db, 3, details=forged["details"], hash=rehash(row["prev_hash"], forged))
    result = AuditTrail(db).verify()
    assert (result.ok, result.first_broken_seq, result.rows) == (False, 4, 4)
    assert result.reason is not None and result.reason.startswith("seq 4:") and "prev_hash" in result.reason
    assert "seq 3" in result.reason


def test_concurrent_records_from_two_databases_take_every_seq_once(db: Database, url: str) -> None:
    """Two ``Database`` objects stand for two servers; the clock is read between choosing the seq and
    inserting, and sleeps, so that appends that were not serialised would collide."""
    second = Database(url)

    def slow_clock() -> float:
        time.sleep(0.002)
        return time.time()

    trails = [AuditTrail(db, slow_clock), AuditTrail(second, slow_clock)]

    def append(worker: int) -> list[int]:
        trail = trails[worker % 2]
        return [trail.record("image.read", user=f"w{worker}", target=f"img{i}").seq for i in range(10)]

    try:
        with ThreadPoolExecutor(8) as pool:
            taken = [seq for seqs in pool.map(append, range(8)) for seq in seqs]
    finally:
        second.dispose()
    assert sorted(taken) == list(range(1, 81))
    assert [row["seq"] for row in stored_rows(db)] == list(range(1, 81))
    result = AuditTrail(db).verify(batch_size=16)
    assert (result.ok, result.rows) == (True, 80)


def test_record_in_commits_and_rolls_back_with_the_callers_transaction(db: Database) -> None:
    trail = AuditTrail(db, Clock())
    with pytest.raises(RuntimeError), db.write() as conn:
        trail.record_in(conn, "label.delete", user="alice", target="img1")
        raise RuntimeError("the audited work failed")
    assert trail.events() == []
    with db.write() as conn:
        kept = trail.record_in(conn, "label.delete", user="alice", target="img1")
    assert (kept.seq, kept.prev_hash) == (1, GENESIS_HASH)
    assert trail.events() == [kept]


def test_record_refuses_what_it_cannot_store_exactly(db: Database) -> None:
    trail = AuditTrail(db, Clock())
    with pytest.raises(ValueError, match="outcome"):
        trail.record("login", user="alice", outcome="maybe")
    with pytest.raises(ValueError, match="action"):
        trail.record("", user="alice")
    with pytest.raises(ValueError):
        trail.record("login", user="alice", details={"score": float("nan")})
    with pytest.raises(ValueError, match="clock"):
        AuditTrail(db, Clock(float("inf"))).record("login", user="alice")
    assert stored_rows(db) == []


def test_overlong_and_odd_text_is_stored_as_hashed(db: Database) -> None:
    """A user name from a log-in form may hold anything; both backends keep the same cleaned text."""
    event = AuditTrail(db, Clock()).record(
        "login", user="eve\x00" + "e" * 300, outcome="failure", address="a" * 80, target="t\ud800" * 300
    )
    (row,) = stored_rows(db)
    assert (len(row["user"]), len(row["address"]), len(row["target"])) == (256, 64, 512)
    assert "\x00" not in row["user"] and "\ud800" not in row["target"]
    assert {k: row[k] for k in CONTENT} == event.content()
    assert AuditTrail(db).verify().ok
    assert AuditTrail(db).count(action="login", user="eve\x00" + "e" * 300, since=T0) == 1


# ------------------------------------------------------------ queries


@pytest.fixture
def history(db: Database) -> AuditTrail:
    """Five events one second apart: seqs 1-5 at T0 .. T0+4."""
    clock = Clock()
    trail = AuditTrail(db, clock)
    for user, action in [
        ("alice", "login"),
        ("bob", "label.download"),
        ("alice", "label.download"),
        ("alice", "label.save"),
        ("bob", "login"),
    ]:
        trail.record(action, user=user, target=None if action == "login" else "img1")
        clock.now += 1
    return trail


def seqs(events: list[AuditEvent]) -> list[int]:
    return [event.seq for event in events]


def test_events_filter_by_user_action_and_time(history: AuditTrail) -> None:
    assert seqs(history.events()) == [1, 2, 3, 4, 5]
    assert seqs(history.events(user="alice")) == [1, 3, 4]
    assert seqs(history.events(action="label.download")) == [2, 3]
    assert seqs(history.events(user="alice", action="label.download")) == [3]
    assert seqs(history.events(since=T0 + 1, until=T0 + 3)) == [2, 3]  # since inclusive, until exclusive
    assert history.events(user="carol") == []


def test_events_are_bounded_newest_last_and_page_forward(history: AuditTrail) -> None:
    assert seqs(history.events(limit=2)) == [4, 5]
    assert seqs(history.events(after_seq=0, limit=2)) == [1, 2]
    assert seqs(history.events(after_seq=2, limit=2)) == [3, 4]
    assert seqs(history.events(after_seq=4, limit=2)) == [5]
    assert seqs(history.events(after_seq=1, user="bob")) == [2, 5]
    with pytest.raises(InvalidParamsError):
        history.events(limit=0)


def test_count_counts_failures_per_user_and_address_in_the_window(db: Database) -> None:
    clock = Clock()
    trail = AuditTrail(db, clock)

    def login(user: str, address: str, outcome: str = "failure") -> None:
        trail.record("login", user=user, address=address, outcome=outcome)

    login("alice", "10.0.0.1")  # at T0: outside a window that starts at T0 + 1
    clock.now = T0 + 1
    login("alice", "10.0.0.1")  # at the window's start: counted
    clock.now = T0 + 30
    login("alice", "10.0.0.1")
    login("alice", "10.0.0.2")
    login("bob", "10.0.0.1")
    login("alice", "10.0.0.1", outcome="success")
    trail.record("label.download", user="alice", address="10.0.0.1", outcome="failure")

    def failures(**kwargs: Any) -> int:
        return trail.count(action="login", outcome="failure", since=T0 + 1, **kwargs)

    assert failures(user="alice", address="10.0.0.1") == 2
    assert failures(user="alice") == 3
    assert failures(address="10.0.0.1") == 3
    assert failures() == 4
    assert trail.count(action="login", user="alice", address="10.0.0.1", since=T0 + 1) == 3
    assert trail.count(action="login", since=T0) == 6
    assert trail.count(action="login", since=T0 + 31) == 0


# ------------------------------------------------------------ FHIR R4


_INSTANT = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$")


def make_event(**overrides: Any) -> AuditEvent:
    fields: dict[str, Any] = {
        "seq": 7,
        "ts": T0 + 0.25,
        "user": "alice",
        "action": "label.download",
        "outcome": "success",
        "target": "img1",
        "address": "192.0.2.10",
        "details": {},
        "prev_hash": GENESIS_HASH,
        "hash": "f" * 64,
    }
    return AuditEvent(**{**fields, **overrides})


def assert_r4_audit_event(resource: dict[str, Any]) -> None:
    """The elements and shapes R4's AuditEvent requires (type 1..1 Coding, recorded 1..1 instant,
    agent 1..* each with requestor 1..1, source 1..1 with observer 1..1, entity.detail type + value)."""
    assert resource["resourceType"] == "AuditEvent"
    assert {"system", "code"} <= set(resource["type"])
    assert _INSTANT.match(resource["recorded"])
    assert resource.get("action") in (None, "C", "R", "U", "D", "E")
    assert resource.get("outcome") in (None, "0", "4", "8", "12")
    assert resource["agent"] and all(isinstance(agent["requestor"], bool) for agent in resource["agent"])
    assert resource["source"]["observer"]
    for entity in resource.get("entity", []):
        for detail in entity.get("detail", []):
            assert set(detail) == {"type", "valueString"} and isinstance(detail["valueString"], str)


def test_fhir_login_failure(db: Database) -> None:
    event = AuditTrail(db, Clock(T0 + 0.5)).record(
        "login", user="alice", outcome="failure", address="192.0.2.10", details={"reason": "bad credentials"}
    )
    resource = fhir_audit_event(event)
    assert_r4_audit_event(resource)
    assert resource["id"] == "1"
    dcm = "http://dicom.nema.org/resources/ontology/DCM"
    assert resource["type"] == {"system": dcm, "code": "110114", "display": "User Authentication"}
    assert resource["subtype"] == [{"system": dcm, "code": "110122", "display": "Login"}]
    assert (resource["action"], resource["outcome"], resource["outcomeDesc"]) == ("E", "4", "bad credentials")
    assert datetime.fromisoformat(resource["recorded"]).timestamp() == T0 + 0.5
    (agent,) = resource["agent"]
    assert agent["who"] == {"identifier": {"value": "alice"}, "display": "alice"}
    assert agent["requestor"] is True
    assert agent["network"] == {"address": "192.0.2.10", "type": "2"}
    assert resource["source"]["observer"] == {"display": "labelloop"}
    assert resource["entity"][0]["detail"] == [{"type": "reason", "valueString": "bad credentials"}]


def test_fhir_label_download() -> None:
    event = make_event(address="workstation-3", details={"version": 2, "format": "nifti"})
    resource = fhir_audit_event(event)
    assert_r4_audit_event(resource)
    assert (resource["type"]["code"], resource["type"]["display"]) == ("110110", "Patient Record")
    assert (resource["id"], resource["action"], resource["outcome"]) == ("7", "R", "0")
    assert "subtype" not in resource and "outcomeDesc" not in resource
    assert resource["recorded"] == "2025-12-07T09:00:00.250000Z"
    assert resource["agent"][0]["network"] == {"address": "workstation-3", "type": "1"}
    (entity,) = resource["entity"]
    assert entity["what"] == {"identifier": {"value": "img1"}, "display": "img1"}
    assert entity["detail"] == [
        {"type": "format", "valueString": "nifti"},
        {"type": "version", "valueString": "2"},
    ]


@pytest.mark.parametrize(
    ("action", "type_code", "action_code"),
    [
        ("logout", "110114", "E"),
        ("label.save", "110110", "C"),
        ("image.delete", "110110", "D"),
        ("session.create", "110110", "C"),
        ("image.list", "110112", "E"),
        ("user.create", "110113", "C"),
        ("token.revoke", "110113", "U"),
        ("audit.read", "110101", "R"),
        ("dataset.export", "110106", "R"),
        ("image.import", "110107", "C"),
        ("model.train", "110100", "E"),
        ("something-new", "110100", "E"),
    ],
)
def test_fhir_codes_follow_the_action_family(action: str, type_code: str, action_code: str) -> None:
    resource = fhir_audit_event(make_event(action=action, target=None, address=None))
    assert_r4_audit_event(resource)
    assert (resource["type"]["code"], resource["action"]) == (type_code, action_code)
    assert "entity" not in resource and "network" not in resource["agent"][0]


@pytest.mark.parametrize("kind", ["collection", "searchset"])
def test_fhir_bundle(kind: Any) -> None:
    bundle = fhir_bundle([make_event(seq=1), make_event(seq=2, action="login")], kind=kind)
    assert (bundle["resourceType"], bundle["type"]) == ("Bundle", kind)
    assert [entry["resource"]["id"] for entry in bundle["entry"]] == ["1", "2"]
    for entry in bundle["entry"]:
        assert_r4_audit_event(entry["resource"])
        assert entry.get("search") == ({"mode": "match"} if kind == "searchset" else None)
