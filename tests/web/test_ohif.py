"""OHIF's own viewer at ``/ohif/``, in headless Chromium, against a real Orthanc (issue 16, item 3).

An annotator opens ``/ohif/``, is sent to log in, comes back to OHIF's study list with the PACS's
study in it, opens the study in OHIF's viewer (a screenshot of the viewport shows the image's
pixels, not an error) and stores a SEG the way OHIF does (``POST {wadoRoot}/studies`` with the
session cookie, no bearer token): it lands in the PACS and becomes a label version of hers. No
request of the browser goes to the PACS's own address; each goes through the proxy.
"""

from __future__ import annotations

import base64
import io
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pytest
import requests
from PIL import Image
from playwright.sync_api import Page, Request

from labelloop.api.ohif import ohif_dir
from labelloop.auth import ANNOTATOR, REVIEWER
from labelloop.imaging.volume import Geometry, Volume
from labelloop.settings import AuthSettings, DicomWebSettings
from tests.conftest import ServerFactory
from tests.support import dicom_corpus as corpus
from tests.support.dicom_series import stow_body, volume_to_series
from tests.support.orthanc import OrthancServer, start_orthanc
from tests.support.processes import until
from tests.web.conftest import PASSWORD, READY_MS, DashboardFactory, bearer

pytestmark = pytest.mark.slow

SPLEEN = 2  # the radiology app's value (apps/radiology)


@pytest.fixture(scope="module")
def orthanc() -> Iterator[OrthancServer]:
    if not (ohif_dir() / "index.html").is_file():
        pytest.fail(f"OHIF is not installed in {ohif_dir()}: run `make ohif`")
    server, stop = start_orthanc()
    try:
        yield server
    finally:
        stop()


def _volume() -> Volume:
    """``(96, 96, 24)`` CT-like int16: air around a soft-tissue disc, a brighter ball in it."""
    i, j, k = np.meshgrid(np.arange(96), np.arange(96), np.arange(24), indexing="ij")
    array = np.full((96, 96, 24), -900, dtype=np.int16)
    array[(i - 48) ** 2 + (j - 48) ** 2 < 40**2] = 40
    array[(i - 40) ** 2 + (j - 55) ** 2 + ((k - 12) * 3) ** 2 < 15**2] = 300
    affine = np.eye(4)
    affine[:3, :3] = np.diag([-1.0, -1.0, 1.0]) @ np.diag([0.9, 0.9, 2.5])
    return Volume(array=array, geometry=Geometry(shape=array.shape, affine=affine))


def _dismiss(page: Page) -> None:
    """OHIF's tours and its "investigational use" banner, where they show."""
    for name in ("Skip all", "Confirm and hide"):
        button = page.get_by_role("button", name=name)
        if button.count():
            button.first.click()


def _bright_fraction(png: bytes) -> float:
    gray = np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=np.uint8)
    return float((gray > 128).mean())


def test_ohif_lists_and_shows_the_pacs_study_and_stores_a_seg_as_the_users_label(
    orthanc: OrthancServer,
    make_server: ServerFactory,
    users_of: Any,
    dashboard: DashboardFactory,
) -> None:
    orthanc.clear()
    volume = _volume()
    series = volume_to_series(volume, patient_id="OHIF-1", patient_name="Ohif^Test")
    orthanc.store(series)
    study, image = str(series[0].StudyInstanceUID), str(series[0].SeriesInstanceUID)
    slow = DicomWebSettings(refresh_interval_s=3600, timeout_s=20)
    server = make_server(studies=orthanc.dicomweb, dicomweb=slow, auth=AuthSettings(enabled=True))
    users = users_of(server)
    users.add("ann", [ANNOTATOR], PASSWORD)
    users.add("rev", [REVIEWER], PASSWORD)
    rev = bearer(server, "rev")
    until(
        "the series",
        lambda: (
            image
            in requests.get(
                f"{server.url}/datastore/", params={"output": "all"}, headers=rev, timeout=10
            ).json()["objects"]
        ),
    )

    board = dashboard(server)
    page = board.page
    pacs = urlsplit(orthanc.url).netloc
    direct: list[str] = []

    def seen(request: Request) -> None:
        if urlsplit(request.url).netloc == pacs:
            direct.append(request.url)

    page.on("request", seen)

    # Without a session, OHIF's page sends the browser to log in, and back.
    started = time.perf_counter()
    page.goto(f"{server.url}/ohif/")
    page.wait_for_selector("form.login", timeout=READY_MS)
    assert urlsplit(page.url).query == "next=%2Fohif%2F"
    page.fill("input[name=username]", "ann")
    page.fill("input[name=password]", PASSWORD)
    page.click("form.login button[type=submit]")
    page.wait_for_url(f"{server.url}/ohif/", timeout=READY_MS)
    row = page.get_by_text("Ohif, Test")
    row.wait_for(timeout=30_000)
    listed_s = time.perf_counter() - started
    _dismiss(page)
    listing = page.locator("body").inner_text()
    assert "01-Jan-2024" in listing and "CT" in listing, "the study's date and modality are listed"
    board.shot("ohif-study-list")

    # The viewer loads the series through the proxy: the viewport shows the disc, not an error.
    started = time.perf_counter()
    page.goto(f"{server.url}/ohif/viewer?StudyInstanceUIDs={study}")
    viewport = page.locator(".cornerstone-viewport-element").first
    viewport.wait_for(timeout=30_000)

    def disc_shown() -> bool:
        _dismiss(page)
        return _bright_fraction(viewport.screenshot()) > 0.2

    until("the viewport to show the image", disc_shown, timeout=60)
    shown_s = time.perf_counter() - started
    board.shot("ohif-viewer")
    print(f"OHIF: log-in to study list {listed_s:.2f} s; viewer to pixels {shown_s:.2f} s")  # noqa: T201

    # A SEG stored as OHIF stores one, with the session cookie only: the PACS keeps it, and it is
    # ann's label version at once.
    label = np.zeros(volume.array.shape, dtype=np.uint8)
    label[30:50, 45:65, 8:16] = SPLEEN
    seg = corpus.ohif_labelmap_seg(label, corpus.in_reading_order(series))
    body, content_type = stow_body([seg])
    status = page.evaluate(
        """async ([body, type]) => {
            const bytes = Uint8Array.from(atob(body), (c) => c.charCodeAt(0));
            const answer = await fetch("/proxy/dicom/wado/studies", {
              method: "POST",
              body: bytes,
              headers: { "Content-Type": type, Accept: "application/dicom+json" },
            });
            return answer.status;
        }""",
        [base64.b64encode(body).decode(), content_type],
    )
    assert status == 200
    history = requests.get(
        f"{server.url}/datastore/label/versions", params={"image": image}, headers=rev, timeout=10
    )
    (version,) = history.json()
    assert version["author"] == "ann" and version["tag"] == "final"
    assert version["info"]["seg_sop_instance_uid"] == str(seg.SOPInstanceUID)
    stored = requests.get(f"{orthanc.dicomweb}/studies/{study}/series", timeout=10).json()
    assert str(seg.SeriesInstanceUID) in {s["0020000E"]["Value"][0] for s in stored}

    assert direct == [], f"the browser called the PACS itself: {direct[:3]}"
