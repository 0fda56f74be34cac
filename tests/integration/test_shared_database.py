"""Two servers on one PostgreSQL database and one data directory, racing for the same new rows."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from labelloop.settings import JobSettings, Settings
from tests.support.postgres import PostgresServer
from tests.support.servers import APP_DIR, LiveServer, free_port, start_thread_server
from tests.support.volumes import make_image

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def _settings(data_dir: Path, database_url: str, studies: Path | None = None) -> Settings:
    return Settings(
        app=APP_DIR,
        data_dir=data_dir,
        port=free_port(),
        database_url=database_url,
        studies=str(studies) if studies else None,
        jobs=JobSettings(workers=0),
    )


def _start_together(settings: list[Settings]) -> list[LiveServer]:
    started: list[LiveServer | BaseException] = [RuntimeError("not started")] * len(settings)
    barrier = threading.Barrier(len(settings))

    def start(i: int) -> None:
        barrier.wait()
        try:
            started[i] = start_thread_server(settings[i])
        except BaseException as exc:  # noqa: BLE001 - reported below
            started[i] = exc

    threads = [threading.Thread(target=start, args=(i,)) for i in range(len(settings))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    servers = [s for s in started if isinstance(s, LiveServer)]
    failures = [s for s in started if not isinstance(s, LiveServer)]
    if failures:
        for server in servers:
            server.stop()
        raise AssertionError(f"a server failed to start: {failures}")
    return servers


def test_two_servers_start_at_once_on_one_database_and_studies_folder(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    studies = tmp_path / "studies"
    studies.mkdir()
    for i in range(12):
        make_image(studies / f"case{i}.nii.gz", seed=i)
    url = postgres.create_database(migrated=False)  # both servers migrate, then both import
    servers = _start_together([_settings(tmp_path / "data", url, studies) for _ in range(2)])
    try:
        for server in servers:
            listed = requests.get(f"{server.url}/datastore/", params={"output": "all"}, timeout=30).json()
            assert len(listed["objects"]) == 12
            assert requests.get(f"{server.url}/datastore/", timeout=30).json()["total"] == 12
    finally:
        for server in servers:
            server.stop()


def test_two_servers_upload_the_same_new_ids_at_once(postgres: PostgresServer, tmp_path: Path) -> None:
    url = postgres.create_database(migrated=True)
    data = tmp_path / "data"
    servers = _start_together([_settings(data, url) for _ in range(2)])
    images = []
    for i in range(32):
        path = tmp_path / f"up{i}.nii.gz"
        make_image(path, shape=(16, 16, 8), seed=i)
        images.append(path)

    def upload(job: tuple[int, int]) -> int:
        index, side = job
        with images[index].open("rb") as f:
            answer = requests.put(
                f"{servers[side].url}/datastore/image",
                params={"image": f"up{index}"},
                files={"file": (f"up{index}.nii.gz", f)},
                timeout=120,
            )
        return answer.status_code

    try:
        with ThreadPoolExecutor(max_workers=8) as pool:
            statuses = list(pool.map(upload, [(i, side) for i in range(32) for side in (0, 1)]))
        assert statuses == [200] * 64, statuses
        listed = requests.get(f"{servers[1].url}/datastore/", params={"output": "all"}, timeout=30).json()
        assert sorted(listed["objects"]) == sorted(f"up{i}" for i in range(32))
        for i in (0, 31):
            image = requests.get(f"{servers[0].url}/datastore/image", params={"image": f"up{i}"}, timeout=30)
            assert image.content == images[i].read_bytes()
    finally:
        for server in servers:
            server.stop()
