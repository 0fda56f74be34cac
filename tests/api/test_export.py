"""``GET /datastore/dataset``: one format (NIfTI ``.nii.gz``) in ``imagesTr/`` and ``labelsTr/``,
the same voxels on the same grid, and ``dataset.json``'s modality taken from the images."""

from __future__ import annotations

import gzip
import io
import json
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nibabel as nib
import nrrd
import numpy as np
import numpy.typing as npt
import requests

from tests.support.http import upload
from tests.support.servers import LiveServer
from tests.support.volumes import DEFAULT_AFFINE

Volumes = Callable[..., Path]

SHAPE = (24, 20, 12)
_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def _oblique_affine() -> npt.NDArray[np.float64]:
    """A RAS affine with unequal spacing, a rotation about two axes and an off-centre origin."""
    a, b = np.deg2rad(20.0), np.deg2rad(-35.0)
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    rz = np.array([[np.cos(b), -np.sin(b), 0], [np.sin(b), np.cos(b), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rz @ rx @ np.diag([0.7, 0.9, 3.0])
    affine[:3, 3] = [-112.5, 37.25, 410.0]
    return affine


def _write_nrrd(path: Path, array: npt.NDArray[Any], affine: npt.NDArray[np.float64], **fields: str) -> Path:
    """An NRRD written with pynrrd itself (LPS space), with extra key-value ``fields``."""
    lps = _LPS @ affine
    header = {
        "space": "left-posterior-superior",
        "space directions": lps[:3, :3].T,
        "space origin": lps[:3, 3],
        "kinds": ["domain", "domain", "domain"],
        "encoding": "gzip",
        **fields,
    }
    nrrd.write(str(path), array, header=header, index_order="F")
    return path


def _write_nifti(path: Path, array: npt.NDArray[Any], affine: npt.NDArray[np.float64]) -> Path:
    img = nib.Nifti1Image(array, affine)
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=1)
    nib.save(img, str(path))
    return path


def _image(seed: int) -> npt.NDArray[np.int16]:
    return np.random.default_rng(seed).integers(-1000, 1000, size=SHAPE, dtype=np.int16)


def _label(seed: int, dtype: Any = np.uint8) -> npt.NDArray[Any]:
    return np.random.default_rng(seed + 100).integers(0, 2, size=SHAPE).astype(dtype)


def _save(server: LiveServer, image_id: str, path: Path, tag: str = "final") -> None:
    with open(path, "rb") as f:
        answer = requests.put(
            f"{server.url}/datastore/label",
            params={"image": image_id, "tag": tag},
            files={"label": (path.name, f)},
            timeout=30,
        )
    assert answer.status_code == 200, answer.text


def _export(server: LiveServer) -> zipfile.ZipFile:
    answer = requests.get(f"{server.url}/datastore/dataset", timeout=120)
    assert answer.status_code == 200, answer.text
    return zipfile.ZipFile(io.BytesIO(answer.content))


def _read_nifti(archive: zipfile.ZipFile, entry: str, tmp_path: Path) -> Any:
    raw = archive.read(entry)
    assert raw[:2] == b"\x1f\x8b", f"{entry} is not gzipped"
    path = tmp_path / entry.replace("/", "_")
    path.write_bytes(raw)
    img = nib.load(str(path))
    assert isinstance(img, nib.Nifti1Image), entry
    return img


def _assert_same(img: Any, array: npt.NDArray[Any], affine: npt.NDArray[np.float64]) -> None:
    data = np.asanyarray(img.dataobj)
    assert data.shape == array.shape
    assert np.array_equal(data, array)
    assert np.allclose(img.affine, affine, atol=1e-4), (img.affine, affine)
    assert np.allclose(img.header.get_zooms()[:3], np.linalg.norm(affine[:3, :3], axis=0), atol=1e-5)
    assert int(img.header["sform_code"]) > 0


def test_a_mixed_datastore_exports_every_image_and_label_as_nifti_gz_on_the_same_grid(
    server: LiveServer, tmp_path: Path
) -> None:
    oblique = _oblique_affine()
    src = tmp_path / "src"
    src.mkdir()
    images = {"ct1": _image(1), "ct2": _image(2), "ct3": _image(3), "ct4": _image(4)}
    labels = {
        "ct1": _label(1),
        "ct2": _label(2),
        "ct3": _label(3, np.int64),  # pynrrd's int64: NIfTI-1 tools want something narrower
        "ct4": _label(4, np.float32),  # a float label of whole numbers, accepted as a label
    }
    affines = {"ct1": DEFAULT_AFFINE, "ct2": oblique, "ct3": oblique, "ct4": DEFAULT_AFFINE}
    image_files = {
        "ct1": _write_nifti(src / "ct1.nii.gz", images["ct1"], affines["ct1"]),
        "ct2": _write_nrrd(src / "ct2.nrrd", images["ct2"], affines["ct2"]),
        "ct3": _write_nifti(src / "ct3.nii", images["ct3"], affines["ct3"]),
        "ct4": _write_nrrd(src / "ct4.nrrd", images["ct4"], affines["ct4"]),
    }
    label_files = {
        "ct1": _write_nrrd(src / "ct1_label.nrrd", labels["ct1"], affines["ct1"]),
        "ct2": _write_nifti(src / "ct2_label.nii.gz", labels["ct2"], affines["ct2"]),
        "ct3": _write_nrrd(src / "ct3_label.seg.nrrd", labels["ct3"], affines["ct3"]),
        "ct4": _write_nrrd(src / "ct4_label.nrrd", labels["ct4"], affines["ct4"]),
    }
    for case in images:
        upload(server, case, image_files[case])
        _save(server, case, label_files[case])
    files = server.files()

    archive = _export(server)

    cases = sorted(images)
    assert sorted(archive.namelist()) == sorted(
        [f"imagesTr/{c}.nii.gz" for c in cases]
        + [f"labelsTr/{c}.nii.gz" for c in cases]
        + ["dataset.json", "metadata.json"]
    )
    for case in cases:
        image = _read_nifti(archive, f"imagesTr/{case}.nii.gz", tmp_path)
        _assert_same(image, images[case], affines[case])
        assert image.get_data_dtype() == np.int16
        label = _read_nifti(archive, f"labelsTr/{case}.nii.gz", tmp_path)
        _assert_same(label, labels[case], affines[case])
        assert label.get_data_dtype().kind in "iu", (case, label.get_data_dtype())
        assert label.dataobj.slope in (1.0, None) and label.dataobj.inter in (0.0, None)
    # A stored .nii.gz goes in as it is; a .nii is gzipped around the same bytes.
    assert archive.read("imagesTr/ct1.nii.gz") == image_files["ct1"].read_bytes()
    assert archive.read("labelsTr/ct2.nii.gz") == label_files["ct2"].read_bytes()
    assert gzip.decompress(archive.read("imagesTr/ct3.nii.gz")) == image_files["ct3"].read_bytes()
    # The narrowest dtype that holds the values, not float.
    assert _read_nifti(archive, "labelsTr/ct4.nii.gz", tmp_path).get_data_dtype() == np.uint8

    dataset = json.loads(archive.read("dataset.json"))
    assert dataset["file_ending"] == ".nii.gz"
    assert dataset["numTraining"] == 4
    for case in dataset["training"]:
        assert case["image"].removeprefix("./") in archive.namelist()
        assert case["label"].removeprefix("./") in archive.namelist()
        assert case["image"].rsplit("/", 1)[1] == case["label"].rsplit("/", 1)[1]  # MSD: one name
    assert server.files() == files  # no converted file or zip left behind


def test_modality_comes_from_the_images(make_server: Callable[..., LiveServer], tmp_path: Path) -> None:
    label = _write_nrrd(tmp_path / "label.nrrd", _label(0), DEFAULT_AFFINE)

    def export_modality(server: LiveServer) -> tuple[str, dict[str, Any]]:
        dataset = json.loads(_export(server).read("dataset.json"))
        per_case = {c["image"]: c["labelloop"]["modality"] for c in dataset["training"]}
        return dataset["modality"]["0"], per_case

    # NRRD key-value fields: DICOM (0008,0060) as ITK writes a series' tags, or a plain "modality".
    mr = make_server()
    upload(mr, "mr1", _write_nrrd(tmp_path / "mr1.nrrd", _image(1), DEFAULT_AFFINE, **{"0008|0060": "MR"}))
    upload(mr, "mr2", _write_nrrd(tmp_path / "mr2.nrrd", _image(2), DEFAULT_AFFINE, modality="MRI"))
    for case in ("mr1", "mr2"):
        _save(mr, case, label)
    assert export_modality(mr) == (
        "MR",
        {"./imagesTr/mr1.nii.gz": "MR", "./imagesTr/mr2.nii.gz": "MR"},
    )

    # The image info: DICOM's keyword, as a PACS series records it (here sent at upload).
    ct = make_server()
    nifti = _write_nifti(tmp_path / "ct.nii.gz", _image(3), DEFAULT_AFFINE)
    upload(ct, "ct1", nifti, info={"Modality": "CT"})
    upload(ct, "ct2", nifti)  # nothing says: the others decide
    for case in ("ct1", "ct2"):
        _save(ct, case, label)
    assert export_modality(ct) == (
        "CT",
        {"./imagesTr/ct1.nii.gz": "CT", "./imagesTr/ct2.nii.gz": None},
    )

    # A mix says so; nothing recorded anywhere is "unknown".
    upload(ct, "mr3", _write_nrrd(tmp_path / "mr3.nrrd", _image(4), DEFAULT_AFFINE, modality="MR"))
    _save(ct, "mr3", label)
    assert export_modality(ct)[0] == "CT/MR"
    plain = make_server()
    upload(plain, "x", nifti)
    _save(plain, "x", label)
    assert export_modality(plain) == ("unknown", {"./imagesTr/x.nii.gz": None})
