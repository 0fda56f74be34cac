"""Uploads built to hurt: decompression bombs, headers that lie about their size, detached NRRD that
points at the server's own files, deflated DICOM, empty axes, label values out of range, a flood of
clicks. Each gets a 4xx with ``{"detail"}`` and leaves nothing behind, decided from the header."""

from __future__ import annotations

import gzip
import io
import time
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import requests

from labelloop.settings import DatastoreSettings
from tests.support.dicom import write_series
from tests.support.servers import LiveServer
from tests.support.volumes import DEFAULT_AFFINE, make_image

AFFINE = np.diag([1.0, 1.0, 2.0, 1.0])


def nifti_header_only(path: Path, shape: tuple[int, ...], dtype: type = np.uint8) -> Path:
    """A .nii.gz whose header claims ``shape`` and that holds no voxel at all (66 bytes or so)."""
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(dtype)
    header.set_sform(AFFINE, code=1)
    raw = header.binaryblock + b"\0\0\0\0"
    path.write_bytes(gzip.compress(raw, compresslevel=9))
    return path


def nifti_bomb(path: Path, shape: tuple[int, int, int]) -> Path:
    """A real .nii.gz of zeros: its header and all its voxels, a few kB on disk."""
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(np.uint8)
    header.set_sform(AFFINE, code=1)
    zeros = bytes(1 << 20)
    with gzip.open(path, "wb", compresslevel=9) as f:
        f.write(header.binaryblock + b"\0\0\0\0")
        for _ in range(int(np.prod(shape)) >> 20):
            f.write(zeros)
    return path


def nrrd_file(
    path: Path, sizes: tuple[int, int, int], payload: bytes, *, extra: str = "", gz: bool = True
) -> Path:
    head = (
        "NRRD0004\ntype: uint8\ndimension: 3\n"
        f"sizes: {sizes[0]} {sizes[1]} {sizes[2]}\nspace: left-posterior-superior\n"
        "space directions: (1,0,0) (0,1,0) (0,0,1)\nspace origin: (0,0,0)\n"
        f"encoding: {'gzip' if gz else 'raw'}\n{extra}\n"
    )
    path.write_bytes(head.encode() + (gzip.compress(payload) if gz else payload))
    return path


def _put_image(server: LiveServer, path: Path, image_id: str = "hostile") -> requests.Response:
    with path.open("rb") as f:
        return requests.put(
            f"{server.url}/datastore/image",
            params={"image": image_id},
            files={"file": (path.name, f)},
            timeout=120,
        )


def _session(server: LiveServer, path: Path) -> requests.Response:
    with path.open("rb") as f:
        return requests.put(f"{server.url}/session/", files={"files": (path.name, f)}, timeout=120)


def _infer_upload(server: LiveServer, path: Path) -> requests.Response:
    with path.open("rb") as f:
        return requests.post(
            f"{server.url}/infer/random_walker",
            files={"file": (path.name, f)},
            data={"params": '{"foreground": [[1, 1, 1]], "background": []}'},
            timeout=120,
        )


def _put_label(server: LiveServer, path: Path, image_id: str, name: str | None = None) -> requests.Response:
    with path.open("rb") as f:
        return requests.put(
            f"{server.url}/datastore/label",
            params={"image": image_id, "tag": "final"},
            files={"label": (name or path.name, f)},
            timeout=120,
        )


def _scratch(server: LiveServer) -> list[Path]:
    tmp = server.data_dir / "tmp"
    return sorted(tmp.rglob("*")) if tmp.exists() else []


def test_a_header_claiming_2048_cubed_is_refused_at_once_everywhere(
    sqlite_server: LiveServer, tmp_path: Path
) -> None:
    bomb = nifti_header_only(tmp_path / "claims.nii.gz", (2048, 2048, 2048))
    assert bomb.stat().st_size < 200
    before = sqlite_server.files()
    for send in (_put_image, _session, _infer_upload):
        started = time.monotonic()
        answer = send(sqlite_server, bomb)
        assert answer.status_code == 413, (send.__name__, answer.text)
        assert "8,589,934,592 voxels" in answer.json()["detail"] and "max_voxels" in answer.json()["detail"]
        assert time.monotonic() - started < 5, "decided from the header, not after decoding"
    make_image(tmp_path / "ok.nii.gz")
    assert _put_image(sqlite_server, tmp_path / "ok.nii.gz", "ok").status_code == 200
    label = _put_label(sqlite_server, bomb, "ok")
    assert label.status_code == 413
    assert {f for f in sqlite_server.files() - before if not f.startswith("images/")} == set()
    assert _scratch(sqlite_server) == []


def test_a_decompression_bomb_over_the_limit_is_refused(
    make_server: Callable[..., LiveServer], tmp_path: Path
) -> None:
    server = make_server(datastore=DatastoreSettings(max_voxels=128**3))
    before = server.files()
    bomb = nifti_bomb(tmp_path / "bomb.nii.gz", (256, 256, 128))  # 8 MiB of zeros in a few kB
    assert bomb.stat().st_size < 64 * 1024
    answer = _put_image(server, bomb)
    assert answer.status_code == 413 and "over the limit of 2,097,152" in answer.json()["detail"]
    nrrd_bomb = nrrd_file(tmp_path / "bomb.nrrd", (256, 256, 128), bytes(256 * 256 * 128))
    answer = _put_image(server, nrrd_bomb)
    assert answer.status_code == 413 and "max_voxels" in answer.json()["detail"]
    assert server.files() == before and _scratch(server) == []


def test_a_gzip_nrrd_that_inflates_past_its_header_is_refused(
    sqlite_server: LiveServer, tmp_path: Path
) -> None:
    # The header says 8x8x8 voxels; the gzip stream holds 64 MiB.
    before = sqlite_server.files()
    lying = nrrd_file(tmp_path / "lying.nrrd", (8, 8, 8), bytes(64 << 20))
    answer = _put_image(sqlite_server, lying)
    assert answer.status_code == 422
    assert "inflates to more bytes than its header" in answer.json()["detail"]
    assert sqlite_server.files() == before


@pytest.mark.parametrize("field", ["data file", "datafile"])
def test_detached_nrrd_never_reads_a_server_file(
    sqlite_server: LiveServer, tmp_path: Path, field: str
) -> None:
    database = sqlite_server.data_dir / "labelloop.db"
    targets = {"/etc/passwd": Path("/etc/passwd").stat().st_size, str(database): database.stat().st_size}
    make_image(tmp_path / "ok.nii.gz", shape=(8, 8, 8))
    assert _put_image(sqlite_server, tmp_path / "ok.nii.gz", "ok").status_code == 200
    before = sqlite_server.files()
    for target, size in targets.items():
        for sizes in ((size, 1, 1), (7, 7, 7)):  # the file's exact size, and a wrong one
            detached = nrrd_file(tmp_path / "detached.nrrd", sizes, b"", extra=f"{field}: {target}", gz=False)
            for send in (_put_image, _session, _infer_upload):
                answer = send(sqlite_server, detached)
                assert answer.status_code == 415, (send.__name__, target, answer.text)
                detail = answer.json()["detail"]
                assert "Detached NRRD" in detail and str(size) not in detail and target not in detail
            label = _put_label(
                sqlite_server,
                nrrd_file(tmp_path / "l.nrrd", (8, 8, 8), b"", extra=f"{field}: {target}", gz=False),
                "ok",
            )
            assert label.status_code == 415
    assert sqlite_server.files() == before and _scratch(sqlite_server) == []


def test_an_image_with_an_empty_axis_is_refused(sqlite_server: LiveServer, tmp_path: Path) -> None:
    before = sqlite_server.files()
    empty = tmp_path / "empty.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((0, 128, 64), np.int16), AFFINE), str(empty))
    for send in (_put_image, _session, _infer_upload):
        answer = send(sqlite_server, empty)
        assert answer.status_code == 422 and "empty dimension" in answer.json()["detail"], answer.text
    assert sqlite_server.files() == before


def test_label_values_outside_the_apps_indices_are_refused(sqlite_server: LiveServer, tmp_path: Path) -> None:
    make_image(tmp_path / "ok.nii.gz", shape=(8, 8, 8))
    assert _put_image(sqlite_server, tmp_path / "ok.nii.gz", "ok").status_code == 200
    array = np.zeros((8, 8, 8), np.int32)
    array[1, 2, 3] = 2**30
    high = tmp_path / "high.nii.gz"
    nib.save(nib.Nifti1Image(array, DEFAULT_AFFINE), str(high))
    answer = _put_label(sqlite_server, high, "ok")
    assert answer.status_code == 422, answer.text
    assert "1073741824" in answer.json()["detail"] and "0 to 5" in answer.json()["detail"]
    raw = tmp_path / "ohif.bin"
    raw.write_bytes(bytes([0] * 511 + [200]))
    answer = _put_label(sqlite_server, raw, "ok", "label.bin")
    assert answer.status_code == 422 and "0 to 5" in answer.json()["detail"]
    array[1, 2, 3] = 5
    nib.save(nib.Nifti1Image(array, DEFAULT_AFFINE), str(high))
    assert _put_label(sqlite_server, high, "ok").status_code == 200


def _deflated_zip(folder: Path, rows: int, slices: int) -> Path:
    """A zip of DICOM files in the deflated transfer syntax: each inflates to a rows x rows plane."""
    paths = write_series(folder / "plain", slices=slices)
    archive = folder / "deflated.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:
        for path in paths:
            ds = pydicom.dcmread(path)
            ds.Rows = ds.Columns = rows
            ds.PixelData = bytes(rows * rows * 2)
            ds.file_meta.TransferSyntaxUID = pydicom.uid.DeflatedExplicitVRLittleEndian
            buffer = io.BytesIO()
            ds.save_as(buffer, enforce_file_format=True)
            zf.writestr(path.name, buffer.getvalue())
    return archive


def test_deflated_dicom_counts_its_decoded_pixels_not_the_zip_sizes(
    make_server: Callable[..., LiveServer], tmp_path: Path
) -> None:
    server = make_server(datastore=DatastoreSettings(max_voxels=2**22, max_decoded_bytes=64 << 20))
    before = server.files()
    archive = _deflated_zip(tmp_path, rows=2048, slices=4)  # 4 x 2048² int16 = 32 MiB inflated
    declared = sum(m.file_size for m in zipfile.ZipFile(archive).infolist())
    assert declared < 1 << 20 and zlib  # the zip says under 1 MiB
    answer = _put_image(server, archive)
    assert answer.status_code == 413, answer.text
    assert "max_voxels" in answer.json()["detail"] or "max_decoded_bytes" in answer.json()["detail"]
    assert server.files() == before and _scratch(server) == []
    small = _deflated_zip(tmp_path / "small", rows=64, slices=4)
    ok = _put_image(server, small, "small")
    assert ok.status_code == 200, ok.text


def test_a_flood_of_clicks_is_refused(sqlite_server: LiveServer, tmp_path: Path) -> None:
    make_image(tmp_path / "ok.nii.gz", shape=(8, 8, 8))
    assert _put_image(sqlite_server, tmp_path / "ok.nii.gz", "ok").status_code == 200
    clicks = [[1, 1, 1]] * 20000
    import json

    answer = requests.post(
        f"{sqlite_server.url}/infer/random_walker",
        params={"image": "ok"},
        data={"params": json.dumps({"foreground": clicks, "background": []})},
        timeout=60,
    )
    assert answer.status_code == 422 and "20000 clicks" in answer.json()["detail"]
    answer = requests.post(
        f"{sqlite_server.url}/infer/random_walker",
        params={"image": "ok"},
        data={"params": json.dumps({"spleen": clicks[:600], "background": clicks[:600]})},
        timeout=60,
    )
    assert answer.status_code == 422 and "1200 clicks" in answer.json()["detail"]


@pytest.mark.slow
def test_header_bombs_at_once_leave_the_server_memory_flat(tmp_path: Path) -> None:
    """Three 2048³ headers at once against a real server process: its peak memory barely moves."""
    from concurrent.futures import ThreadPoolExecutor

    from labelloop.settings import Settings
    from tests.support.servers import APP_DIR, free_port, start_process_server

    data = tmp_path / "data"
    data.mkdir()
    server, process = start_process_server(Settings(app=APP_DIR, data_dir=data, port=free_port()))
    try:

        def peak_mb() -> float:
            status = Path(f"/proc/{process.pid}/status").read_text()
            return (
                int(next(line for line in status.splitlines() if line.startswith("VmHWM")).split()[1]) / 1024
            )

        before = peak_mb()
        bombs = [nifti_header_only(tmp_path / f"claims{i}.nii.gz", (2048, 2048, 2048)) for i in range(3)]
        sends = [_put_image, _session, _put_image]
        with ThreadPoolExecutor(3) as pool:
            answers = list(pool.map(lambda pair: pair[0](server, pair[1]), zip(sends, bombs, strict=True)))
        assert [a.status_code for a in answers] == [413, 413, 413]
        grew = peak_mb() - before
        assert grew < 150, f"peak memory grew by {grew:.0f} MB"
    finally:
        server.stop()
