"""Inputs the server bounds: integers past INTEGER, JSON nested past a depth, info past a size, negative
counts. Each is a clear 4xx ``{"detail"}``, never a 500, and nothing is stored; on SQLite and PostgreSQL.

Also: the id and tag rules the OpenAPI document declares are exactly the ones the server enforces.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests

from labelloop.api.deps import JSON_MAX_DEPTH
from labelloop.datastore import validate_id, validate_tag
from labelloop.errors import InvalidIdError
from labelloop.settings import DatastoreSettings
from tests.conftest import ServerFactory
from tests.support.servers import LiveServer

Volumes = Callable[..., Path]

HUGE = "99999999999999999999"  # > 2**63 - 1: overflows a BIGINT on both databases
INT4 = 2**31 - 1  # the largest version an INTEGER column holds on PostgreSQL


def _populate(server: LiveServer, volumes: Volumes) -> None:
    """Image ``ct1`` with a final label."""
    image, label = volumes("ct1.nii.gz"), volumes("ct1_label.nrrd", kind="label")
    with open(image, "rb") as f:
        up = requests.put(f"{server.url}/datastore/image?image=ct1", files={"file": f}, timeout=30)
    assert up.status_code == 200, up.text
    with open(label, "rb") as f:
        saved = requests.put(
            f"{server.url}/datastore/label?image=ct1&tag=final", files={"label": f}, timeout=30
        )
    assert saved.status_code == 200, saved.text


def _refused(response: requests.Response, status: int, *words: str) -> Any:
    assert response.status_code == status, f"{response.status_code}: {response.text[:300]}"
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert list(body) == ["detail"], body
    text = json.dumps(body["detail"]).lower()
    for word in words:
        assert word.lower() in text, body
    return body["detail"]


def _nested(depth: int) -> str:
    """A JSON object whose ``a`` key holds arrays nested ``depth - 1`` deep (``depth`` levels in all)."""
    return '{"a":' + "[" * (depth - 1) + "]" * (depth - 1) + "}"


# ---------------------------------------------------------------- integers


def test_a_label_version_past_int4_is_422_not_an_overflow(server: LiveServer, volumes: Volumes) -> None:
    _populate(server, volumes)
    url = f"{server.url}/datastore/label?label=ct1&tag=final&version="
    detail = _refused(requests.get(url + HUGE, timeout=30), 422)
    assert detail[0]["loc"] == ["query", "version"] and detail[0]["type"] == "less_than_equal"
    _refused(requests.get(url + "0", timeout=30), 422)
    _refused(requests.get(url + str(INT4 + 1), timeout=30), 422)
    assert requests.get(url + str(INT4), timeout=30).status_code == 404
    assert requests.get(url + "1", timeout=30).status_code == 200


def test_activating_a_version_past_int4_is_422_not_an_overflow(server: LiveServer) -> None:
    url = f"{server.url}/model/segmentation/versions/{{}}/activate"
    detail = _refused(requests.post(url.format(HUGE), timeout=30), 422)
    assert detail[0]["loc"] == ["path", "version"]
    _refused(requests.post(url.format(0), timeout=30), 422)
    _refused(requests.post(url.format(INT4 + 1), timeout=30), 422)
    _refused(requests.post(url.format(INT4), timeout=30), 404, "no version")
    assert requests.get(f"{server.url}/model/segmentation/versions", timeout=30).json() == []


def test_a_negative_limit_cases_is_422_not_the_whole_dataset(
    sqlite_server: LiveServer, volumes: Volumes
) -> None:
    server = sqlite_server
    _populate(server, volumes)
    url = f"{server.url}/datastore/dataset?limit_cases="
    _refused(requests.get(url + "-5", timeout=30), 422, "limit_cases")
    _refused(requests.get(url + HUGE, timeout=30), 422, "limit_cases")
    for ok in ("0", "1", str(INT4)):
        answer = requests.get(url + ok, timeout=30)
        assert answer.status_code == 200 and answer.content.startswith(b"PK"), ok


def test_log_line_counts_and_refresh_are_bounded(sqlite_server: LiveServer) -> None:
    url = f"{sqlite_server.url}/logs/"
    _refused(requests.get(url, params={"lines": HUGE}, timeout=30), 422, "lines")
    _refused(requests.get(url, params={"refresh": -1}, timeout=30), 422, "refresh")
    _refused(requests.get(url, params={"refresh": HUGE}, timeout=30), 422, "refresh")


# ---------------------------------------------------------------- JSON fields


def _json_field_requests(server: LiveServer, volumes: Volumes, raw: str) -> dict[str, requests.Response]:
    """Every request that parses a ``params``/``info`` form field, with ``raw`` in it."""
    url = server.url
    image, label = volumes("up.nii.gz"), volumes("ct1_label.nrrd", kind="label")
    answers = {}
    with open(image, "rb") as f:
        answers["PUT image params"] = requests.put(
            f"{url}/datastore/image?image=up", files={"file": f}, data={"params": raw}, timeout=60
        )
    with open(label, "rb") as f:
        answers["PUT label params"] = requests.put(
            f"{url}/datastore/label?image=ct1&tag=mine", files={"label": f}, data={"params": raw}, timeout=60
        )
    answers["PUT image info"] = requests.put(
        f"{url}/datastore/image/info?image=ct1", data={"info": raw}, timeout=60
    )
    answers["PUT label info"] = requests.put(
        f"{url}/datastore/label/info?label=ct1&tag=final", data={"info": raw}, timeout=60
    )
    answers["PUT updatelabelinfo"] = requests.put(
        f"{url}/datastore/updatelabelinfo?label=ct1&tag=final", data={"params": raw}, timeout=60
    )
    return answers


def _state(server: LiveServer) -> Any:
    return requests.get(f"{server.url}/datastore/?output=all", timeout=30).json()


@pytest.mark.parametrize("depth", [JSON_MAX_DEPTH + 1, 100_000])
def test_json_nested_too_deep_is_422_and_stores_nothing(
    make_server: ServerFactory, database_url: str | None, volumes: Volumes, depth: int
) -> None:
    # A limit on info size that 100,000 levels fit under, so the depth check is what refuses them.
    server = make_server(database_url, datastore=DatastoreSettings(max_info_bytes=1024 * 1024))
    _populate(server, volumes)
    before = _state(server)
    for name, answer in _json_field_requests(server, volumes, _nested(depth)).items():
        detail = _refused(answer, 422, f"deeper than {JSON_MAX_DEPTH}")
        assert isinstance(detail, str), name
    # Arrays only, unbalanced, or hidden in nothing but brackets: refused before any parser recurses.
    for raw in ("[" * 100_000, '{"a":' * 20_000, "{" + '"a":[' * 20_000):
        answer = requests.put(f"{server.url}/datastore/image/info?image=ct1", data={"info": raw}, timeout=60)
        _refused(answer, 422, "deeper")
    assert _state(server) == before


def test_json_nested_too_deep_and_over_the_size_limit_is_413(
    sqlite_server: LiveServer, volumes: Volumes
) -> None:
    """The cheaper check first: 100,000 levels take 100 KB, over the default 64 KiB of an info."""
    _populate(sqlite_server, volumes)
    for name, answer in _json_field_requests(sqlite_server, volumes, _nested(100_000)).items():
        assert isinstance(_refused(answer, 413, "65536 bytes"), str), name


def test_json_at_the_depth_limit_is_stored(sqlite_server: LiveServer, volumes: Volumes) -> None:
    server = sqlite_server
    _populate(server, volumes)
    raw = _nested(JSON_MAX_DEPTH)
    # Brackets inside strings are text, not nesting.
    stored = json.loads(raw) | {"note": "[" * 500 + '\\"{' * 100}
    answer = requests.put(
        f"{server.url}/datastore/image/info?image=ct1", data={"info": json.dumps(stored)}, timeout=30
    )
    assert answer.status_code == 200, answer.text
    info = requests.get(f"{server.url}/datastore/image/info?image=ct1", timeout=30).json()
    assert info["a"] == stored["a"] and info["note"] == stored["note"]


def test_inference_params_nested_too_deep_are_422(sqlite_server: LiveServer, volumes: Volumes) -> None:
    _populate(sqlite_server, volumes)
    answer = requests.post(
        f"{sqlite_server.url}/infer/random_walker?image=ct1", data={"params": _nested(100_000)}, timeout=60
    )
    _refused(answer, 422, "deeper")


def test_a_number_too_long_to_convert_is_422(sqlite_server: LiveServer, volumes: Volumes) -> None:
    """Python refuses to turn more than 4300 digits into an int; that is the client's error."""
    _populate(sqlite_server, volumes)
    before = _state(sqlite_server)
    raw = '{"a": 1' + "0" * 5000 + "}"
    for name, answer in _json_field_requests(sqlite_server, volumes, raw).items():
        assert isinstance(_refused(answer, 422, "not valid json", "digits"), str), name
    assert _state(sqlite_server) == before


# ---------------------------------------------------------------- info size


def test_info_over_the_limit_is_413_naming_it(make_server: ServerFactory, volumes: Volumes) -> None:
    server = make_server(datastore=DatastoreSettings(max_info_bytes=2048))
    _populate(server, volumes)
    before = _state(server)
    big = json.dumps({"note": "x" * 3000})
    for name, answer in _json_field_requests(server, volumes, big).items():
        detail = _refused(answer, 413, "2048 bytes")
        assert isinstance(detail, str), name
    assert _state(server) == before
    fits = json.dumps({"note": "x" * 1500})
    for name, answer in _json_field_requests(server, volumes, fits).items():
        assert answer.status_code == 200, f"{name}: {answer.text}"


def test_the_default_info_limit_is_64_kib(sqlite_server: LiveServer, volumes: Volumes) -> None:
    _populate(sqlite_server, volumes)
    url = f"{sqlite_server.url}/datastore/image/info?image=ct1"
    over = json.dumps({"note": "é" * 33_000})  # 66,000 bytes in UTF-8, 33,000 characters
    _refused(requests.put(url, data={"info": over}, timeout=30), 413, "65536 bytes")
    under = json.dumps({"note": "x" * 60_000})
    assert requests.put(url, data={"info": under}, timeout=30).status_code == 200


# ---------------------------------------------------------------- the documented rules


def _document(server: LiveServer) -> dict[str, Any]:
    spec: dict[str, Any] = requests.get(f"{server.url}/openapi.json", timeout=30).json()
    return spec


def _declared_accepts(schema: dict[str, Any], value: str) -> bool:
    if not schema.get("minLength", 0) <= len(value) <= schema.get("maxLength", 10**9):
        return False
    # JSON Schema patterns are ECMA 262 regexes; this one reads the same in Python (with fullmatch,
    # as Python's $ would also admit a trailing newline).
    return re.fullmatch(schema["pattern"].removeprefix("^").removesuffix("$"), value) is not None


def _enforced(check: Callable[[str], str], value: str) -> bool:
    try:
        check(value)
    except InvalidIdError:
        return False
    return True


def test_the_documented_id_and_tag_rules_are_the_enforced_ones(sqlite_server: LiveServer) -> None:
    params = _document(sqlite_server)["paths"]["/datastore/label"]["delete"]["parameters"]
    schemas = {p["name"]: p["schema"] for p in params}
    id_schema, tag_schema = schemas["id"], schemas["tag"]
    alphabet = "a0.-_/ \n"
    values = ["".join(chars) for n in range(6) for chars in itertools.product(alphabet, repeat=n)]
    values += ["e" * 128, "e" * 129, "a..b", "a.b.c.", "..", ".a", "a\n", "ünï", "a%2e%2e"]
    for value in values:
        assert _declared_accepts(id_schema, value) == _enforced(validate_id, value), repr(value)
        assert _declared_accepts(tag_schema, value) == _enforced(validate_tag, value), repr(value)


def test_every_422_is_documented_as_either_shape(sqlite_server: LiveServer) -> None:
    """A type error is FastAPI's list, a bad ``params``/``info`` field a message; both are declared."""
    spec = _document(sqlite_server)
    schema = spec["components"]["schemas"]["ValidationErrorRead"]["properties"]["detail"]
    assert {"type": "string"} in schema["anyOf"] and any(s.get("type") == "array" for s in schema["anyOf"])
    declared = spec["paths"]["/datastore/image/info"]["put"]["responses"]["422"]["content"]
    assert declared["application/json"]["schema"] == {"$ref": "#/components/schemas/ValidationErrorRead"}


def test_info_cannot_grow_past_the_limit_by_repeated_updates(
    make_server: ServerFactory, volumes: Volumes
) -> None:
    server = make_server(datastore=DatastoreSettings(max_info_bytes=4096))
    _populate(server, volumes)
    url = f"{server.url}/datastore/image/info?image=ct1"
    for i in range(2):
        assert (
            requests.put(url, data={"info": json.dumps({f"k{i}": "x" * 1500})}, timeout=30).status_code == 200
        )
    third = requests.put(url, data={"info": json.dumps({"k2": "x" * 1500})}, timeout=30)
    assert third.status_code == 413 and "with what is stored already" in third.json()["detail"]
    stored = requests.get(url, timeout=30).json()
    assert "k2" not in json.dumps(stored) and "k1" in json.dumps(stored)
