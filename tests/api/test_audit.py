"""``GET /audit/``: who read and changed what, filtered, paged, and as FHIR R4 AuditEvent."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests

from labelloop.auth import ADMIN, ANNOTATOR, REVIEWER, UserStore
from labelloop.db import Database
from labelloop.settings import AuthSettings
from tests.support.servers import LiveServer

PASSWORD = "a long enough password"


@pytest.fixture
def audited(make_server: Callable[..., LiveServer], database_url: str | None) -> LiveServer:
    server = make_server(database_url, auth=AuthSettings(enabled=True))
    db = Database(server.settings.resolved_database_url)
    try:
        store = UserStore(db)
        store.add("ann", [ANNOTATOR], PASSWORD)
        store.add("rev", [REVIEWER], PASSWORD)
        store.add("root", [ADMIN], PASSWORD)
    finally:
        db.dispose()
    return server


def _headers(server: LiveServer, name: str) -> dict[str, str]:
    answer = requests.post(
        f"{server.url}/auth/token", data={"username": name, "password": PASSWORD}, timeout=30
    )
    assert answer.status_code == 200, answer.text
    return {"Authorization": f"Bearer {answer.json()['access_token']}"}


def _events(server: LiveServer, headers: dict[str, str], **params: Any) -> list[dict[str, Any]]:
    answer = requests.get(f"{server.url}/audit/", params=params, headers=headers, timeout=30)
    assert answer.status_code == 200, answer.text
    events: list[dict[str, Any]] = answer.json()["events"]
    return events


def test_reads_and_changes_of_patient_data_are_recorded_with_who_and_what(
    audited: LiveServer, volumes: Callable[..., Path]
) -> None:
    started = datetime.now(UTC).isoformat()
    ann, root = _headers(audited, "ann"), _headers(audited, "root")
    requests.post(f"{audited.url}/auth/token", data={"username": "ann", "password": "wrong"}, timeout=30)
    with volumes("case7.nii.gz").open("rb") as f:
        assert requests.put(
            f"{audited.url}/datastore/image?image=case7", files={"file": f}, headers=ann, timeout=60
        ).ok
    with volumes("case7.nrrd", kind="label").open("rb") as f:
        assert requests.put(
            f"{audited.url}/datastore/label?image=case7&tag=final",
            files={"label": f},
            headers=ann,
            timeout=60,
        ).ok
    assert requests.get(f"{audited.url}/datastore/image?image=case7", headers=ann, timeout=30).ok
    assert requests.get(f"{audited.url}/datastore/label?label=case7&tag=final", headers=ann, timeout=30).ok
    assert (
        requests.delete(f"{audited.url}/datastore/image?id=case7", headers=ann, timeout=30).status_code == 403
    )
    assert requests.delete(f"{audited.url}/datastore/image?id=case7", headers=root, timeout=30).ok

    events = _events(audited, root, since=started)
    seen = [(e["user"], e["action"], e["outcome"], e["target"]) for e in events]
    assert seen == [
        ("ann", "login", "success", None),
        ("root", "login", "success", None),
        ("ann", "login", "failure", None),
        ("ann", "image.upload", "success", "image=case7"),
        ("ann", "label.save", "success", "image=case7 tag=final"),
        ("ann", "image.download", "success", "image=case7"),
        ("ann", "label.download", "success", "label=case7 tag=final"),
        ("ann", "image.delete", "failure", "id=case7"),
        ("root", "image.delete", "success", "id=case7"),
    ], seen
    assert events[-1]["details"]["status"] == 200 and events[-2]["details"]["status"] == 403
    assert all(e["address"] == "127.0.0.1" for e in events)
    chain = [e["seq"] for e in events]
    assert chain == sorted(chain) and len(set(chain)) == len(chain)

    downloads = _events(audited, root, user="ann", action="image.download")
    assert [e["target"] for e in downloads] == ["image=case7"]
    assert _events(audited, root, user="nobody") == []
    logins = _events(audited, root, action="login")
    assert {(e["user"], e["outcome"]) for e in logins} >= {
        ("ann", "success"),
        ("ann", "failure"),
        ("root", "success"),
    }


def test_only_admins_read_the_trail_and_reading_it_is_recorded(audited: LiveServer) -> None:
    rev, root = _headers(audited, "rev"), _headers(audited, "root")
    assert requests.get(f"{audited.url}/audit/", headers=rev, timeout=30).status_code == 403
    assert requests.get(f"{audited.url}/audit/", timeout=30).status_code == 401
    _events(audited, root)
    reads = _events(audited, root, action="audit.read")
    assert [(e["user"], e["outcome"]) for e in reads][:2] == [("rev", "failure"), ("root", "success")]


def test_pages_and_bad_parameters(audited: LiveServer) -> None:
    root = _headers(audited, "root")
    for _ in range(5):
        requests.get(f"{audited.url}/datastore/image?image=missing", headers=root, timeout=30)
    first = requests.get(
        f"{audited.url}/audit/", params={"after_seq": 0, "limit": 3}, headers=root, timeout=30
    ).json()
    assert len(first["events"]) == 3 and first["next_after_seq"] == first["events"][-1]["seq"]
    rest = requests.get(
        f"{audited.url}/audit/",
        params={"after_seq": first["next_after_seq"], "limit": 1000},
        headers=root,
        timeout=30,
    ).json()
    assert rest["next_after_seq"] is None and rest["events"][0]["seq"] == first["next_after_seq"] + 1
    for params in ({"since": "yesterday"}, {"limit": 0}, {"after_seq": -1}, {"format": "xml"}):
        bad = requests.get(f"{audited.url}/audit/", params=params, headers=root, timeout=30)
        assert bad.status_code == 422 and "detail" in bad.json(), params


def test_fhir_export_is_a_bundle_of_audit_events(audited: LiveServer) -> None:
    root = _headers(audited, "root")
    requests.get(f"{audited.url}/datastore/image?image=case1", headers=root, timeout=30)
    answer = requests.get(f"{audited.url}/audit/", params={"format": "fhir"}, headers=root, timeout=30)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("application/fhir+json")
    bundle = answer.json()
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "searchset"
    resources = [entry["resource"] for entry in bundle["entry"]]
    assert all(r["resourceType"] == "AuditEvent" for r in resources)
    download = next(
        r for r in resources if r.get("entity", [{}])[0].get("what", {}).get("display") == "image=case1"
    )
    assert download["type"]["code"] == "110110" and download["action"] == "R"
    assert download["outcome"] == "4", "the image does not exist: a failed read"
    assert download["agent"][0]["who"]["display"] == "root"
    assert download["agent"][0]["network"] == {"address": "127.0.0.1", "type": "2"}
    assert download["recorded"].endswith("Z")
    login = next(r for r in resources if r["type"]["code"] == "110114")
    assert login["subtype"][0]["display"] == "Login" and login["outcome"] == "0"


def test_a_label_save_is_recorded_once_with_its_outcome(
    audited: LiveServer, volumes: Callable[..., Path]
) -> None:
    """A save writes its event in its own transaction (one commit); a refused one is still recorded."""
    ann, root = _headers(audited, "ann"), _headers(audited, "root")
    with volumes("case8.nii.gz").open("rb") as f:
        assert requests.put(
            f"{audited.url}/datastore/image?image=case8", files={"file": f}, headers=ann, timeout=60
        ).ok
    label = volumes("case8.nrrd", kind="label").read_bytes()
    saves = []
    for _ in range(2):  # the second finds a label there already: 409
        saves.append(
            requests.put(
                f"{audited.url}/datastore/label?image=case8&tag=final",
                files={"label": ("case8.nrrd", label)},
                headers={**ann, "If-None-Match": "*"},
                timeout=60,
            ).status_code
        )
    assert saves == [200, 409]
    events = _events(audited, root, action="label.save")
    assert [(e["user"], e["outcome"], e["details"]["status"]) for e in events] == [
        ("ann", "success", 200),
        ("ann", "failure", 409),
    ]
