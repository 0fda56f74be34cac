"""The annotate loop against a real Orthanc (DICOMweb): list, next sample, infer, SEG, restart, proxy."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import requests
from monailabel.client import MONAILabelClient
from pydicom.dataset import Dataset

from labelloop.imaging import Geometry, Volume, read_volume, write_volume
from labelloop.imaging.dicomseg import seg_to_label
from labelloop.sampledata import SYNTHETIC_LABELS
from labelloop.sampledata.synthetic import generate_case
from labelloop.settings import DicomWebSettings, Settings
from tests.conftest import ServerFactory
from tests.support.dicom_series import label_to_seg, volume_to_series
from tests.support.orthanc import OrthancServer, start_orthanc
from tests.support.servers import APP_DIR, LiveServer, free_port, start_thread_server
from tests.support.weights import write_weights

NAMES = {value: name for name, value in SYNTHETIC_LABELS.items() if value}
FAST = DicomWebSettings(refresh_interval_s=0.3, timeout_s=20)


def _case(seed: int, patient: str, modality: str = "CT") -> tuple[Volume, np.ndarray, list[Dataset]]:
    image, label, affine = generate_case(
        np.random.default_rng([11, seed]), shape=(48, 48, 16), spacing=(4.0, 4.0, 6.0)
    )
    volume = Volume(array=image, geometry=_geometry(image.shape, affine))
    return volume, label, volume_to_series(volume, patient_id=patient, modality=modality)  # type: ignore[arg-type]


def _geometry(shape: tuple[int, ...], affine: np.ndarray) -> Geometry:
    return Geometry(shape=(shape[0], shape[1], shape[2]), affine=affine)


def _wait_for(server: LiveServer, total: int, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    stats: dict[str, Any] = {}
    while time.monotonic() < deadline:
        stats = requests.get(f"{server.url}/datastore/", timeout=10).json()
        if stats["total"] >= total:
            return stats
        time.sleep(0.2)
    raise AssertionError(f"the PACS series did not appear: {stats}")


def test_the_annotate_loop_against_orthanc(
    orthanc: OrthancServer, make_server: ServerFactory, tmp_path: Path
) -> None:
    ct, ct_label, ct_series = _case(1, "PAT-1")
    mr, _, mr_series = _case(2, "PAT-2", modality="MR")
    orthanc.store(ct_series)
    orthanc.store(mr_series)
    server = make_server(studies=orthanc.dicomweb, dicomweb=FAST)
    _wait_for(server, 2)
    series_uid = str(ct_series[0].SeriesInstanceUID)

    # first retrieval converts the series; the second is served from the cache
    started = time.perf_counter()
    first = requests.get(f"{server.url}/datastore/image", params={"image": series_uid}, timeout=60)
    first_s = time.perf_counter() - started
    started = time.perf_counter()
    again = requests.get(f"{server.url}/datastore/image", params={"image": series_uid}, timeout=60)
    cached_s = time.perf_counter() - started
    assert first.status_code == 200 and again.content == first.content
    assert first_s > cached_s, "the second request is served from the cache"
    path = tmp_path / "ct.nii.gz"
    path.write_bytes(first.content)
    got = read_volume(path)
    np.testing.assert_array_equal(got.array, ct.array)
    np.testing.assert_allclose(got.geometry.affine, ct.geometry.affine, atol=1e-3)

    # next sample carries the DICOM fields OHIF shows
    client = MONAILabelClient(server.url, client_id="ohif-user")
    sample = client.next_sample("first", {})
    assert sample["id"] in (series_uid, str(mr_series[0].SeriesInstanceUID))
    for key in ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "Modality", "StudyDate", "StudyTime"):
        assert key in sample, key
    assert sample["RetrieveURL"].startswith(f"{server.url}/proxy/dicom/wado")

    # inference on the series
    weights = write_weights(tmp_path / "w.pt", "segmentation", winner=1)
    with open(weights, "rb") as f:
        requests.put(
            f"{server.url}/model/segmentation", files={"file": ("w.pt", f)}, timeout=60
        ).raise_for_status()
    mask_path, params = client.infer("segmentation", series_uid, {"result_extension": ".nrrd"})
    assert read_volume(Path(mask_path)).array.shape == ct.array.shape and params["model_version"] == 1
    seg_answer = requests.post(
        f"{server.url}/infer/segmentation", params={"image": series_uid, "output": "dicom_seg"}, timeout=60
    )
    assert seg_answer.status_code == 200 and seg_answer.headers["content-type"] == "application/dicom"
    inferred_seg = pydicom.dcmread(io.BytesIO(seg_answer.content))
    assert str(inferred_seg.ReferencedSeriesSequence[0].SeriesInstanceUID) == series_uid

    # a final label goes to the PACS as a SEG before the save succeeds
    label_path = tmp_path / "label.nii.gz"
    write_volume(label_path, ct_label, ct.geometry.affine)
    saved = client.save_label(series_uid, str(label_path), params={"client_id": "ohif-user"})
    assert saved["version"] == 1
    dicomweb = orthanc.client()
    segs = dicomweb.search_for_series(search_filters={"Modality": "SEG"})
    assert len(segs) == 1
    seg_series = Dataset.from_json(segs[0])
    (stored,) = dicomweb.retrieve_series(str(seg_series.StudyInstanceUID), str(seg_series.SeriesInstanceUID))
    source = dicomweb.retrieve_series(str(ct_series[0].StudyInstanceUID), series_uid)
    np.testing.assert_array_equal(seg_to_label(stored, source, NAMES), ct_label)
    assert "ohif" in str(stored.ContentCreatorName).lower()
    stats = requests.get(f"{server.url}/datastore/", timeout=10).json()
    assert stats["completed"] == 1


def test_labels_survive_a_restart_and_segs_in_the_pacs_are_imported(
    orthanc: OrthancServer, tmp_path: Path
) -> None:
    ct, ct_label, ct_series = _case(3, "PAT-3")
    orthanc.store(ct_series)
    # a SEG made elsewhere (another tool) already in the PACS
    orthanc.store([label_to_seg(ct_label, ct_series, NAMES, creator="Radiologist^Bob")])
    data = tmp_path / "data"
    settings = Settings(app=APP_DIR, data_dir=data, port=free_port(), studies=orthanc.dicomweb, dicomweb=FAST)
    server = start_thread_server(settings)
    try:
        _wait_for(server, 1)
        series_uid = str(ct_series[0].SeriesInstanceUID)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if requests.get(f"{server.url}/datastore/", timeout=10).json()["completed"] == 1:
                break
            time.sleep(0.2)
        label = requests.get(
            f"{server.url}/datastore/label", params={"label": series_uid, "tag": "final"}, timeout=30
        )
        assert label.status_code == 200
        path = tmp_path / "imported.nii.gz"
        path.write_bytes(label.content)
        np.testing.assert_array_equal(read_volume(path).array, ct_label)
    finally:
        server.stop()
    server = start_thread_server(settings.model_copy(update={"port": free_port()}))
    try:
        history = requests.get(
            f"{server.url}/datastore/label/versions", params={"image": series_uid}, timeout=10
        )
        assert [v["version"] for v in history.json()] == [1], "imported once, kept across the restart"
        assert requests.get(f"{server.url}/datastore/", timeout=10).json()["completed"] == 1
    finally:
        server.stop()


def test_proxy_keeps_the_query_and_accept_header(orthanc: OrthancServer, make_server: ServerFactory) -> None:
    _, _, one = _case(4, "PAT-A")
    _, _, two = _case(5, "PAT-B")
    orthanc.store(one)
    orthanc.store(two)
    server = make_server(studies=orthanc.dicomweb, dicomweb=FAST)
    answer = requests.get(
        f"{server.url}/proxy/dicom/qido/studies",
        params={"PatientID": "PAT-B"},
        headers={"Accept": "application/dicom+json", "Authorization": "Bearer not-for-the-pacs"},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    studies = answer.json()
    assert [Dataset.from_json(s).PatientID for s in studies] == ["PAT-B"], "the filter reached the PACS"
    everything = requests.get(f"{server.url}/proxy/dicom/studies", timeout=30).json()
    assert len(everything) == 2
    metadata = requests.get(
        f"{server.url}/proxy/dicom/wado/studies/{one[0].StudyInstanceUID}/series/{one[0].SeriesInstanceUID}/metadata",
        timeout=30,
    )
    assert metadata.status_code == 200 and len(metadata.json()) == len(one)
    assert json.loads(metadata.content)[0]


def test_a_corrupt_or_non_image_instance_is_skipped_not_fatal(
    orthanc: OrthancServer, make_server: ServerFactory
) -> None:
    _, _, good = _case(6, "PAT-G")
    _, _, broken = _case(7, "PAT-X")
    del broken[3]  # a missing slice: the series is unevenly spaced
    orthanc.store(good)
    orthanc.store(broken)
    server = make_server(studies=orthanc.dicomweb, dicomweb=FAST)
    _wait_for(server, 1)
    time.sleep(1.0)
    stats = requests.get(f"{server.url}/datastore/", timeout=10).json()
    assert stats["total"] == 1, "the broken series is skipped, the good one listed"
    assert requests.get(f"{server.url}/info/", timeout=10).status_code == 200


def test_a_label_saved_while_the_pacs_is_down_is_kept_and_queued_for_it(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    own, stop = start_orthanc()
    try:
        ct, ct_label, ct_series = _case(8, "PAT-R")
        own.store(ct_series)
        server = make_server(studies=own.dicomweb, dicomweb=FAST)
        _wait_for(server, 1)
        series_uid = str(ct_series[0].SeriesInstanceUID)
        requests.get(
            f"{server.url}/datastore/image", params={"image": series_uid}, timeout=60
        ).raise_for_status()
    finally:
        stop()  # the PACS goes away before the label is saved
    label_path = tmp_path / "label.nii.gz"
    write_volume(label_path, ct_label, ct.geometry.affine)
    with open(label_path, "rb") as f:
        answer = requests.put(
            f"{server.url}/datastore/label",
            params={"image": series_uid},
            files={"label": (label_path.name, f)},
            timeout=60,
        )
    # The annotator's work is kept (the SEG is built from the metadata kept at registration)
    # and its SEG waits in the outbox for the PACS.
    assert answer.status_code == 200, answer.text
    write_back = answer.json()["write_back"]
    assert write_back["state"] == "pending" and "PACS" in write_back["reason"]
    assert requests.get(f"{server.url}/datastore/", timeout=10).json()["completed"] == 1
    history = requests.get(f"{server.url}/datastore/label/versions", params={"image": series_uid}, timeout=10)
    assert history.json()[0]["info"]["seg_sop_instance_uid"] == write_back["seg_sop_instance_uid"]
    status = requests.get(f"{server.url}/datastore/pacs", timeout=10).json()
    assert status["segs"]["out"]["pending"] == 1
    (item,) = [i for i in status["attention"] if i["direction"] == "out"]
    assert item["image"] == series_uid and item["state"] == "pending" and item["next_attempt_at"]
