"""Measurements over HTTP: every saved label version is measured (volume, lesion count, centroid,
box), ``/infer`` returns them with MONAI Label's ``centroids``, and
``GET /measurements/patients/{id}`` lists a patient's studies by date with the volume changes."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import requests
from monailabel.client import MONAILabelClient

from labelloop.imaging import read_volume, write_volume
from tests.conftest import ServerFactory
from tests.support.http import publish_weights, upload
from tests.support.servers import LiveServer
from tests.support.volumes import make_image
from tests.support.weights import write_weights

LIVER, LESION = 1, 5
SHAPE = (48, 48, 32)
SPACING_MM = (1.2, 1.2, 1.5)
#: L/P-flipped axes (as a DICOM-derived CT), an origin away from 0.
AFFINE = np.array(
    [[-1.2, 0.0, 0.0, 30.0], [0.0, -1.2, 0.0, 25.0], [0.0, 0.0, 1.5, -20.0], [0.0, 0.0, 0.0, 1.0]]
)
CENTRE_IJK = (np.asarray(SHAPE, dtype=np.float64) - 1) / 2
#: A lesion growing over three studies, radius in mm.
RADII_MM = {"20240105": 9.0, "20240410": 12.0, "20240902": 15.0}


def _sphere_ml(radius_mm: float) -> float:
    return 4.0 / 3.0 * math.pi * radius_mm**3 / 1000.0


def _lesion_map(radius_mm: float, *, second: bool = False) -> npt.NDArray[np.uint8]:
    """A sphere of ``LESION`` centred in the grid; ``second``: plus a 3x3x3 cube lesion apart from it,
    and a liver slab (value 1) that a lesion count must not count."""
    grid = np.indices(SHAPE, dtype=np.float64)
    dist2 = sum(((grid[a] - CENTRE_IJK[a]) * SPACING_MM[a]) ** 2 for a in range(3))
    label = np.where(dist2 <= radius_mm**2, LESION, 0).astype(np.uint8)
    if second:
        label[1:4, 1:4, 1:4] = LESION
        label[40:46, 40:46, 0:4] = LIVER
    return label


def _put_label(server: LiveServer, image_id: str, path: Path) -> None:
    with open(path, "rb") as f:
        answer = requests.put(
            f"{server.url}/datastore/label",
            params={"image": image_id, "tag": "final"},
            files={"label": (path.name, f)},
            data={"params": json.dumps({})},
            timeout=60,
        )
    assert answer.status_code == 200, answer.text


def _get(server: LiveServer, path: str, **params: Any) -> Any:
    answer = requests.get(f"{server.url}{path}", params=params, timeout=60)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_saved_versions_are_measured_and_a_patient_trend_lists_the_studies_by_date(
    server: LiveServer, tmp_path: Path
) -> None:
    info = _get(server, "/info/")
    assert info["lesions"] == ["lesion"]
    image = tmp_path / "ct.nii.gz"
    make_image(image, shape=SHAPE, affine=AFFINE)
    # Uploaded out of order; the middle study gets its PatientID and StudyDate after the upload.
    dates = ["20240902", "20240105", "20240410"]
    for n, date in enumerate(dates):
        image_id = f"p1_{date}"
        if n == 2:
            upload(server, image_id, image)
            answer = requests.put(
                f"{server.url}/datastore/image/info",
                params={"image": image_id},
                data={"info": json.dumps({"PatientID": "P1", "StudyDate": date})},
                timeout=30,
            )
            assert answer.status_code == 200, answer.text
        else:
            upload(server, image_id, image, info={"PatientID": "P1", "StudyDate": date})
        label = tmp_path / f"{image_id}.nii.gz"
        write_volume(label, _lesion_map(RADII_MM[date], second=date == "20240902"), AFFINE)
        _put_label(server, image_id, label)
    upload(server, "p1_undated", image, info={"PatientID": "P1"})  # no label, no date: last
    upload(server, "p2_only", image, info={"PatientID": "P2", "StudyDate": "20230101"})
    _put_label(server, "p2_only", tmp_path / "p1_20240105.nii.gz")

    versions = _get(server, "/datastore/label/versions", tag="final")
    by_image = {v["image"]: v for v in versions}
    assert set(by_image) == {*(f"p1_{d}" for d in dates), "p2_only"}
    for date, radius in RADII_MM.items():
        measured = by_image[f"p1_{date}"]["measurements"]
        assert measured["connectivity"] == 26
        assert math.isclose(measured["voxel_volume_mm3"], float(np.prod(SPACING_MM)), rel_tol=1e-6)
        lesion = measured["labels"]["lesion"]
        assert lesion["lesion"] is True and measured["labels"]["liver"]["lesion"] is False
        assert lesion["value"] == LESION
        # The sphere alone is the largest component, within 2% of its volume.
        assert abs(lesion["largest_component_ml"] - _sphere_ml(radius)) / _sphere_ml(radius) < 0.02
        if date == "20240902":
            assert lesion["components"] == 2  # the sphere and the cube: two lesions
            cube_ml = 27 * measured["voxel_volume_mm3"] / 1000
            assert math.isclose(lesion["volume_ml"], lesion["largest_component_ml"] + cube_ml, abs_tol=1e-5)
            assert measured["labels"]["liver"]["voxels"] == 6 * 6 * 4
            assert measured["labels"]["liver"]["components"] == 1
        else:
            assert lesion["components"] == 1
            assert lesion["volume_ml"] == lesion["largest_component_ml"]
            # Centred sphere: its centroid is the grid's centre, in voxels and in RAS mm.
            assert lesion["centroid_ijk"] == CENTRE_IJK.tolist()
            ras = AFFINE[:3, :3] @ CENTRE_IJK + AFFINE[:3, 3]
            assert np.allclose(lesion["centroid_ras_mm"], ras, atol=1e-3)
            assert measured["labels"]["liver"]["volume_ml"] == 0.0
            assert measured["labels"]["liver"]["centroid_ras_mm"] is None
        where = np.nonzero(_lesion_map(radius, second=date == "20240902") == LESION)
        assert lesion["bbox"]["ijk_min"] == [int(w.min()) for w in where]
        assert lesion["bbox"]["ijk_max"] == [int(w.max()) for w in where]
        assert "background" not in measured["labels"]
    label_info = _get(server, "/datastore/label/info", label="p1_20240410", tag="final")
    assert label_info["measurements"] == by_image["p1_20240410"]["measurements"]

    trend = _get(server, "/measurements/patients/P1")
    assert trend["patient_id"] == "P1" and trend["tag"] == "final"
    studies = trend["studies"]
    assert [s["image"] for s in studies] == ["p1_20240105", "p1_20240410", "p1_20240902", "p1_undated"]
    assert [s["study_date"] for s in studies] == ["2024-01-05", "2024-04-10", "2024-09-02", None]
    assert studies[0]["info"]["PatientID"] == "P1" and studies[1]["info"]["StudyDate"] == "20240410"
    assert studies[3]["label"] is None and studies[3]["measurements"] is None
    assert studies[0]["label"]["version"] == 1 and studies[0]["label"]["etag"].startswith('"v1-')
    volumes = [by_image[s["image"]]["measurements"]["labels"]["lesion"]["volume_ml"] for s in studies[:3]]
    first, second, third = (s["changes"]["lesion"] for s in studies[:3])
    assert first == {"volume_ml": volumes[0], "previous_ml": None, "change_ml": None, "change_pct": None}
    for change, before, after in ((second, volumes[0], volumes[1]), (third, volumes[1], volumes[2])):
        assert change["volume_ml"] == after and change["previous_ml"] == before
        assert change["change_ml"] == after - before > 0
        assert math.isclose(change["change_pct"], 100 * (after - before) / before)
    # Liver: absent (0 mL) on the first two, then present: no relative growth from 0.
    assert third["change_ml"] > 0 and studies[2]["changes"]["liver"]["change_pct"] is None
    assert studies[1]["changes"]["liver"]["change_ml"] == 0.0
    assert studies[3]["changes"]["lesion"]["volume_ml"] is None
    assert studies[3]["changes"]["lesion"]["change_ml"] is None

    other = _get(server, "/measurements/patients/P2")
    assert [s["image"] for s in other["studies"]] == ["p2_only"]
    missing = requests.get(f"{server.url}/measurements/patients/P404", timeout=30)
    assert missing.status_code == 404 and list(missing.json()) == ["detail"]
    assert "P404" in missing.json()["detail"]
    strict = requests.get(f"{server.url}/measurements/patients/P1", params={"tagg": "x"}, timeout=30)
    assert strict.status_code == 400, strict.text


def test_infer_params_carry_measurements_and_monai_centroids_and_the_client_gets_its_label(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    server = make_server()
    make_image(tmp_path / "ct.nii.gz", shape=SHAPE, affine=AFFINE)
    upload(server, "ct", tmp_path / "ct.nii.gz")
    # Weights whose output is liver on every voxel: the measurements are known exactly.
    publish_weights(server, write_weights(tmp_path / "seg.pt", "segmentation", winner=LIVER), "segmentation")
    client = MONAILabelClient(server.url, tmpdir=str(tmp_path / "client"), client_id="user-xyz")
    result_file, params = client.infer("segmentation", "ct", {})
    label = read_volume(Path(result_file))
    assert label.array.shape == SHAPE and np.all(label.array == LIVER)
    assert np.allclose(label.geometry.affine, AFFINE, atol=1e-4)
    voxels = int(np.prod(SHAPE))
    liver = params["measurements"]["labels"]["liver"]
    assert liver["voxels"] == voxels and liver["components"] == 1 and liver["lesion"] is False
    # The image's affine as stored (NIfTI keeps float32): the voxel volume up to that precision.
    assert math.isclose(liver["volume_ml"], voxels * float(np.prod(SPACING_MM)) / 1000, rel_tol=1e-6)
    assert liver["centroid_ijk"] == CENTRE_IJK.tolist()
    assert params["measurements"]["labels"]["lesion"]["voxels"] == 0
    assert params["measurements"]["labels"]["lesion"]["lesion"] is True
    # MONAI Label's format: label_<value> -> [value, i, j, k] as strings, truncated voxel indices.
    assert params["centroids"] == {"label_1": ["1", "23", "23", "15"]}

    answer = requests.post(
        f"{server.url}/infer/segmentation",
        params={"image": "ct", "output": "json"},
        files={"params": (None, "{}")},
        timeout=120,
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["centroids"] == params["centroids"]
    assert answer.json()["measurements"] == params["measurements"]
