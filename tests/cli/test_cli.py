"""The ``labelloop`` command line: help, settings from flags and environment, import, serve, logs."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from labelloop.settings import Settings
from tests.support.servers import APP_DIR, LiveServer, free_port, start_process_server
from tests.support.volumes import make_image, make_label


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "labelloop.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def test_serve_help_documents_defaults_and_environment_variables() -> None:
    result = run_cli("serve", "--help")
    assert result.returncode == 0
    for flag, env in (
        ("--studies", "LABELLOOP_STUDIES"),
        ("--data-dir", "LABELLOOP_DATA_DIR"),
        ("--port", "LABELLOOP_PORT"),
        ("--host", "LABELLOOP_HOST"),
    ):
        assert flag in result.stdout and env in result.stdout
    assert "8000" in result.stdout and "127.0.0.1" in result.stdout


@pytest.fixture
def studies(tmp_path: Path) -> Path:
    """A MONAI Label-style studies folder: images at the top, labels/<tag>/<id>.<ext>."""
    folder = tmp_path / "studies"
    (folder / "labels" / "final").mkdir(parents=True)
    (folder / "labels" / "original").mkdir(parents=True)
    for i in range(3):
        make_image(folder / f"case{i}.nii.gz", seed=i)
    make_image(folder / "case.003.nrrd", seed=3)  # MONAI Label's studies rule keeps inner dots
    make_image(folder / "bad name.nii.gz", seed=4)  # not a valid id: skipped, not fatal
    (folder / "notes.txt").write_text("not an image")
    make_label(folder / "labels" / "final" / "case0.nii.gz", seed=0)
    make_label(folder / "labels" / "original" / "case1.nrrd", seed=1)
    make_label(folder / "labels" / "final" / "case2.nii.gz", shape=(5, 5, 5))  # wrong grid: skipped
    return folder


def test_import_registers_in_place_and_is_incremental(studies: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = run_cli("import", str(studies), "--data-dir", str(data))
    assert first.returncode == 0, first.stderr
    assert "4 images added" in first.stdout and "2 label versions added" in first.stdout
    assert "bad name.nii.gz" in first.stdout and "case2.nii.gz" in first.stdout  # named with reasons
    second = run_cli("import", str(studies), "--data-dir", str(data))
    assert "0 images added" in second.stdout and "4 unchanged" in second.stdout
    assert "0 label versions added" in second.stdout
    # Registered in place: no image was copied into the data dir.
    assert not (data / "images").exists() or not any((data / "images").rglob("*.nii.gz"))


@pytest.fixture
def served(studies: Path, tmp_path: Path) -> Iterator[LiveServer]:
    data = tmp_path / "served"
    data.mkdir()
    settings = Settings(app=APP_DIR, data_dir=data, port=free_port(), studies=str(studies))
    server, _ = start_process_server(settings, env={"LABELLOOP_SESSIONS__MAX_EXPIRY_S": "120"})
    yield server
    server.stop()


def test_serve_registers_studies_and_reads_nested_env_settings(served: LiveServer, studies: Path) -> None:
    stats = requests.get(f"{served.url}/datastore/", timeout=10).json()
    assert stats == {"total": 4, "completed": 1, "label_tags": {"final": 1, "original": 1}}
    info = requests.get(f"{served.url}/datastore/image/info", params={"image": "case.003"}, timeout=10).json()
    assert info["path"] == str(studies / "case.003.nrrd"), "registered in place, not copied"
    image = requests.get(f"{served.url}/datastore/image", params={"image": "case0"}, timeout=10)
    assert image.content == (studies / "case0.nii.gz").read_bytes()
    with open(studies / "case1.nii.gz", "rb") as f:
        session = requests.put(
            f"{served.url}/session/", params={"expiry": 0}, files={"files": ("x.nii.gz", f)}, timeout=10
        ).json()
    assert session["session_info"]["expiry"] == 120, "LABELLOOP_SESSIONS__MAX_EXPIRY_S was read"


def test_logs_endpoint_serves_the_server_log(served: LiveServer) -> None:
    requests.get(f"{served.url}/info/", timeout=10)
    text = requests.get(f"{served.url}/logs/", params={"text": "true", "lines": 50}, timeout=10)
    assert text.status_code == 200 and text.headers["content-type"].startswith("text/plain")
    assert "GET /info/" in text.text and len(text.text.splitlines()) <= 50
    page = requests.get(f"{served.url}/logs/", params={"refresh": 1}, timeout=10)
    assert page.headers["content-type"].startswith("text/html")
    assert 'http-equiv="refresh" content="3"' in page.text, "refresh has a 3 s minimum"
    whole = requests.get(f"{served.url}/logs/", params={"lines": 0}, timeout=10)
    assert whole.headers["content-type"].startswith("text/plain") and len(whole.text) >= len(text.text)


def test_migrate_command_creates_the_schema(tmp_path: Path) -> None:
    result = run_cli("migrate", "--data-dir", str(tmp_path / "m"))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "m" / "labelloop.db").is_file()


def test_settings_flags_override_environment(tmp_path: Path) -> None:
    from labelloop.cli import _parser
    from labelloop.cli.common import settings_from as _settings

    os.environ["LABELLOOP_PORT"] = "9123"
    try:
        assert _settings(_parser().parse_args(["serve"])).port == 9123
        assert _settings(_parser().parse_args(["serve", "--port", "9200"])).port == 9200
    finally:
        del os.environ["LABELLOOP_PORT"]


def test_serve_help_lists_every_setting_from_the_settings_model() -> None:
    from labelloop.cli.common import _settings_rows

    result = run_cli("serve", "--help")
    assert result.returncode == 0
    names = [env for env, _, _ in _settings_rows(Settings, "LABELLOOP_")]
    assert len(names) > 50  # the nested sections are walked, not only the 7 flags
    missing = [env for env in names if f"{env}=" not in result.stdout]
    assert not missing, missing
    for line in ("LABELLOOP_AUTH__ENABLED=False", "LABELLOOP_DATASTORE__MAX_VOXELS=1073741824"):
        assert line in result.stdout
    assert "(default: None)" not in result.stdout and "later release" not in result.stdout
