"""``/session/``: temporary images for clients whose volume is not in the datastore (contract 2.8)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import requests
from monailabel.client import MONAILabelClient

from labelloop.settings import SessionSettings
from tests.conftest import ServerFactory
from tests.support.servers import LiveServer


# The client's create_session opens the upload and never closes it.
@pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <_io.FileIO:pytest.PytestUnraisableExceptionWarning"
)
def test_create_get_remove_with_the_monai_label_client(
    sqlite_server: LiveServer, volumes: Callable[..., Path]
) -> None:
    client = MONAILabelClient(sqlite_server.url, client_id="slicer")
    created = client.create_session(str(volumes("ct.nii.gz")))
    session_id = created["session_id"]
    assert uuid.UUID(session_id).version == 1 and session_id == session_id.lower()
    info = created["session_info"]
    assert info["name"] == session_id and info["image"] == "ct.nii.gz" and info["expiry"] == 3600
    assert "/" not in info["image"], "the image is named, never a server path"
    assert client.get_session(session_id)["name"] == session_id
    assert client.remove_session(session_id)["name"] == session_id
    gone = requests.get(f"{sqlite_server.url}/session/{session_id}", timeout=5)
    assert gone.status_code == 404 and gone.json() == {"detail": f"Session ({session_id}) Not Found"}
    assert not (sqlite_server.data_dir / "sessions" / session_id).exists()
    again = requests.delete(f"{sqlite_server.url}/session/{session_id}", timeout=5)
    assert again.status_code == 404 and again.json() == {"detail": "Session Not Found"}


def test_session_image_download_and_touch(sqlite_server: LiveServer, volumes: Callable[..., Path]) -> None:
    path = volumes("ct.nrrd")
    with open(path, "rb") as f:
        created = requests.put(
            f"{sqlite_server.url}/session/", files={"files": (path.name, f)}, timeout=10
        ).json()
    sid = created["session_id"]
    image = requests.get(f"{sqlite_server.url}/session/{sid}", params={"image": "true"}, timeout=10)
    assert image.status_code == 200 and image.content == path.read_bytes()
    assert 'filename="ct.nrrd"' in image.headers["content-disposition"]
    before = created["session_info"]["last_access_ts"]
    time.sleep(1.1)
    plain = requests.get(f"{sqlite_server.url}/session/{sid}", timeout=5).json()
    assert plain["last_access_ts"] == before, "a plain GET does not refresh the session"
    touched = requests.get(
        f"{sqlite_server.url}/session/{sid}", params={"update_ts": "true"}, timeout=5
    ).json()
    assert touched["last_access_ts"] > before


def test_expiry_is_capped_at_the_server_maximum(
    make_server: ServerFactory, volumes: Callable[..., Path]
) -> None:
    server = make_server(sessions=SessionSettings(max_expiry_s=600))
    path = volumes("ct.nii.gz")
    for requested, expected in ((0, 600), (30, 30), (10_000, 600)):
        with open(path, "rb") as f:
            r = requests.put(
                f"{server.url}/session/",
                params={"expiry": requested},
                files={"files": (path.name, f)},
                timeout=10,
            )
        assert r.status_code == 200 and r.json()["session_info"]["expiry"] == expected
    with open(path, "rb") as f:
        bad = requests.put(
            f"{server.url}/session/", params={"expiry": -5}, files={"files": (path.name, f)}, timeout=10
        )
    assert bad.status_code == 400 and "expiry" in bad.json()["detail"]


def test_expired_sessions_are_cleaned_up(make_server: ServerFactory, volumes: Callable[..., Path]) -> None:
    server = make_server(sessions=SessionSettings(cleanup_interval_s=0.2))
    path = volumes("ct.nii.gz")
    with open(path, "rb") as f:
        sid = requests.put(
            f"{server.url}/session/", params={"expiry": 1}, files={"files": (path.name, f)}, timeout=10
        ).json()["session_id"]
    folder = server.data_dir / "sessions" / sid
    assert folder.is_dir()
    deadline = time.monotonic() + 10
    while folder.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not folder.exists(), "the cleanup task removed the expired session's files"
    assert requests.get(f"{server.url}/session/{sid}", timeout=5).status_code == 404


def test_several_files_make_a_dicom_series_session(sqlite_server: LiveServer, tmp_path: Path) -> None:
    from tests.support.dicom import write_series

    files = write_series(tmp_path / "series", slices=4)
    handles = [open(p, "rb") for p in files]  # noqa: SIM115
    try:
        r = requests.put(
            f"{sqlite_server.url}/session/",
            files=[("files", (p.name, h)) for p, h in zip(files, handles, strict=True)],
            timeout=20,
        )
    finally:
        for h in handles:
            h.close()
    assert r.status_code == 200, r.text
    assert r.json()["session_info"]["image"] == "image.nii.gz"


def test_a_file_that_is_not_an_image_is_refused_and_leaves_nothing(
    sqlite_server: LiveServer, tmp_path: Path
) -> None:
    junk = tmp_path / "notes.txt"
    junk.write_text("not a volume")
    before = sqlite_server.files()
    with open(junk, "rb") as f:
        r = requests.put(f"{sqlite_server.url}/session/", files={"files": (junk.name, f)}, timeout=10)
    assert r.status_code == 415 and "NIfTI" in r.json()["detail"]
    assert sqlite_server.files() == before


def test_files_field_is_required(sqlite_server: LiveServer) -> None:
    r = requests.put(f"{sqlite_server.url}/session/", data={"client_id": "x"}, timeout=5)
    assert r.status_code == 422


def test_sessions_can_be_disabled(make_server: ServerFactory, volumes: Callable[..., Path]) -> None:
    server = make_server(sessions=SessionSettings(enabled=False))
    path = volumes("ct.nii.gz")
    with open(path, "rb") as f:
        r = requests.put(f"{server.url}/session/", files={"files": (path.name, f)}, timeout=10)
    assert r.status_code == 406 and r.json() == {"detail": "Session Feature is Not Enabled"}
