"""What the datastore refuses, and that a refusal writes nothing (no row, no file, no temp file).

Ids and tags must match ``^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`` (400); an image must be NIfTI,
NRRD or a zipped DICOM series (415/422); a label must lie on its image's grid (422); a body
over the upload limit is 413.
"""

from __future__ import annotations

import gzip
import io
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import pydicom
import pytest
import requests
import urllib3
from pydicom.data import get_testdata_file

from labelloop.imaging import read_volume, write_volume
from labelloop.settings import DatastoreSettings, Settings
from tests.support.dicom import write_series
from tests.support.servers import APP_DIR, LiveServer, free_port, start_thread_server
from tests.support.volumes import DEFAULT_AFFINE

Volumes = Callable[..., Path]
ServerFactory = Callable[..., LiveServer]


def _ct_small() -> Path:
    found = get_testdata_file("CT_small.dcm", download=False)
    assert isinstance(found, str), "pydicom's test data is missing"
    return Path(found)


CT_SMALL = _ct_small()


# ---------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One SQLite server for the refusals below: each refusal must change nothing, so they can share it."""
    settings = Settings(app=APP_DIR, data_dir=tmp_path_factory.mktemp("data"), port=free_port())
    server = start_thread_server(settings)
    yield server
    server.stop()


def _snapshot(server: LiveServer) -> tuple[Any, Any, set[str]]:
    """Stats, the whole datastore model and the files under the data dir."""
    stats = requests.get(f"{server.url}/datastore/", timeout=30).json()
    model = requests.get(f"{server.url}/datastore/", params={"output": "all"}, timeout=30).json()
    return stats, model, server.files()


def _put_file(
    server: LiveServer,
    route: str,
    query: str,
    field: str,
    filename: str,
    content: bytes,
    **kwargs: Any,
) -> requests.Response:
    """PUT a multipart upload; ``query`` is sent as is (already URL-encoded)."""
    return requests.put(
        f"{server.url}{route}?{query}",
        files={field: (filename, content)},
        data={"params": "{}"},
        timeout=30,
        **kwargs,
    )


def _upload(server: LiveServer, image_id: str, path: Path) -> None:
    response = _put_file(
        server, "/datastore/image", f"image={image_id}", "file", path.name, path.read_bytes()
    )
    assert response.status_code == 200, response.text


def _assert_refused(response: requests.Response, statuses: set[int], server: LiveServer, *words: str) -> None:
    assert response.status_code in statuses, f"{response.status_code}: {response.text}"
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    assert list(body) == ["detail"] and isinstance(body["detail"], str) and body["detail"], body
    for path in {str(server.data_dir), str(server.data_dir.resolve())}:
        assert path not in response.text
    for word in words:
        assert word.lower() in body["detail"].lower(), body


# ---------------------------------------------------------------- ids and tags

# case -> the value as it travels in the query string (already URL-encoded)
BAD_IDS = {
    "parent traversal": quote("../evil", safe=""),
    "slash": quote("a/evil", safe=""),
    "dot dot": "..",
    "hidden": ".evil",
    "space": quote("evil x", safe=""),
    "129 characters": "e" * 129,
    "double dot inside": "evil..b",
    "encoded traversal": "%2e%2e%2f%2e%2e%2fevil",
    "double-encoded traversal": "%252e%252e%252fevil",
    "empty": "",
}


def _id_requests(server: LiveServer, bad: str, image: bytes, label: bytes) -> Iterator[tuple[str, Any]]:
    """Every datastore request that takes an id or tag, with ``bad`` in it."""
    url = server.url
    yield "PUT image", _put_file(server, "/datastore/image", f"image={bad}", "file", "i.nii.gz", image)
    yield "PUT alias", _put_file(server, "/datastore/", f"image={bad}", "file", "i.nii.gz", image)
    yield (
        "PUT label id",
        _put_file(server, "/datastore/label", f"image={bad}&tag=final", "label", "l.nrrd", label),
    )
    yield "GET image", requests.get(f"{url}/datastore/image?image={bad}", timeout=30)
    yield "GET image info", requests.get(f"{url}/datastore/image/info?image={bad}", timeout=30)
    yield (
        "PUT image info",
        requests.put(f"{url}/datastore/image/info?image={bad}", data={"info": "{}"}, timeout=30),
    )
    yield "DELETE image", requests.delete(f"{url}/datastore/image?id={bad}", timeout=30)
    yield "GET label", requests.get(f"{url}/datastore/label?label={bad}&tag=final", timeout=30)
    yield "GET label info", requests.get(f"{url}/datastore/label/info?label={bad}&tag=final", timeout=30)
    yield (
        "PUT label info",
        requests.put(f"{url}/datastore/label/info?label={bad}&tag=final", data={"info": "{}"}, timeout=30),
    )
    yield (
        "PUT updatelabelinfo",
        requests.put(
            f"{url}/datastore/updatelabelinfo?label={bad}&tag=final", data={"params": "{}"}, timeout=30
        ),
    )
    yield "DELETE label", requests.delete(f"{url}/datastore/label?id={bad}&tag=final", timeout=30)
    yield "GET versions", requests.get(f"{url}/datastore/label/versions?image={bad}", timeout=30)
    if bad:  # an empty tag means "final", as in MONAI Label
        yield (
            "PUT label tag",
            _put_file(server, "/datastore/label", f"image=ct1&tag={bad}", "label", "l.nrrd", label),
        )
        yield "GET label tag", requests.get(f"{url}/datastore/label?label=ct1&tag={bad}", timeout=30)
        yield (
            "GET label info tag",
            requests.get(f"{url}/datastore/label/info?label=ct1&tag={bad}", timeout=30),
        )
        yield (
            "PUT label info tag",
            requests.put(f"{url}/datastore/label/info?label=ct1&tag={bad}", data={"info": "{}"}, timeout=30),
        )
        yield "DELETE label tag", requests.delete(f"{url}/datastore/label?id=ct1&tag={bad}", timeout=30)


@pytest.mark.parametrize("bad", list(BAD_IDS.values()), ids=list(BAD_IDS))
def test_bad_ids_and_tags_are_400_and_write_nothing(
    shared_server: LiveServer, volumes: Volumes, bad: str
) -> None:
    image, label = volumes("img.nii.gz"), volumes("lab.nrrd", kind="label")
    _upload(shared_server, "ct1", image)
    before = _snapshot(shared_server)
    for name, response in _id_requests(shared_server, bad, image.read_bytes(), label.read_bytes()):
        assert response.status_code == 400, f"{name}: {response.status_code} {response.text}"
        _assert_refused(response, {400}, shared_server)
    head = requests.head(f"{shared_server.url}/datastore/image?image={bad}", timeout=30)
    assert head.status_code == 400
    assert _snapshot(shared_server) == before
    data_dir = shared_server.data_dir
    assert not list(data_dir.rglob("*evil*")), "a traversal target was written"
    assert not list(data_dir.parent.glob("*evil*")) and not list(data_dir.parent.parent.glob("*evil*"))


def test_a_traversal_filename_is_reduced_to_its_basename(sqlite_server: LiveServer, volumes: Volumes) -> None:
    image = volumes("img.nii.gz")
    response = _put_file(
        sqlite_server, "/datastore/image", "", "file", "../../evil.nii.gz", image.read_bytes()
    )
    assert response.status_code == 200 and response.json() == {"image": "evil"}, response.text
    assert not list(sqlite_server.data_dir.parent.glob("evil*"))
    assert not list(sqlite_server.data_dir.parent.parent.glob("evil*"))


# ---------------------------------------------------------------- image formats


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _series_zip(tmp_path: Path, slices: int, name: str = "series") -> bytes:
    paths = write_series(tmp_path / name, slices=slices)
    return _zip({f"{name}/{p.name}": p.read_bytes() for p in paths})


def _bad_image(kind: str, tmp_path: Path) -> bytes:
    if kind == "garbage":
        return np.random.default_rng(7).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    if kind == "text":
        return b"PatientID,Age\np-7,42\n" * 20
    if kind == "png":
        return b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + b"\x00" * 200
    if kind == "empty":
        return b""
    if kind in ("truncated nii.gz", "nii header only"):
        path = tmp_path / ("v.nii.gz" if kind == "truncated nii.gz" else "v.nii")
        write_volume(path, np.arange(24 * 20 * 12, dtype=np.int16).reshape(24, 20, 12), DEFAULT_AFFINE)
        data = path.read_bytes()
        return data[: len(data) // 2] if kind == "truncated nii.gz" else data[:352]
    if kind == "gzip of text":
        return gzip.compress(b"not an image at all\n" * 50)
    if kind == "zip without dicom":
        return _zip({"readme.txt": b"hello", "data.csv": b"a,b\n1,2\n"})
    if kind == "single dicom":
        return CT_SMALL.read_bytes()
    if kind == "truncated nrrd":
        path = tmp_path / "v.nrrd"
        write_volume(path, np.arange(24 * 20 * 12, dtype=np.int16).reshape(24, 20, 12), DEFAULT_AFFINE)
        data = path.read_bytes()
        return data[: len(data) // 2]
    if kind == "4d nifti":
        path = tmp_path / "v4.nii.gz"
        write_volume(path, np.zeros((8, 8, 8, 3), dtype=np.int16), DEFAULT_AFFINE)
        return path.read_bytes()
    if kind in ("dicom series with a gap", "dicom slice truncated"):
        paths = write_series(tmp_path / "gap", slices=4)
        members = {p.name: p.read_bytes() for p in paths}
        if kind == "dicom series with a gap":
            del members[paths[1].name]
        else:
            members[paths[1].name] = members[paths[1].name][:-5000]
        return _zip(members)
    raise AssertionError(kind)


# kind -> (the words the detail must contain)
BAD_IMAGES: dict[str, tuple[str, ...]] = {
    "garbage": ("NIfTI", "NRRD", "DICOM"),
    "text": ("NIfTI", "text"),
    "png": ("NIfTI",),
    "empty": ("empty",),
    "truncated nii.gz": ("NIfTI", "voxel data"),
    "nii header only": ("NIfTI", "voxel data"),
    "gzip of text": ("gzip", "NIfTI"),
    "zip without dicom": ("DICOM",),
    "single dicom": ("DICOM", "zip"),
    "truncated nrrd": ("NRRD",),
    "4d nifti": ("3D",),
    "dicom series with a gap": ("evenly spaced",),
    "dicom slice truncated": ("DICOM", "pixel data"),
}


@pytest.mark.parametrize("kind", list(BAD_IMAGES))
def test_an_image_that_is_not_a_volume_is_refused_naming_the_problem(
    shared_server: LiveServer, tmp_path: Path, kind: str
) -> None:
    content = _bad_image(kind, tmp_path)
    before = _snapshot(shared_server)
    response = _put_file(shared_server, "/datastore/image", "image=ct1", "file", "ct1.nii.gz", content)
    _assert_refused(response, {415, 422}, shared_server, *BAD_IMAGES[kind])
    assert _snapshot(shared_server) == before


def test_a_zip_with_two_dicom_series_is_422(shared_server: LiveServer, tmp_path: Path) -> None:
    members: dict[str, bytes] = {}
    for name in ("a", "b"):
        members.update({f"{name}/{p.name}": p.read_bytes() for p in write_series(tmp_path / name, slices=2)})
    before = _snapshot(shared_server)
    response = _put_file(shared_server, "/datastore/image", "image=ct1", "file", "ct1.zip", _zip(members))
    _assert_refused(response, {422}, shared_server, "series")
    assert _snapshot(shared_server) == before


def test_a_zipped_dicom_series_is_stored_as_a_nifti_volume(sqlite_server: LiveServer, tmp_path: Path) -> None:
    content = _series_zip(tmp_path, slices=5)
    response = _put_file(sqlite_server, "/datastore/image", "image=ct1", "file", "ct1.zip", content)
    assert response.status_code == 200 and response.json() == {"image": "ct1"}, response.text
    download = requests.get(f"{sqlite_server.url}/datastore/image", params={"image": "ct1"}, timeout=30)
    assert download.status_code == 200
    assert download.headers["content-disposition"] == 'attachment; filename="ct1.nii.gz"'
    stored = tmp_path / "stored.nii.gz"
    stored.write_bytes(download.content)
    volume = read_volume(stored)
    template = pydicom.dcmread(CT_SMALL)
    assert volume.geometry.shape == (int(template.Columns), int(template.Rows), 5)
    expected = template.pixel_array.T.astype(np.float64) * float(template.RescaleSlope) + float(
        template.RescaleIntercept
    )
    assert np.array_equal(volume.array[:, :, 0], expected)
    assert volume.geometry.spacing == pytest.approx((*(float(s) for s in template.PixelSpacing), 2.5))


# ---------------------------------------------------------------- labels on the image's grid


def _affine(*, scale: float = 1.0, flip: bool = False, shift_mm: float = 0.0) -> np.ndarray:
    affine = DEFAULT_AFFINE.copy()
    affine[:3, :3] *= scale
    if flip:
        affine[:3, 0] *= -1
    affine[0, 3] += shift_mm
    return affine


# case -> (volumes() keyword arguments, the word the detail must contain)
BAD_LABELS: dict[str, tuple[dict[str, Any], str]] = {
    "wrong shape": ({"shape": (24, 20, 11)}, "shape"),
    "transposed shape": ({"shape": (20, 24, 12)}, "shape"),
    "wrong spacing": ({"affine": _affine(scale=1.1)}, "spacing"),
    "flipped orientation": ({"affine": _affine(flip=True)}, "orientation"),
    "shifted origin": ({"affine": _affine(shift_mm=4 * 0.8)}, "origin"),
}


@pytest.mark.parametrize("case", list(BAD_LABELS))
def test_a_label_off_its_image_grid_is_422_naming_the_mismatch(
    shared_server: LiveServer, volumes: Volumes, case: str
) -> None:
    kwargs, word = BAD_LABELS[case]
    _upload(shared_server, "ct1", volumes("img.nii.gz"))
    label = volumes("lab.nrrd", kind="label", **kwargs)
    before = _snapshot(shared_server)
    response = _put_file(
        shared_server, "/datastore/label", "image=ct1", "label", label.name, label.read_bytes()
    )
    _assert_refused(response, {422}, shared_server, word)
    assert _snapshot(shared_server) == before


def _tilted() -> np.ndarray:
    affine = DEFAULT_AFFINE.copy()
    affine[1, 0] += 1e-5 * 0.8
    return affine


# case -> (image file name, label file name, volumes() keyword arguments for the label)
CLOSE_ENOUGH: dict[str, tuple[str, str, dict[str, Any]]] = {
    "origin 0.1 voxel off": ("img.nii.gz", "lab.nrrd", {"affine": _affine(shift_mm=0.08)}),
    "spacing 1e-5 off": ("img.nii.gz", "lab.nrrd", {"affine": _affine(scale=1 + 1e-5)}),
    "direction 1e-5 off": ("img.nii.gz", "lab.nrrd", {"affine": _tilted()}),
    "nrrd image, nifti label": ("img.nrrd", "lab.nii.gz", {}),
}


@pytest.mark.parametrize("case", list(CLOSE_ENOUGH))
def test_a_label_on_the_image_grid_within_tolerance_is_accepted(
    sqlite_server: LiveServer, volumes: Volumes, case: str
) -> None:
    image_name, label_name, kwargs = CLOSE_ENOUGH[case]
    _upload(sqlite_server, "ct1", volumes(image_name))
    label = volumes(label_name, kind="label", **kwargs)
    response = _put_file(
        sqlite_server, "/datastore/label", "image=ct1", "label", label.name, label.read_bytes()
    )
    assert response.status_code == 200, response.text
    stored = requests.get(
        f"{sqlite_server.url}/datastore/label", params={"label": "ct1", "tag": "final"}, timeout=30
    )
    assert stored.content == label.read_bytes()


@pytest.mark.parametrize(("value", "status"), [(0.5, 422), (1.0, 200)])
def test_a_float_label_must_hold_whole_class_indices(
    sqlite_server: LiveServer, volumes: Volumes, tmp_path: Path, value: float, status: int
) -> None:
    _upload(sqlite_server, "ct1", volumes("img.nii.gz"))
    path = tmp_path / "soft.nii.gz"
    write_volume(path, np.full((24, 20, 12), value, dtype=np.float32), DEFAULT_AFFINE)
    before = _snapshot(sqlite_server)
    response = _put_file(
        sqlite_server, "/datastore/label", "image=ct1", "label", path.name, path.read_bytes()
    )
    if status == 200:
        assert response.status_code == 200, response.text
        return
    _assert_refused(response, {422}, sqlite_server, "integer")
    assert _snapshot(sqlite_server) == before


@pytest.mark.parametrize("kind", ["text", "zip without dicom", "single dicom"])
def test_a_label_that_is_not_nifti_or_nrrd_is_refused(
    shared_server: LiveServer, volumes: Volumes, tmp_path: Path, kind: str
) -> None:
    _upload(shared_server, "ct1", volumes("img.nii.gz"))
    before = _snapshot(shared_server)
    content = _bad_image(kind, tmp_path)
    response = _put_file(shared_server, "/datastore/label", "image=ct1", "label", "ct1.nrrd", content)
    _assert_refused(response, {415, 422}, shared_server, "NIfTI")
    assert _snapshot(shared_server) == before


def test_ohif_raw_bin_label_is_stored_on_the_image_grid(
    sqlite_server: LiveServer, volumes: Volumes, tmp_path: Path
) -> None:
    _upload(sqlite_server, "ct1", volumes("img.nii.gz"))
    voxels = np.random.default_rng(3).integers(0, 4, size=(24, 20, 12), dtype=np.uint8)
    raw = voxels.tobytes(order="F")
    response = _put_file(sqlite_server, "/datastore/label", "image=ct1", "label", "label.bin", raw)
    assert response.status_code == 200, response.text
    download = requests.get(
        f"{sqlite_server.url}/datastore/label", params={"label": "ct1", "tag": "final"}, timeout=30
    )
    assert download.status_code == 200
    stored = tmp_path / "stored.nii.gz"
    stored.write_bytes(download.content)
    volume = read_volume(stored)
    assert np.array_equal(volume.array, voxels)
    assert np.allclose(volume.geometry.affine, DEFAULT_AFFINE)


def test_ohif_raw_bin_label_of_the_wrong_size_is_422(shared_server: LiveServer, volumes: Volumes) -> None:
    _upload(shared_server, "ct1", volumes("img.nii.gz"))
    before = _snapshot(shared_server)
    raw = bytes(24 * 20 * 12 - 1)
    response = _put_file(shared_server, "/datastore/label", "image=ct1", "label", "label.bin", raw)
    _assert_refused(response, {422}, shared_server, ".bin", "bytes")
    assert _snapshot(shared_server) == before


# ---------------------------------------------------------------- upload size limit

LIMIT = 16 * 1024


@pytest.fixture
def limited_server(make_server: ServerFactory) -> LiveServer:
    return make_server(datastore=DatastoreSettings(upload_max_bytes=LIMIT))


@pytest.fixture
def grid(tmp_path: Path) -> tuple[Path, Path]:
    """A small-on-the-wire image (zeros, gzip) and a label on its grid that is over ``LIMIT``."""
    shape = (64, 64, 16)
    image, label = tmp_path / "zeros.nii.gz", tmp_path / "big.nii"
    write_volume(image, np.zeros(shape, dtype=np.int16), DEFAULT_AFFINE)
    rng = np.random.default_rng(0)
    write_volume(label, rng.integers(0, 3, size=shape, dtype=np.uint8), DEFAULT_AFFINE)
    assert image.stat().st_size < LIMIT // 2 < LIMIT < label.stat().st_size
    return image, label


def _chunked_put(server: LiveServer, route: str, field: str, path: Path) -> requests.Response:
    """A multipart PUT sent with ``Transfer-Encoding: chunked`` (no Content-Length)."""
    body, content_type = urllib3.encode_multipart_formdata(
        {field: (path.name, path.read_bytes()), "params": "{}"}
    )

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 4096):
            yield body[start : start + 4096]

    return requests.put(
        f"{server.url}{route}",
        params={"image": "ct1"},
        data=chunks(),
        headers={"Content-Type": content_type},
        timeout=30,
    )


def test_uploads_under_the_limit_are_accepted(limited_server: LiveServer, grid: tuple[Path, Path]) -> None:
    image, _ = grid
    _upload(limited_server, "ct1", image)
    response = _chunked_put(limited_server, "/datastore/image", "file", image)
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_an_image_over_the_upload_limit_is_413(
    limited_server: LiveServer, grid: tuple[Path, Path], chunked: bool
) -> None:
    _, big = grid  # any file over the limit: the size is refused before the format is looked at
    before = _snapshot(limited_server)
    if chunked:
        response = _chunked_put(limited_server, "/datastore/image", "file", big)
    else:
        response = _put_file(
            limited_server, "/datastore/image", "image=ct1", "file", big.name, big.read_bytes()
        )
    _assert_refused(response, {413}, limited_server, "limit")
    assert _snapshot(limited_server) == before


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_label_over_the_upload_limit_is_413(
    limited_server: LiveServer, grid: tuple[Path, Path], chunked: bool
) -> None:
    image, label = grid
    _upload(limited_server, "ct1", image)
    before = _snapshot(limited_server)
    if chunked:
        response = _chunked_put(limited_server, "/datastore/label", "label", label)
    else:
        response = _put_file(
            limited_server, "/datastore/label", "image=ct1", "label", label.name, label.read_bytes()
        )
    _assert_refused(response, {413}, limited_server, "limit")
    assert _snapshot(limited_server) == before


def test_a_dicom_zip_that_unpacks_over_its_limit_is_413(make_server: ServerFactory, tmp_path: Path) -> None:
    server = make_server(datastore=DatastoreSettings(dicom_zip_max_bytes=100_000))
    content = _series_zip(tmp_path, slices=5)  # about 5 x 39 KB once unpacked
    before = _snapshot(server)
    response = _put_file(server, "/datastore/image", "image=ct1", "file", "ct1.zip", content)
    _assert_refused(response, {413}, server, "zip")
    assert _snapshot(server) == before
