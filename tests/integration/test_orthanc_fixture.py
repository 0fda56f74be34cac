"""The PACS test fixtures: volumes as DICOM series and labels as DICOM SEG, through a real Orthanc.

The first tests need no server: they pin the geometry of ``volume_to_series`` and the SEG round
trip. The rest start Orthanc (Debian's, with its DICOMweb plugin) once for the module and speak
STOW-RS, QIDO-RS and WADO-RS to it with dicomweb-client, as a PACS client would.
"""

from __future__ import annotations

import io
import math
import random
import socket
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

import highdicom as hd
import numpy as np
import numpy.typing as npt
import pydicom
import pytest
import requests
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, SegmentationStorage

from labelloop.errors import ImageReadError
from labelloop.imaging import Geometry, Volume, read_dicom_series, read_dicom_zip, read_volume
from labelloop.imaging.dicomseg import read_seg
from labelloop.sampledata.pyradiomics import SDIST_NAME, default_cache_dir
from labelloop.sampledata.synthetic import SYNTHETIC_LABELS, generate_case
from tests.support.dicom_series import (
    as_read_back,
    label_to_seg,
    reading_order,
    seg_to_label,
    volume_to_series,
    write_series,
    zip_series,
)
from tests.support.orthanc import OrthancServer, start_orthanc

NAMES = {value: name for name, value in SYNTHETIC_LABELS.items() if value}


def _rotation(axis: list[float], degrees: float) -> npt.NDArray[np.float64]:
    u = np.asarray(axis, dtype=np.float64) / np.linalg.norm(axis)
    a = math.radians(degrees)
    cross = np.array([[0, -u[2], u[1]], [u[2], 0, -u[0]], [-u[1], u[0], 0]])
    return np.asarray(np.eye(3) * math.cos(a) + math.sin(a) * cross + (1 - math.cos(a)) * np.outer(u, u))


def _affine(columns: npt.NDArray[np.float64], origin: list[float]) -> npt.NDArray[np.float64]:
    affine = np.eye(4)
    affine[:3, :3] = columns
    affine[:3, 3] = origin
    return affine


#: RAS affines: (name, affine, left-handed?)
AFFINES = [
    ("ras-axis-aligned", _affine(np.diag([0.8, 0.9, 2.5]), [-20.0, 30.0, -40.0]), False),
    ("lps-flipped", _affine(np.diag([-0.8, -0.9, 2.5]), [100.0, 80.0, -40.0]), False),
    # brain1's NRRD direction diag(1, -1, 1) in LPS is diag(-1, 1, 1) in RAS: left-handed
    ("brain1-like", _affine(np.diag([-0.78125, 0.78125, 6.5]), [99.6, -99.6, -78.0]), True),
    (
        "oblique",
        _affine(_rotation([1.0, 2.0, 0.5], 23.0) @ np.diag([0.7, 1.1, 3.0]), [5.5, -7.25, 12.0]),
        False,
    ),
    ("sagittal", _affine(np.array([[0, 0, -2.0], [0.9, 0, 0], [0, -0.8, 0]]), [40.0, -60.0, 70.0]), False),
]
AFFINE_IDS = [name for name, _, _ in AFFINES]


def _volume(
    affine: npt.NDArray[np.float64], shape: tuple[int, int, int] = (12, 10, 6), seed: int = 0
) -> Volume:
    rng = np.random.default_rng(seed)
    array = rng.integers(-1024, 3072, size=shape, dtype=np.int16)
    return Volume(array=array, geometry=Geometry(shape=shape, affine=affine))


def _label(shape: tuple[int, int, int], values: list[int], seed: int = 1) -> npt.NDArray[np.uint8]:
    rng = np.random.default_rng(seed)
    return rng.choice(np.asarray([0, *values], dtype=np.uint8), size=shape)


def _transported(ds: Dataset) -> Dataset:
    """``ds`` written to bytes and read back, as it crosses a network."""
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return pydicom.dcmread(io.BytesIO(buffer.getvalue()))


# ---------------------------------------------------------------- series geometry (no server)


@pytest.mark.parametrize(("name", "affine", "left_handed"), AFFINES, ids=AFFINE_IDS)
def test_series_reads_back_with_the_same_voxels_and_geometry(
    name: str, affine: npt.NDArray[np.float64], left_handed: bool
) -> None:
    volume = _volume(affine)
    series = [_transported(ds) for ds in volume_to_series(volume, patient_id="geometry")]

    back = read_dicom_series(reversed(series))
    expected = as_read_back(volume)

    assert (expected is not volume) == left_handed
    assert back.array.dtype == np.int16
    np.testing.assert_array_equal(back.array, expected.array)
    np.testing.assert_allclose(back.geometry.affine, expected.geometry.affine, atol=1e-6)
    # Every voxel keeps its physical position, reversed slice order or not.
    i, j, k = 3, 7, 1
    kk = volume.array.shape[2] - 1 - k if left_handed else k
    assert back.array[i, j, kk] == volume.array[i, j, k]
    np.testing.assert_allclose(back.geometry.affine @ [i, j, kk, 1], affine @ [i, j, k, 1], atol=1e-6)


def test_series_slices_hold_transposed_planes_and_the_required_attributes() -> None:
    volume = _volume(AFFINES[0][1], shape=(12, 10, 3))
    series = volume_to_series(
        volume, patient_id="P-7", study_uid="1.2.826.0.1.3680043.8.498.1", study_date="20230405"
    )

    assert len(series) == 3
    for k, ds in enumerate(series):
        assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert ds.SOPClassUID == ds.file_meta.MediaStorageSOPClassUID == CTImageStorage
        assert ds.SOPInstanceUID == ds.file_meta.MediaStorageSOPInstanceUID
        assert (ds.Rows, ds.Columns) == (10, 12)
        assert ds.InstanceNumber == k + 1
        assert (ds.PatientID, ds.StudyDate, ds.Modality) == ("P-7", "20230405", "CT")
        assert ds.StudyInstanceUID == "1.2.826.0.1.3680043.8.498.1"
        assert [float(v) for v in ds.PixelSpacing] == [0.9, 0.8]
        assert float(ds.SliceThickness) == 2.5
        np.testing.assert_array_equal(ds.pixel_array, volume.array[:, :, k].T)
    assert len({ds.SeriesInstanceUID for ds in series}) == 1
    assert len({ds.FrameOfReferenceUID for ds in series}) == 1
    assert len({ds.SOPInstanceUID for ds in series}) == 3

    mr = volume_to_series(volume, patient_id="P-7", modality="MR")
    assert {ds.SOPClassUID for ds in mr} == {MRImageStorage}
    assert {ds.Modality for ds in mr} == {"MR"}


def test_values_outside_int16_round_trip_through_rescale_intercept() -> None:
    shape = (6, 5, 4)
    array = np.random.default_rng(2).integers(0, 65536, size=shape, dtype=np.int32)
    array.flat[:2] = [0, 65535]
    volume = Volume(array=array, geometry=Geometry(shape=shape, affine=AFFINES[0][1]))

    series = volume_to_series(volume, patient_id="wide", modality="MR")
    back = read_dicom_series(series)

    assert {ds.pixel_array.dtype for ds in series} == {np.dtype(np.int16)}
    assert float(series[0].RescaleIntercept) == 32768.0
    np.testing.assert_array_equal(back.array, array)


def test_float_values_are_quantised_to_within_half_a_step() -> None:
    shape = (6, 5, 4)
    array = np.random.default_rng(3).normal(0.0, 1.0, size=shape).astype(np.float32)
    volume = Volume(array=array, geometry=Geometry(shape=shape, affine=AFFINES[0][1]))

    series = volume_to_series(volume, patient_id="float")
    back = read_dicom_series(series)

    step = float(series[0].RescaleSlope)
    assert back.array.dtype == np.float32
    assert float(np.abs(back.array - array).max()) <= step / 2 + 1e-6


def test_write_series_and_zip_series_give_readable_part10_files(tmp_path: Path) -> None:
    volume = _volume(AFFINES[3][1])
    series = volume_to_series(volume, patient_id="files")

    paths = write_series(tmp_path / "series", series)
    archive = zip_series(tmp_path / "series.zip", series)

    assert [p.name for p in paths] == [f"{n:04d}.dcm" for n in range(6)]
    assert all(p.read_bytes()[128:132] == b"DICM" for p in paths)
    from_files = read_dicom_series(pydicom.dcmread(p) for p in paths)
    from_zip = read_dicom_zip(archive, max_bytes=10_000_000)
    for back in (from_files, from_zip):
        np.testing.assert_array_equal(back.array, volume.array)
        np.testing.assert_allclose(back.geometry.affine, volume.geometry.affine, atol=1e-6)


# ---------------------------------------------------------------- DICOM SEG (no server)


@pytest.mark.parametrize(("name", "affine", "left_handed"), AFFINES, ids=AFFINE_IDS)
def test_seg_round_trips_onto_the_series_grid(
    name: str, affine: npt.NDArray[np.float64], left_handed: bool
) -> None:
    volume = as_read_back(_volume(affine))
    source = volume_to_series(_volume(affine), patient_id="seg")
    label = _label(volume.geometry.shape, [1, 3, 5])
    label[:, :, 2] = 0  # an empty slice: its frames are left out of the SEG

    seg = _transported(label_to_seg(label, source, NAMES))
    shuffled = random.Random(0).sample(source, len(source))
    back = seg_to_label(seg, shuffled, NAMES)

    assert seg.SOPClassUID == SegmentationStorage
    assert seg.SegmentationType == "BINARY"
    assert [s.SegmentLabel for s in seg.SegmentSequence] == [NAMES[1], NAMES[3], NAMES[5]]
    assert [s.SegmentNumber for s in seg.SegmentSequence] == [1, 2, 3]
    assert str(seg.ContentCreatorName) == "tester^"
    assert seg.ManufacturerModelName == "labelloop"
    assert seg.StudyInstanceUID == source[0].StudyInstanceUID
    assert seg.FrameOfReferenceUID == source[0].FrameOfReferenceUID
    assert back.dtype == np.uint8
    np.testing.assert_array_equal(back, label)
    # Without names, pixels get their segment number.
    np.testing.assert_array_equal(seg_to_label(seg, source), np.searchsorted([0, 1, 3, 5], label))


def test_seg_names_unnamed_values_and_refuses_empty_or_misfitting_labels() -> None:
    source = volume_to_series(_volume(AFFINES[0][1]), patient_id="seg")
    label = _label((12, 10, 6), [1, 7])

    seg = label_to_seg(label, source, NAMES)  # 7 has no name: its segment is "label 7"
    labels = [str(d.SegmentLabel) for d in seg.SegmentSequence]
    assert labels == [NAMES[1], "label 7"]
    np.testing.assert_array_equal(seg_to_label(seg, source, {**NAMES, 7: "label 7"}), label)
    with pytest.raises(ImageReadError, match="empty"):
        label_to_seg(np.zeros_like(label), source, NAMES)
    with pytest.raises(ImageReadError, match="shape"):
        label_to_seg(label[:, :, :3], source, NAMES)
    seg = label_to_seg(label, source, {1: "liver", 7: "gallbladder"})
    # A segment named after no label of the app is left out and reported, never given a value
    # by its number; a known name maps to that label's value whatever the segment's number.
    read = read_seg(seg, source, NAMES)
    liver = next(value for value, name in NAMES.items() if name == "liver")
    assert set(np.unique(read.label)) == {0, liver}
    np.testing.assert_array_equal(read.label == liver, label == 1)
    assert [(s.label, s.matched_by) for s in read.skipped] == [("gallbladder", "none")]


# ---------------------------------------------------------------- Orthanc


@pytest.fixture(scope="module")
def synthetic_case() -> tuple[Volume, npt.NDArray[np.uint8]]:
    """A synthetic CT (64 x 64 x 16 voxels of 3 x 3 x 4 mm, RAS) and its organ label."""
    image, label, affine = generate_case(np.random.default_rng(7), (64, 64, 16))
    return Volume(array=image, geometry=Geometry(shape=image.shape, affine=affine)), label


def test_orthanc_answers_with_its_dicomweb_plugin(orthanc: OrthancServer) -> None:
    plugins = orthanc.rest("GET", "/plugins").json()
    system = orthanc.rest("GET", "/system").json()

    assert "dicom-web" in plugins
    assert system["HttpPort"] == orthanc.port
    assert orthanc.client().search_for_studies() == []


def test_series_round_trips_through_stow_qido_and_wado(
    orthanc: OrthancServer, synthetic_case: tuple[Volume, npt.NDArray[np.uint8]]
) -> None:
    volume, _ = synthetic_case
    series = volume_to_series(volume, patient_id="SYN-001", study_date="20240315")
    study_uid, series_uid = series[0].StudyInstanceUID, series[0].SeriesInstanceUID

    stored = orthanc.store(series)
    client = orthanc.client()
    found = client.search_for_series(
        search_filters={"PatientID": "SYN-001", "Modality": "CT", "StudyDate": "20240315"}
    )
    elsewhere = client.search_for_series(search_filters={"PatientID": "SYN-001", "StudyDate": "20240316"})
    retrieved = client.retrieve_series(study_uid, series_uid)
    back = read_dicom_series(retrieved)

    assert len(stored.ReferencedSOPSequence) == 16
    assert [Dataset.from_json(f).SeriesInstanceUID for f in found] == [series_uid]
    assert elsewhere == []
    assert len(retrieved) == 16
    assert {ds.SOPInstanceUID for ds in retrieved} == {ds.SOPInstanceUID for ds in series}
    np.testing.assert_array_equal(back.array, volume.array)
    np.testing.assert_allclose(back.geometry.affine, volume.geometry.affine, atol=1e-6)


def test_seg_round_trips_through_stow_qido_and_wado(
    orthanc: OrthancServer, synthetic_case: tuple[Volume, npt.NDArray[np.uint8]]
) -> None:
    volume, label = synthetic_case
    series = volume_to_series(volume, patient_id="SYN-002")
    seg = label_to_seg(label, series, NAMES, creator="Annotator^Alice")
    orthanc.store(series)

    orthanc.store([seg])
    client = orthanc.client()
    found = client.search_for_series(search_filters={"PatientID": "SYN-002", "Modality": "SEG"})
    (retrieved,) = client.retrieve_series(seg.StudyInstanceUID, seg.SeriesInstanceUID)
    source = client.retrieve_series(series[0].StudyInstanceUID, series[0].SeriesInstanceUID)
    back = seg_to_label(retrieved, source, NAMES)

    assert [Dataset.from_json(f).SeriesInstanceUID for f in found] == [seg.SeriesInstanceUID]
    assert retrieved.SOPClassUID == SegmentationStorage
    assert str(retrieved.ContentCreatorName) == "Annotator^Alice"
    assert hd.seg.Segmentation.from_dataset(retrieved).number_of_segments == len(np.unique(label)) - 1
    np.testing.assert_array_equal(back, label)


def test_clear_empties_orthanc(orthanc: OrthancServer) -> None:
    orthanc.store(volume_to_series(_volume(AFFINES[0][1]), patient_id="CLEAR"))
    assert orthanc.statistics()["CountInstances"] == 6

    orthanc.clear()

    assert orthanc.statistics()["CountInstances"] == 0
    assert orthanc.client().search_for_series() == []


def test_store_frames_datasets_that_lack_a_preamble(orthanc: OrthancServer) -> None:
    series = volume_to_series(_volume(AFFINES[0][1]), patient_id="PREAMBLE")
    for ds in series:
        ds.preamble = None

    orthanc.store(series)
    retrieved = orthanc.client().retrieve_series(series[0].StudyInstanceUID, series[0].SeriesInstanceUID)

    assert len(retrieved) == 6
    assert all(ds.preamble is None for ds in series)


def _non_loopback_address() -> str | None:
    """This machine's address on its default route, if it has one (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.123", 9))
        except OSError:
            return None
        address: str = s.getsockname()[0]
    return None if address.startswith("127.") else address


def test_orthanc_refuses_clients_that_are_not_on_loopback(orthanc: OrthancServer) -> None:
    address = _non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address")

    response = requests.get(f"http://{address}:{orthanc.port}/system", timeout=5)

    assert response.status_code == 401
    assert requests.get(f"{orthanc.url}/system", timeout=5).status_code == 200


@pytest.fixture(scope="module")
def orthanc_with_auth() -> Iterator[OrthancServer]:
    """A second Orthanc that wants HTTP basic auth."""
    server, stop = start_orthanc(users={"pacs-user": "s3cret"})
    try:
        yield server
    finally:
        stop()


def test_orthanc_with_auth_wants_the_credentials(orthanc_with_auth: OrthancServer) -> None:
    server = orthanc_with_auth
    studies = f"{server.dicomweb}/studies"

    assert server.credentials == ("pacs-user", "s3cret")
    assert requests.get(studies, timeout=5).status_code == 401
    assert requests.get(studies, auth=("pacs-user", "wrong"), timeout=5).status_code == 401
    assert requests.get(studies, auth=("pacs-user", "s3cret"), timeout=5).status_code == 200
    with pytest.raises(requests.HTTPError, match="401"):
        server.client(auth=False).search_for_studies()

    series = volume_to_series(_volume(AFFINES[0][1]), patient_id="AUTH")
    server.store(series)
    found = server.client().search_for_series(search_filters={"PatientID": "AUTH"})
    assert [Dataset.from_json(f).SeriesInstanceUID for f in found] == [series[0].SeriesInstanceUID]


# ---------------------------------------------------------------- a real volume, when cached


def _pyradiomics_case(case: str) -> tuple[Volume, Volume]:
    """``(image, label)`` of a pyradiomics case, read from the cached sdist (never downloaded)."""
    sdist = default_cache_dir() / SDIST_NAME
    if not sdist.is_file():
        pytest.skip(f"{sdist} is not cached (`make sample-data` downloads it)")
    volumes = []
    with tarfile.open(sdist, "r:gz") as tar, tempfile.TemporaryDirectory() as tmp:
        for kind in ("image", "label"):
            member = tar.extractfile(f"pyradiomics-3.0.1/data/{case}_{kind}.nrrd")
            assert member is not None
            path = Path(tmp) / f"{case}_{kind}.nrrd"
            path.write_bytes(member.read())
            volumes.append(read_volume(path))
    return volumes[0], volumes[1]


def test_brain1_comes_back_with_its_slices_reversed_at_the_same_positions() -> None:
    image, label = _pyradiomics_case("brain1")
    series = volume_to_series(image, patient_id="BRAIN1", modality="MR")
    expected_image = as_read_back(image)
    expected_label = as_read_back(Volume(array=label.array.astype(np.uint8), geometry=label.geometry)).array

    back = read_dicom_series(series)
    seg = label_to_seg(expected_label, series, {1: "lesion"})

    assert expected_image is not image  # left-handed: LPS direction diag(1, -1, 1)
    np.testing.assert_array_equal(back.array, expected_image.array)
    np.testing.assert_allclose(back.geometry.affine, expected_image.geometry.affine, atol=1e-4)
    np.testing.assert_array_equal(seg_to_label(_transported(seg), series, {1: "lesion"}), expected_label)


def test_lung1_round_trips_through_orthanc(orthanc: OrthancServer) -> None:
    image, label = _pyradiomics_case("lung1")
    series = volume_to_series(image, patient_id="LUNG1")
    lesion = label.array.astype(np.uint8)
    seg = label_to_seg(lesion, series, {1: "nodule"})

    orthanc.store(series)
    orthanc.store([seg])
    client = orthanc.client()
    source = client.retrieve_series(series[0].StudyInstanceUID, series[0].SeriesInstanceUID)
    (retrieved,) = client.retrieve_series(seg.StudyInstanceUID, seg.SeriesInstanceUID)
    back = read_dicom_series(source)

    assert [ds.SOPInstanceUID for ds in reading_order(source)] == [ds.SOPInstanceUID for ds in series]
    np.testing.assert_array_equal(back.array, image.array)
    np.testing.assert_allclose(back.geometry.affine, image.geometry.affine, atol=1e-4)
    np.testing.assert_array_equal(seg_to_label(retrieved, source, {1: "nodule"}), lesion)
