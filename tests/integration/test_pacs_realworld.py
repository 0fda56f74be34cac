"""Real-world DICOM against a real Orthanc: series that lack optional attributes, oblique, MR,
enhanced multi-frame, compressed and localizer-mixed series, uneven slices, SEGs that other
tools write, and no orphan SEG in the PACS when a save fails or the server dies mid-save.

The corpus is built by tests/support/dicom_corpus.py (pydicom/highdicom, nothing downloaded).
"""

from __future__ import annotations

import io
import json
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
import requests
from pydicom.dataset import Dataset
from pydicom.uid import JPEGLSLossless, RLELossless

from labelloop.auth import ANNOTATOR, REVIEWER
from labelloop.imaging import Volume, read_dicom_series, read_volume, write_volume
from labelloop.settings import AuthSettings, DicomWebSettings, Settings
from tests.conftest import ServerFactory
from tests.support import dicom_corpus as corpus
from tests.support.dicom_series import as_read_back, label_to_seg, stow_body, volume_to_series, zip_series
from tests.support.http import upload
from tests.support.orthanc import OrthancServer, start_orthanc
from tests.support.processes import until
from tests.support.servers import APP_DIR, LiveServer, free_port, start_process_server
from tests.support.weights import write_weights

FAST = DicomWebSettings(refresh_interval_s=0.3, timeout_s=20, writeback_interval_s=0.5)
LIVER, SPLEEN = 1, 2  # the radiology app's values (apps/radiology)
#: dcmqi's way: segment 1 is the spleen (value 2), segment 2 the liver, names in other spellings.
DCMQI = ((SPLEEN, " spleen"), (LIVER, "Liver"))


def _label(shape: tuple[int, ...]) -> np.ndarray:
    label = np.zeros(shape, dtype=np.uint8)
    label[3:10, 4:12, 2:6] = SPLEEN
    label[12:20, 6:15, 5:10] = LIVER
    return label


def _images(server: LiveServer) -> set[str]:
    answer = requests.get(f"{server.url}/datastore/", params={"output": "all"}, timeout=10).json()
    return set(answer["objects"])


def _save(server: LiveServer, image: str, label: np.ndarray, volume: Volume, tmp: Path, **kw: Any) -> Any:
    path = tmp / f"{image[-12:]}.nii.gz"
    write_volume(path, label, as_read_back(volume).geometry.affine)
    with open(path, "rb") as f:
        return requests.put(
            f"{server.url}/datastore/label",
            params={"image": image},
            files={"label": (path.name, f)},
            timeout=60,
            **kw,
        )


def _segs_in(orthanc: OrthancServer) -> list[str]:
    found = orthanc.client().search_for_instances(search_filters={"Modality": "SEG"})
    return sorted(str(Dataset.from_json(item).SOPInstanceUID) for item in found)


def _versions(server: LiveServer, image: str) -> list[dict[str, Any]]:
    answer = requests.get(f"{server.url}/datastore/label/versions", params={"image": image}, timeout=10)
    assert answer.status_code == 200, answer.text
    return list(answer.json())


def _pacs_when(server: LiveServer, ready: Callable[[dict[str, Any]], bool], what: str) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        status = _pacs(server)
        return status if ready(status) else None

    return dict(until(what, check))


def _pacs(server: LiveServer, headers: dict[str, str] | None = None) -> dict[str, Any]:
    answer = requests.get(f"{server.url}/datastore/pacs", headers=headers, timeout=10)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def _loop_case(server: LiveServer, name: str, volume: Volume | None, image_id: str, tmp_path: Path) -> None:
    """One handed-out case: its image as the series' volume, then a final save written back."""
    image = requests.get(f"{server.url}/datastore/image", params={"image": image_id}, timeout=60)
    assert image.status_code == 200, (name, image.text)
    path = tmp_path / f"{name.replace(' ', '_')}.nii.gz"
    path.write_bytes(image.content)
    got = read_volume(path)
    if volume is not None:
        np.testing.assert_array_equal(got.array, as_read_back(volume).array, err_msg=name)
        np.testing.assert_allclose(got.geometry.affine, as_read_back(volume).geometry.affine, atol=1e-3)
    label = _label(got.array.shape)
    write_volume(path, label, got.geometry.affine)
    with open(path, "rb") as f:
        saved = requests.put(
            f"{server.url}/datastore/label",
            params={"image": image_id},
            files={"label": (path.name, f)},
            timeout=60,
        )
    assert saved.status_code == 200, (name, saved.text)
    assert saved.json()["write_back"]["state"] == "stored", (name, saved.json())


@pytest.mark.slow
def test_each_kind_of_series_goes_through_the_loop_or_is_refused_by_name(
    orthanc: OrthancServer, make_server: ServerFactory, tmp_path: Path
) -> None:
    plain = corpus.small_volume(seed=1)
    oblique = corpus.rotated(corpus.small_volume(seed=2), 20.0, "xy")
    mr = corpus.mr_study(patient_id="MR-1", orientations=("sagittal", "coronal"))
    kinds: dict[str, tuple[Volume | None, list[Dataset]]] = {
        "no type 2": (plain, corpus.without_attributes(volume_to_series(plain, patient_id="T2"))),
        "oblique": (oblique, volume_to_series(oblique, patient_id="OBL")),
        "enhanced": (plain, corpus.enhanced(volume_to_series(plain, patient_id="EN"))),
        "rle": (plain, corpus.compressed(volume_to_series(plain, patient_id="RLE"), RLELossless)),
        "jpeg-ls": (plain, corpus.compressed(volume_to_series(plain, patient_id="JLS"), JPEGLSLossless)),
        "localizers": (plain, corpus.with_localizer(volume_to_series(plain, patient_id="LOC"))),
        "mr sagittal": (None, mr["sagittal"]),
        "mr coronal": (None, mr["coronal"]),
    }
    gap = corpus.drop_slices(volume_to_series(plain, patient_id="GAP"), [5])
    no_for = corpus.without_frame_of_reference(volume_to_series(plain, patient_id="NOFOR"))
    for _, series in kinds.values():
        orthanc.store(series)
    orthanc.store(gap)
    orthanc.store(no_for)
    server = make_server(studies=orthanc.dicomweb, dicomweb=FAST)
    uid = {name: str(series[0].SeriesInstanceUID) for name, (_, series) in kinds.items()}
    no_for_uid = str(no_for[0].SeriesInstanceUID)
    wanted = set(uid.values()) | {no_for_uid}
    until("the series to be registered", lambda: wanted <= _images(server))

    # The series with a missing slice is not registered; the PACS page says why, once.
    status = _pacs_when(server, lambda s: bool(s["skipped_series"]), "the skipped series")
    (skip,) = status["skipped_series"]
    assert skip["series_uid"] == str(gap[0].SeriesInstanceUID)
    assert "not evenly spaced" in skip["reason"] and "5.00 mm" in skip["reason"]
    time.sleep(1.0)  # a few more refreshes: the series is not fetched and judged again
    assert _pacs(server)["skipped_series"][0]["last_seen"] == skip["last_seen"]

    # Inference runs on a multi-frame series as on any other.
    weights = write_weights(tmp_path / "w.pt", "segmentation", winner=1)
    with open(weights, "rb") as f:
        requests.put(
            f"{server.url}/model/segmentation", files={"file": ("w.pt", f)}, timeout=60
        ).raise_for_status()
    inferred = requests.post(
        f"{server.url}/infer/segmentation", params={"image": uid["enhanced"], "output": "image"}, timeout=120
    )
    assert inferred.status_code == 200, inferred.text

    # Next sample hands out every usable case (the one without FrameOfReferenceUID too: it can
    # be annotated, only its write-back is refused, below); skipping it lets the loop go on.
    handed: list[str] = []
    while True:
        body = {"skip": True, "skip_reason": "no write-back"} if handed and handed[-1] == no_for_uid else {}
        sample = requests.post(f"{server.url}/activelearning/random", json=body, timeout=30).json()
        if not sample:
            break
        handed.append(sample["id"])
        if sample["id"] != no_for_uid:
            name = next(n for n, u in uid.items() if u == sample["id"])
            _loop_case(server, name, kinds[name][0], sample["id"], tmp_path)
    assert sorted(handed) == sorted(wanted), "each usable series was handed out once"
    assert len(_segs_in(orthanc)) == len(kinds)

    # SEGs another client stores straight into the PACS over these series are imported too.
    for name in ("enhanced", "oblique", "mr sagittal"):
        source = kinds[name][1]
        shape = read_dicom_series(source).array.shape
        other = np.zeros(shape, dtype=np.uint8)
        other[2:6, 3:9, 1:4] = LIVER
        orthanc.store([label_to_seg(other, source, {LIVER: "liver"}, creator="other^tool")])
        until(f"the SEG over {name} to be imported", lambda n=name: len(_versions(server, uid[n])) == 2)
        versions = _versions(server, uid[name])
        assert versions[0]["source"] == "import" and versions[0]["info"]["creator"] == "other^tool"
        got = requests.get(
            f"{server.url}/datastore/label", params={"label": uid[name], "tag": "final"}, timeout=10
        )
        path = tmp_path / "imported.nii.gz"
        path.write_bytes(got.content)
        np.testing.assert_array_equal(read_volume(path).array, other, err_msg=name)

    # A series without FrameOfReferenceUID cannot carry a SEG: a 422 naming both, nothing saved.
    refused_uid = str(no_for[0].SeriesInstanceUID)
    path = tmp_path / "nofor.nii.gz"
    path.write_bytes(
        requests.get(f"{server.url}/datastore/image", params={"image": refused_uid}, timeout=60).content
    )
    write_volume(path, _label(read_volume(path).array.shape), read_volume(path).geometry.affine)
    with open(path, "rb") as f:
        refused = requests.put(
            f"{server.url}/datastore/label",
            params={"image": refused_uid},
            files={"label": (path.name, f)},
            timeout=60,
        )
    assert refused.status_code == 422, refused.text
    assert "FrameOfReferenceUID" in refused.json()["detail"] and refused_uid in refused.json()["detail"]
    history = requests.get(
        f"{server.url}/datastore/label/versions", params={"image": refused_uid}, timeout=10
    )
    assert history.json() == []
    assert len(_segs_in(orthanc)) == len(kinds) + 3, "one SEG per saved case and per imported one, no other"


def test_segs_written_by_other_tools_become_label_versions(
    orthanc: OrthancServer, make_server: ServerFactory
) -> None:
    sources = {
        name: volume_to_series(corpus.small_volume(seed=n), patient_id=f"SEG{n}")
        for n, name in enumerate(
            ("ohif-labelmap", "ohif-bitmap", "dcmqi", "fractional", "overlapping", "unknown names")
        )
    }
    label = _label(corpus.small_volume().array.shape)
    ordered = {name: corpus.in_reading_order(series) for name, series in sources.items()}
    segs = {
        "ohif-labelmap": corpus.ohif_labelmap_seg(label, ordered["ohif-labelmap"]),
        "ohif-bitmap": corpus.ohif_bitmap_seg(label, ordered["ohif-bitmap"]),
        "dcmqi": corpus.dcmqi_seg(label, ordered["dcmqi"], DCMQI),
        "fractional": corpus.fractional_seg(corpus.soft_fractions(label), ordered["fractional"]),
        "overlapping": corpus.overlapping_seg(
            {SPLEEN: label == SPLEEN, LIVER: label > 0}, ordered["overlapping"]
        ),
        "unknown names": corpus.ohif_labelmap_seg(label, ordered["unknown names"], {1: "tumour", 2: "cyst"}),
    }
    for name, series in sources.items():
        orthanc.store(series)
        orthanc.store([segs[name]])
    server = make_server(studies=orthanc.dicomweb, dicomweb=FAST)
    good = ("ohif-labelmap", "ohif-bitmap", "dcmqi", "fractional")

    def versions(name: str) -> list[dict[str, Any]]:
        image = str(sources[name][0].SeriesInstanceUID)
        answer = requests.get(f"{server.url}/datastore/label/versions", params={"image": image}, timeout=10)
        if answer.status_code == 404:
            return []  # the series is not registered yet
        assert answer.status_code == 200, answer.text
        return list(answer.json())

    until("the SEGs to be imported", lambda: all(versions(name) for name in good))
    for name in good:
        image = str(sources[name][0].SeriesInstanceUID)
        answer = requests.get(
            f"{server.url}/datastore/label", params={"label": image, "tag": "final"}, timeout=10
        )
        path = Path(server.data_dir) / f"{name}.nii.gz"
        path.write_bytes(answer.content)
        np.testing.assert_array_equal(read_volume(path).array, label, err_msg=name)
        (version,) = versions(name)
        assert version["info"]["seg_sop_instance_uid"] == str(segs[name].SOPInstanceUID)
        assert {s["matched_by"] for s in version["info"]["segments"]} <= {"name", "number"}
    status = _pacs_when(server, lambda s: s["segs"]["in"]["skipped"] >= 2, "the refused SEGs")
    reasons = {item["seg_sop_instance_uid"]: item["reason"] for item in status["attention"]}
    assert "overlap" in reasons[str(segs["overlapping"].SOPInstanceUID)]
    assert "tumour" in reasons[str(segs["unknown names"].SOPInstanceUID)]
    assert versions("overlapping") == [] and versions("unknown names") == []

    # A second save into the same SEG series (as OHIF does) is a new instance: imported too.
    again = corpus.ohif_labelmap_seg(np.where(label == LIVER, LIVER, 0), ordered["ohif-labelmap"])
    again.SeriesInstanceUID = segs["ohif-labelmap"].SeriesInstanceUID
    orthanc.store([again])
    until("the second SEG instance to be imported", lambda: len(versions("ohif-labelmap")) == 2)
    time.sleep(1.0)
    assert len(versions("ohif-labelmap")) == 2, "each SEG instance is imported once"
    assert _pacs(server)["segs"]["in"] == {"imported": 5, "skipped": 2}


PASSWORD = "a long enough password"


def _bearer(server: LiveServer, name: str) -> dict[str, str]:
    answer = requests.post(
        f"{server.url}/auth/token", data={"username": name, "password": PASSWORD}, timeout=30
    )
    assert answer.status_code == 200, answer.text
    return {"Authorization": f"Bearer {answer.json()['access_token']}"}


LUA_GATE = """
-- SEGs wait while {base}/hold exists, and are dropped while {base}/refuse exists.
function ReceivedInstanceFilter(dicom, origin, info)
  if dicom.Modality == "SEG" then
    while io.open("{base}/hold") ~= nil do os.execute("sleep 0.1") end
    if io.open("{base}/refuse") ~= nil then return false end
  end
  return true
end
"""


def test_no_orphan_seg_when_a_save_fails_or_the_server_dies_before_the_stow(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    orthanc, stop_orthanc = start_orthanc(lua=LUA_GATE)
    volume = corpus.small_volume(seed=7)
    series = volume_to_series(volume, patient_id="CRASH")
    orthanc.store(series)
    image = str(series[0].SeriesInstanceUID)
    settings = Settings(
        app=APP_DIR,
        data_dir=tmp_path_factory.mktemp("data"),
        port=free_port(),
        studies=orthanc.dicomweb,
        dicomweb=FAST,
    )
    env = {
        "LABELLOOP_DICOMWEB__REFRESH_INTERVAL_S": "0.3",
        "LABELLOOP_DICOMWEB__WRITEBACK_INTERVAL_S": "0.5",
        # A save's own push holds its SEG for the PACS timeout plus 5 s; then the outbox takes over.
        "LABELLOOP_DICOMWEB__TIMEOUT_S": "5",
        "LABELLOOP_JOBS__WORKERS": "0",
    }
    server, process = start_process_server(settings, env)
    try:
        until("the series", lambda: image in _images(server))
        label = _label(volume.array.shape)
        first = _save(server, image, label, volume, tmp_path)
        assert first.status_code == 200 and first.json()["write_back"]["state"] == "stored"
        assert len(_segs_in(orthanc)) == 1

        # A conflicting save is refused before anything reaches the PACS.
        stale = _save(server, image, label, volume, tmp_path, headers={"If-Match": '"not-the-etag"'})
        assert stale.status_code == 409
        assert len(_segs_in(orthanc)) == 1, "no SEG for a save that was not committed"

        # The server dies after the commit, while its STOW waits in the PACS.
        (orthanc.base / "hold").write_text("")
        (orthanc.base / "refuse").write_text("")
        outcome: dict[str, Any] = {}

        def save() -> None:
            try:
                outcome["answer"] = _save(server, image, label, volume, tmp_path)
            except requests.RequestException as exc:
                outcome["error"] = exc

        saver = threading.Thread(target=save)
        saver.start()

        def committed() -> bool:
            history = requests.get(
                f"{server.url}/datastore/label/versions", params={"image": image}, timeout=10
            )
            return len(history.json()) == 2

        until("the second version to be committed", committed)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=20)
        saver.join(timeout=30)
        assert "error" in outcome, "the client saw the connection drop"
        (orthanc.base / "hold").unlink()  # the dead server's STOW goes on and is dropped
        time.sleep(0.5)
        assert len(_segs_in(orthanc)) == 1
        (orthanc.base / "refuse").unlink()

        server.stop()
        server, process = start_process_server(settings, env)  # same data dir and database
        history = requests.get(
            f"{server.url}/datastore/label/versions", params={"image": image}, timeout=10
        ).json()
        assert [v["version"] for v in history][:2] == [2, 1] or sorted(v["version"] for v in history) == [
            1,
            2,
        ]
        second_uid = next(v["info"]["seg_sop_instance_uid"] for v in history if v["version"] == 2)
        until(
            "the outbox to send the committed label's SEG",
            lambda: second_uid in _segs_in(orthanc),
            timeout=60,
        )
        assert len(_segs_in(orthanc)) == 2
        status = _pacs_when(server, lambda s: s["segs"]["out"]["stored"] == 2, "the write-back")
        assert status["segs"]["out"] == {"pending": 0, "stored": 2, "failed": 0}
    finally:
        server.stop()
        stop_orthanc()


def test_a_seg_stored_through_the_proxy_is_a_label_version_of_its_author_at_once(
    orthanc: OrthancServer, make_server: ServerFactory, users_of: Callable[[LiveServer], Any]
) -> None:
    volume = corpus.small_volume(seed=9)
    series = volume_to_series(volume, patient_id="OHIF")
    orthanc.store(series)
    image = str(series[0].SeriesInstanceUID)
    # One refresh at start only: what follows reaches the catalogue through the proxy, not a refresh.
    slow = DicomWebSettings(refresh_interval_s=3600, timeout_s=20)
    server = make_server(studies=orthanc.dicomweb, dicomweb=slow, auth=AuthSettings(enabled=True))
    store = users_of(server)
    store.add("ann", [ANNOTATOR], PASSWORD)
    store.add("rev", [REVIEWER], PASSWORD)
    ann, rev = _bearer(server, "ann"), _bearer(server, "rev")
    until(
        "the series",
        lambda: (
            image
            in requests.get(
                f"{server.url}/datastore/", params={"output": "all"}, headers=rev, timeout=10
            ).json()["objects"]
        ),
    )
    leased = requests.post(f"{server.url}/activelearning/random", json={}, headers=ann, timeout=30)
    assert leased.status_code == 200 and leased.json()["id"] == image

    label = _label(volume.array.shape)
    seg = corpus.ohif_labelmap_seg(label, corpus.in_reading_order(series))
    body, content_type = stow_body([seg])
    stored = requests.post(
        f"{server.url}/proxy/dicom/wado/studies",  # OHIF's POST {wadoRoot}/studies
        data=body,
        headers={**ann, "Content-Type": content_type, "Accept": "application/dicom+json"},
        timeout=60,
    )
    assert stored.status_code == 200, stored.text
    assert str(seg.SOPInstanceUID) in _segs_in(orthanc), "the SEG reached the PACS"

    history = requests.get(
        f"{server.url}/datastore/label/versions", params={"image": image}, headers=rev, timeout=10
    )
    (version,) = history.json()
    assert version["author"] == "ann" and version["source"] == "upload" and version["tag"] == "final"
    assert version["info"]["seg_sop_instance_uid"] == str(seg.SOPInstanceUID)
    got = requests.get(
        f"{server.url}/datastore/label", params={"label": image, "tag": "final"}, headers=rev, timeout=10
    )
    path = Path(server.data_dir) / "stowed.nii.gz"
    path.write_bytes(got.content)
    np.testing.assert_array_equal(read_volume(path).array, label)
    leases = requests.get(f"{server.url}/activelearning/leases", headers=rev, timeout=10).json()
    assert image not in json.dumps(leases), "ann's save through OHIF ended her lease"
    status = _pacs(server, rev)
    assert status["segs"]["in"] == {"imported": 1, "skipped": 0}
    assert status["segs"]["out"] == {"pending": 0, "stored": 0, "failed": 0}, "not written back a second time"
    assert _segs_in(orthanc) == [str(seg.SOPInstanceUID)]

    # WADO-URI (OHIF's wadoUriRoot) reaches the PACS's own WADO-URI endpoint.
    query = (
        f"requestType=WADO&studyUID={series[0].StudyInstanceUID}&seriesUID={image}"
        f"&objectUID={series[0].SOPInstanceUID}&contentType=application/dicom"
    )
    uri = requests.get(f"{server.url}/proxy/dicom/wado?{query}", headers=ann, timeout=30)
    assert uri.status_code == 200, uri.text
    assert str(pydicom.dcmread(io.BytesIO(uri.content)).SOPInstanceUID) == str(series[0].SOPInstanceUID)


def test_a_jpeg_lossless_series_uploads_and_reads_exactly(
    orthanc: OrthancServer, make_server: ServerFactory, tmp_path: Path
) -> None:
    """JPEG Lossless SV1 (1.2.840.10008.1.2.4.70), the commonest lossless CT syntax: nothing here
    encodes it, so Orthanc transcodes the series (DCMTK), and labelloop decodes it itself
    (pylibjpeg-libjpeg) from an uploaded zip."""
    volume = corpus.small_volume(seed=11)
    series = volume_to_series(volume, patient_id="JPEG-LL")
    orthanc.store(series)
    transcoded = []
    for orthanc_id in orthanc.rest("GET", "/instances").json():
        answer = orthanc.rest(
            "POST",
            f"/instances/{orthanc_id}/modify",
            json={
                "Transcode": "1.2.840.10008.1.2.4.70",
                "Force": True,
                "Keep": ["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"],
            },
        )
        assert answer.status_code == 200, answer.text
        transcoded.append(pydicom.dcmread(io.BytesIO(answer.content)))
    assert {str(ds.file_meta.TransferSyntaxUID) for ds in transcoded} == {"1.2.840.10008.1.2.4.70"}
    server = make_server()
    upload(server, "jpegll", zip_series(tmp_path / "jpegll.zip", transcoded))
    got = requests.get(f"{server.url}/datastore/image", params={"image": "jpegll"}, timeout=60)
    path = tmp_path / "jpegll.nii.gz"
    path.write_bytes(got.content)
    np.testing.assert_array_equal(read_volume(path).array, as_read_back(volume).array)


def test_a_seg_the_pacs_drops_is_not_saved_as_a_label(make_server: ServerFactory) -> None:
    """Orthanc answers a STOW-RS that its filter drops with 200 (and no failed SOP): the proxy asks
    the PACS whether it kept the SEG before saving it as a label."""
    orthanc, stop = start_orthanc(lua=LUA_GATE)
    try:
        volume = corpus.small_volume(seed=13)
        series = volume_to_series(volume, patient_id="DROP")
        orthanc.store(series)
        image = str(series[0].SeriesInstanceUID)
        server = make_server(studies=orthanc.dicomweb, dicomweb=FAST)
        until("the series", lambda: image in _images(server))
        (orthanc.base / "refuse").write_text("")
        seg = corpus.ohif_labelmap_seg(_label(volume.array.shape), corpus.in_reading_order(series))
        body, content_type = stow_body([seg])
        stored = requests.post(
            f"{server.url}/proxy/dicom/wado/studies",
            data=body,
            headers={"Content-Type": content_type},
            timeout=60,
        )
        assert stored.status_code == 200, stored.text
        assert _segs_in(orthanc) == []
        assert _versions(server, image) == [], "no label for a SEG the PACS does not have"
    finally:
        stop()
