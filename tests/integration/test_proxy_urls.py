"""The PACS's own address never reaches a browser: URLs in DICOMweb answers and in labelloop's
image infos point at the DICOMweb proxy (``/proxy/dicom/wado``), checked against a real Orthanc.

Orthanc's DICOMweb plugin builds absolute URLs from the address it was called on: ``RetrieveURL``
(0008,1190) in QIDO-RS and STOW-RS answers, ``BulkDataURI`` in WADO-RS metadata.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, cast

import pytest
import requests
from pydicom.dataset import Dataset
from starlette.requests import Request

from labelloop.api.deps import Services
from labelloop.api.proxy import _rewritten, proxied, proxied_info, public_wado_root
from labelloop.settings import DicomWebSettings
from tests.conftest import ServerFactory
from tests.support.dicom_corpus import small_volume
from tests.support.dicom_series import stow_body, volume_to_series
from tests.support.orthanc import OrthancServer
from tests.support.processes import until
from tests.support.servers import LiveServer

FAST = DicomWebSettings(refresh_interval_s=0.3, timeout_s=20)
RETRIEVE_URL = "00081190"
REFERENCED_SOP_SEQUENCE = "00081199"
SERIES_INSTANCE_UID = "0020000E"


@dataclass(frozen=True)
class Pacs:
    """An Orthanc holding one series, and a labelloop server on it that has registered the series."""

    orthanc: OrthancServer
    server: LiveServer
    series: list[Dataset]

    @property
    def wado(self) -> str:
        """The proxy's WADO-RS root, as the tests reach the server."""
        return f"{self.server.url}/proxy/dicom/wado"

    @property
    def study_uid(self) -> str:
        return str(self.series[0].StudyInstanceUID)

    @property
    def series_uid(self) -> str:
        return str(self.series[0].SeriesInstanceUID)

    @property
    def series_path(self) -> str:
        return f"studies/{self.study_uid}/series/{self.series_uid}"


def _series(seed: int, patient: str) -> list[Dataset]:
    return volume_to_series(small_volume((16, 16, 4), (2.0, 2.0, 3.0), seed=seed), patient_id=patient)


def _registered(server: LiveServer, image: str) -> bool:
    model = requests.get(f"{server.url}/datastore/", params={"output": "all"}, timeout=10).json()
    return image in model["objects"]


@pytest.fixture
def pacs(orthanc: OrthancServer, make_server: ServerFactory) -> Pacs:
    series = _series(21, "PAT-URL")
    orthanc.store(series)
    server = make_server(studies=orthanc.dicomweb, dicomweb=FAST)
    image = str(series[0].SeriesInstanceUID)
    until("the series is registered", lambda: _registered(server, image), timeout=60)
    return Pacs(orthanc, server, series)


def _walk(items: Any) -> Iterator[dict[str, Any]]:
    """Every DICOM JSON attribute (tag -> {vr, Value | BulkDataURI}) at any depth of sequences."""
    for item in items if isinstance(items, list) else [items]:
        for attribute in item.values():
            yield attribute
            if attribute.get("vr") == "SQ":
                yield from _walk(attribute.get("Value", []))


def _retrieve_urls(items: Any) -> list[str]:
    """Every RetrieveURL (0008,1190) value, ReferencedSOPSequence items' included."""
    urls: list[str] = []
    for item in items if isinstance(items, list) else [items]:
        urls += item.get(RETRIEVE_URL, {}).get("Value", [])
        for referenced in item.get(REFERENCED_SOP_SEQUENCE, {}).get("Value", []):
            urls += referenced.get(RETRIEVE_URL, {}).get("Value", [])
    return urls


def _bulk_data_uris(items: Any) -> list[str]:
    return [attribute["BulkDataURI"] for attribute in _walk(items) if "BulkDataURI" in attribute]


def _get(url: str, **kwargs: Any) -> requests.Response:
    answer = requests.get(url, timeout=30, **kwargs)
    assert answer.status_code == 200, f"{url}: {answer.status_code} {answer.text[:300]}"
    return answer


# ---------------------------------------------------------------- relayed DICOMweb answers


def test_qido_answers_carry_the_proxy_address_not_the_pacs_one(pacs: Pacs) -> None:
    qido = f"{pacs.server.url}/proxy/dicom/qido"
    instance = str(pacs.series[0].SOPInstanceUID)
    expected = {
        "studies": f"{pacs.wado}/studies/{pacs.study_uid}",
        f"studies/{pacs.study_uid}/series": f"{pacs.wado}/{pacs.series_path}",
        f"{pacs.series_path}/instances": f"{pacs.wado}/{pacs.series_path}/instances/{instance}",
    }
    for path, url in expected.items():
        answer = _get(f"{qido}/{path}", headers={"Accept": "application/dicom+json"})
        assert pacs.orthanc.dicomweb not in answer.text, path
        urls = _retrieve_urls(answer.json())
        assert urls and all(u.startswith(pacs.wado) for u in urls), (path, urls)
        assert url in urls, (path, urls)


def test_wado_metadata_bulk_data_uris_point_at_the_proxy_and_answer(pacs: Pacs) -> None:
    series = _get(f"{pacs.wado}/{pacs.series_path}/metadata")
    assert pacs.orthanc.dicomweb not in series.text
    items = series.json()
    assert len(items) == len(pacs.series)
    uris = _bulk_data_uris(items)
    assert len(uris) >= len(pacs.series), "Orthanc 1.10 gives every instance's pixel data a BulkDataURI"
    assert all(uri.startswith(f"{pacs.wado}/{pacs.series_path}/instances/") for uri in uris), uris

    instance = str(pacs.series[0].SOPInstanceUID)
    one = _get(f"{pacs.wado}/{pacs.series_path}/instances/{instance}/metadata")
    assert pacs.orthanc.dicomweb not in one.text
    (uri,) = _bulk_data_uris(one.json())
    assert uri.startswith(f"{pacs.wado}/{pacs.series_path}/instances/{instance}/")

    bulk = _get(uri, headers={"Accept": 'multipart/related; type="application/octet-stream"'})
    assert bulk.content and bulk.headers["content-type"].startswith("multipart/related")


def _normalised(answer: requests.Response) -> bytes:
    """The body with its multipart boundary (Orthanc draws a new one per answer) made constant."""
    boundary = answer.headers["content-type"].split("boundary=")[1].split(";")[0].strip('"')
    return answer.content.replace(boundary.encode(), b"BOUNDARY")


def test_a_multipart_frame_answer_is_relayed_byte_for_byte(pacs: Pacs) -> None:
    """Only JSON answers are rewritten: a frame's multipart answer (whose parts' Content-Location
    names the PACS) is relayed as the PACS sent it."""
    instance = str(pacs.series[1].SOPInstanceUID)
    path = f"{pacs.series_path}/instances/{instance}/frames/1"
    accept = {"Accept": 'multipart/related; type="application/octet-stream"'}
    direct = _get(f"{pacs.orthanc.dicomweb}/{path}", headers=accept)
    relayed = _get(f"{pacs.wado}/{path}", headers=accept)
    assert relayed.headers["content-type"].split(";")[0] == "multipart/related"
    assert _normalised(relayed) == _normalised(direct)


def test_a_stow_answer_carries_the_proxy_address(pacs: Pacs) -> None:
    extra = _series(22, "PAT-STOW")
    body, content_type = stow_body(extra[:1])
    stored = requests.post(
        f"{pacs.wado}/studies",
        data=body,
        headers={"Content-Type": content_type, "Accept": "application/dicom+json"},
        timeout=60,
    )
    assert stored.status_code == 200, stored.text
    assert pacs.orthanc.dicomweb not in stored.text
    urls = _retrieve_urls(stored.json())
    assert urls and all(u.startswith(pacs.wado) for u in urls), urls


# ---------------------------------------------------------------- labelloop's own answers


def test_next_sample_retrieve_url_goes_through_the_proxy(pacs: Pacs) -> None:
    answer = requests.post(f"{pacs.server.url}/activelearning/first", json={}, timeout=30)
    assert answer.status_code == 200, answer.text
    sample = answer.json()
    assert sample["id"] == pacs.series_uid
    assert sample["RetrieveURL"] == f"{pacs.wado}/{pacs.series_path}"

    metadata = _get(f"{sample['RetrieveURL']}/metadata")
    assert metadata.headers["content-type"].startswith("application/dicom+json")
    items = metadata.json()
    assert len(items) == len(pacs.series)
    series_uids = {uid for item in items for uid in item[SERIES_INSTANCE_UID]["Value"]}
    assert series_uids == {pacs.series_uid}


def test_image_infos_carry_the_proxy_address_as_each_request_reached_the_server(pacs: Pacs) -> None:
    info = _get(f"{pacs.server.url}/datastore/image/info", params={"image": pacs.series_uid}).json()
    assert info["RetrieveURL"] == f"{pacs.wado}/{pacs.series_path}"
    model = _get(f"{pacs.server.url}/datastore/", params={"output": "all"}).json()
    image_info = model["objects"][pacs.series_uid]["image"]["info"]
    assert image_info["RetrieveURL"] == f"{pacs.wado}/{pacs.series_path}"
    assert pacs.orthanc.dicomweb not in str(model)

    # Rewritten when answering, not when stored: another address the server is reached by, another root.
    other = _get(
        f"{pacs.server.url}/datastore/image/info",
        params={"image": pacs.series_uid},
        headers={"Host": "labelloop.example:8443"},
    ).json()
    assert other["RetrieveURL"] == f"http://labelloop.example:8443/proxy/dicom/wado/{pacs.series_path}"


# ---------------------------------------------------------------- the helpers


def _request(root_path: str = "/labelloop") -> Request:
    scope = {
        "type": "http",
        "scheme": "https",
        "server": ("ll.example", 443),
        "root_path": root_path,
        "path": f"{root_path}/activelearning/first",
        "query_string": b"",
        "headers": [(b"host", b"ll.example")],
    }
    return Request(scope)


def _services(studies: str | None = "http://10.0.0.5:8042/dicom-web/") -> Services:
    settings = SimpleNamespace(studies=studies)
    return cast(Services, SimpleNamespace(settings=settings, pacs=object() if studies else None))


def test_the_helpers_rewrite_only_urls_under_the_pacs_root() -> None:
    services, request = _services(), _request()
    public = "https://ll.example/labelloop/proxy/dicom/wado"
    assert public_wado_root(request) == public
    assert proxied(services, request, "http://10.0.0.5:8042/dicom-web/studies/1") == f"{public}/studies/1"
    assert proxied(services, request, "http://10.0.0.5:8042/dicom-web") == public
    for other in ("http://10.0.0.5:8042/dicom-web2/studies/1", "http://elsewhere/dicom-web/studies/1"):
        assert proxied(services, request, other) == other
    info = {"RetrieveURL": "http://10.0.0.5:8042/dicom-web/studies/1", "Modality": "CT"}
    assert proxied_info(services, request, info) == {"RetrieveURL": f"{public}/studies/1", "Modality": "CT"}
    assert info["RetrieveURL"].startswith("http://10.0.0.5"), "the given info is left as it was"
    folder = _services(None)
    assert proxied(folder, request, "http://10.0.0.5:8042/dicom-web/studies/1").startswith("http://10.0.0.5")


def test_json_bodies_are_rewritten_in_plain_and_escaped_form() -> None:
    services, request = _services(), _request()
    body = (
        b'[{"00081190": {"vr": "UR", "Value": ["http://10.0.0.5:8042/dicom-web/studies/1"]}},'
        b' {"x": "http:\\/\\/10.0.0.5:8042\\/dicom-web\\/studies\\/2"},'
        b' {"y": "http://10.0.0.5:8042/dicom-web2/studies/3"}]'
    )
    assert _rewritten(services, request, body) == (
        b'[{"00081190": {"vr": "UR", "Value": ["https://ll.example/labelloop/proxy/dicom/wado/studies/1"]}},'
        b' {"x": "https:\\/\\/ll.example\\/labelloop\\/proxy\\/dicom\\/wado\\/studies\\/2"},'
        b' {"y": "http://10.0.0.5:8042/dicom-web2/studies/3"}]'
    )
