"""The wire format fuzzed: schemathesis against ``/openapi.json`` of a real server, auth off and on.

Every response must be below 500, carry a status code and a content type its route declares, and
match the declared schema (and headers). The server is ``labelloop serve`` in a child process on
127.0.0.1, on a throwaway data dir with three small images and one final label, so deleting is
fine. Every route is fuzzed, training, scoring and batch inference included: the server starts no
job worker (``LABELLOOP_JOBS__WORKERS=0``), so those jobs are queued and never run, and
``run_sync`` gives up after a second, which keeps the server responsive on two cores.

The counts (cases, failures by check, statuses) are printed; run with ``-s`` to see them.
"""

from __future__ import annotations

import collections
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
import schemathesis
from schemathesis.engine import events, from_schema
from schemathesis.engine.statistic import Statistic

from labelloop.auth import ADMIN, UserStore
from labelloop.db import Database
from labelloop.settings import Settings
from tests.support.servers import APP_DIR, LiveServer, free_port, start_process_server
from tests.support.volumes import make_image, make_label

pytestmark = pytest.mark.slow

#: Wall-clock budget of one run (auth off, auth on), in seconds; with server start-up both runs
#: take about three minutes on a 2-core machine.
MAX_TIME_S = 70
#: Examples per operation and generation phase; the time budget above ends the run first.
MAX_EXAMPLES = 25
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "response_headers_conformance",
)
PASSWORD = "fuzz-password-not-secret"

_SERVER_ENV = {
    # Jobs are queued, never run: the fuzzer may start as many trainings as it likes.
    "LABELLOOP_JOBS__WORKERS": "0",
    "LABELLOOP_JOBS__RUN_SYNC_TIMEOUT_S": "1",
    "LABELLOOP_JOBS__AUTOTRAIN_AFTER": "0",
    "LABELLOOP_INFERENCE__WARMUP": "false",
    # A fuzzer's uploads are small; a low limit keeps the 413 path busy too.
    "LABELLOOP_DATASTORE__UPLOAD_MAX_BYTES": str(8 * 1024 * 1024),
}


@dataclass
class Outcome:
    """What one schemathesis run found."""

    name: str
    seconds: float = 0.0
    cases: int = 0
    statuses: collections.Counter[int] = field(default_factory=collections.Counter)
    failures_by_check: collections.Counter[str] = field(default_factory=collections.Counter)
    failures: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def report(self) -> str:
        lines = [
            f"schemathesis {schemathesis.__version__} [{self.name}]: {self.cases} cases in "
            f"{self.seconds:.0f} s, {len(self.failures)} distinct failures, {len(self.errors)} errors",
            f"  failures by check: {dict(self.failures_by_check) or '{}'}",
            f"  response statuses: {dict(sorted(self.statuses.items()))}",
        ]
        lines += [f"  FAILURE {text}" for text in self.failures]
        lines += [f"  ERROR {text}" for text in self.errors]
        return "\n".join(lines)


def _populate(server: LiveServer, folder: Path, headers: dict[str, str]) -> None:
    """Three images, one of them with a final label (so that export and training lists have a case)."""
    for i in range(3):
        image = folder / f"case{i}.nii.gz"
        make_image(image, seed=i)
        with open(image, "rb") as f:
            answer = requests.put(
                f"{server.url}/datastore/image",
                params={"image": f"case{i}"},
                files={"file": (image.name, f)},
                headers=headers,
                timeout=60,
            )
        assert answer.status_code == 200, answer.text
    label = folder / "case0_label.nrrd"
    make_label(label, seed=0)
    with open(label, "rb") as f:
        answer = requests.put(
            f"{server.url}/datastore/label",
            params={"image": "case0", "tag": "final"},
            files={"label": (label.name, f)},
            data={"params": json.dumps({"client_id": "setup"})},
            headers=headers,
            timeout=60,
        )
    assert answer.status_code == 200, answer.text


def _start(tmp_path: Path, auth: bool) -> tuple[LiveServer, dict[str, str]]:
    data_dir = tmp_path / ("data-auth" if auth else "data")
    data_dir.mkdir()
    settings = Settings(app=APP_DIR, data_dir=data_dir, port=free_port())
    env = {**_SERVER_ENV, "LABELLOOP_AUTH__ENABLED": "true" if auth else "false"}
    server, _ = start_process_server(settings, env=env)
    headers: dict[str, str] = {}
    if auth:
        db = Database(settings.resolved_database_url)
        try:
            UserStore(db).add("fuzz", [ADMIN], PASSWORD)
        finally:
            db.dispose()
        token = requests.post(
            f"{server.url}/auth/token", data={"username": "fuzz", "password": PASSWORD}, timeout=30
        )
        assert token.status_code == 200, token.text
        headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
    _populate(server, tmp_path, headers)
    return server, headers


def _config(headers: dict[str, str]) -> schemathesis.Config:
    return schemathesis.Config.from_dict(
        {
            "max-time": MAX_TIME_S,
            "seed": 20250301,
            "headers": headers,
            "workers": 1,
            "request-timeout": 30,
            "cache": {"enabled": False},
            # No example database: every run starts from the seed alone.
            "generation": {"max-examples": MAX_EXAMPLES, "database": "none"},
            "checks": {"enabled": False, **{name: {"enabled": True} for name in CHECKS}},
        }
    )


def _fuzz(server: LiveServer, headers: dict[str, str], name: str) -> Outcome:
    outcome = Outcome(name)
    statistic = Statistic()
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json", config=_config(headers))
    started = time.monotonic()
    for event in from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            statistic.on_scenario_finished(event.recorder)
            for interaction in event.recorder.interactions.values():
                if interaction.response is not None:
                    outcome.statuses[interaction.response.status_code] += 1
            for checks in event.recorder.checks.values():
                for check in checks:
                    if check.failure_info is not None:
                        outcome.failures_by_check[check.name] += 1
        elif isinstance(event, events.NonFatalError):
            outcome.errors.append(f"{event.label}: {event.info.title}: {event.info.message}")
        elif isinstance(event, events.FatalError):
            raise event.exception
    outcome.seconds = time.monotonic() - started
    outcome.cases = statistic.total_cases
    for label, groups in sorted(statistic.failures.items()):
        for group in groups.values():
            status = group.response.status_code if group.response is not None else None
            for failure in group.failures:
                message = " ".join(failure.message.split())[:300]
                outcome.failures.append(f"{label} -> {status}: {failure.title}: {message}")
    return outcome


@pytest.mark.timeout(600)
def test_every_response_matches_the_openapi_document(tmp_path: Path) -> None:
    outcomes = []
    for auth in (False, True):
        name = "auth on" if auth else "auth off"
        server, headers = _start(tmp_path, auth)
        try:
            up = requests.get(f"{server.url}/info/", headers=headers, timeout=30)
            assert up.status_code == 200, up.text
            outcome = _fuzz(server, headers, name)
            still = requests.get(f"{server.url}/info/", headers=headers, timeout=30)
            assert still.status_code == 200, f"the server stopped answering after the run: {still.text}"
        finally:
            server.stop()
        print(outcome.report())  # noqa: T201 - the counts go into the closing note
        outcomes.append(outcome)
    for outcome in outcomes:
        assert outcome.cases > 0, f"{outcome.name}: no case ran"
    assert not [o for o in outcomes if o.failures or o.errors], "\n".join(o.report() for o in outcomes)
