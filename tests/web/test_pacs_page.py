"""The dashboard's PACS page in headless Chromium, on a real Orthanc (issue 16).

A SEG that cannot be imported and a series that cannot be used are remembered with their reason
and shown to a reviewer on the page: what ``GET /datastore/pacs`` says, figure for figure. The
header names the page only on a server with a PACS, and a server without one is sent no request
that fails (the browser logs every answer of 400 and above as a console error).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import numpy as np
import pytest
import requests

from labelloop.settings import DicomWebSettings
from tests.conftest import ServerFactory
from tests.support import dicom_corpus as corpus
from tests.support.dicom_series import volume_to_series
from tests.support.orthanc import OrthancServer, start_orthanc
from tests.support.processes import until
from tests.support.servers import LiveServer
from tests.web.conftest import DashboardFactory

FAST = DicomWebSettings(refresh_interval_s=0.3, timeout_s=20)
LIVER, SPLEEN = 1, 2  # the radiology app's values (apps/radiology)


@pytest.fixture(scope="module")
def orthanc() -> Iterator[OrthancServer]:
    """Orthanc 1.10 with its DICOMweb plugin, for this module's tests."""
    server, stop = start_orthanc()
    try:
        yield server
    finally:
        stop()


def _pacs(server: LiveServer) -> dict[str, Any]:
    answer = requests.get(f"{server.url}/datastore/pacs", timeout=10)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


@pytest.mark.slow
def test_the_pacs_page_shows_the_unusable_series_and_the_seg_that_was_not_imported(
    orthanc: OrthancServer, make_server: ServerFactory, dashboard: DashboardFactory
) -> None:
    orthanc.clear()
    good = volume_to_series(corpus.small_volume(seed=1), patient_id="GOOD")
    gap = corpus.drop_slices(volume_to_series(corpus.small_volume(seed=2), patient_id="GAP"), [5])
    label = np.zeros(corpus.small_volume().array.shape, dtype=np.uint8)
    label[3:10, 4:12, 2:6] = SPLEEN
    label[12:20, 6:15, 5:10] = LIVER
    overlapping = corpus.overlapping_seg(
        {SPLEEN: label == SPLEEN, LIVER: label > 0}, corpus.in_reading_order(good)
    )
    orthanc.store(good)
    orthanc.store(gap)
    orthanc.store([overlapping])
    good_uid, gap_uid = str(good[0].SeriesInstanceUID), str(gap[0].SeriesInstanceUID)
    seg_uid = str(overlapping.SOPInstanceUID)
    server = make_server(studies=orthanc.dicomweb, dicomweb=FAST)

    # Until a refresh finds nothing new: the figures then stay as they are while the page is read.
    def settled() -> dict[str, Any] | None:
        status = _pacs(server)
        last = status["last_refresh"]
        done = last is not None and last["added"] == 0 and status["segs"]["in"]["skipped"] == 1
        return status if done and status["skipped_series"] else None

    status = until("the refreshes to find the series and the SEG", settled)
    assert [s["series_uid"] for s in status["skipped_series"]] == [gap_uid]
    assert "not evenly spaced" in status["skipped_series"][0]["reason"]
    [seg] = status["attention"]
    assert (seg["seg_sop_instance_uid"], seg["direction"], seg["state"]) == (seg_uid, "in", "skipped")
    assert "overlap" in seg["reason"]

    board = dashboard(server)
    board.open("#/pacs")
    shown = {
        key: board.text(f'[data-testid="{key}"]')
        for key in ("out-stored", "out-pending", "out-failed", "in-imported", "in-skipped")
        + ("refresh-added", "refresh-unchanged", "refresh-segs-imported", "refresh-skipped")
    }
    status = _pacs(server)
    last, segs = status["last_refresh"], status["segs"]
    assert shown == {
        "out-stored": str(segs["out"]["stored"]),
        "out-pending": str(segs["out"]["pending"]),
        "out-failed": str(segs["out"]["failed"]),
        "in-imported": str(segs["in"]["imported"]),
        "in-skipped": str(segs["in"]["skipped"]),
        "refresh-added": str(last["added"]),
        "refresh-unchanged": str(last["unchanged"]),
        "refresh-segs-imported": str(last["segs_imported"]),
        "refresh-skipped": str(len(last["skipped"])),
    }
    assert segs == {"out": {"pending": 0, "stored": 0, "failed": 0}, "in": {"imported": 0, "skipped": 1}}
    assert board.text('[data-testid="pacs-url"]') == status["url"] == orthanc.dicomweb
    assert "ago" in board.text('[data-testid="last-refresh"] [data-field="finished_at"]')

    # The series that cannot be used: its UID, why, and how many instances it had.
    series = board.page.locator('[data-section="series-that-cannot-be-used"] tbody tr')
    assert series.count() == 1
    [skipped] = status["skipped_series"]
    row = board.page.locator("tr", has=board.page.locator(f'[data-series="{gap_uid}"]'))
    reason = row.locator('[data-field="reason"]').inner_text()
    assert "not evenly spaced" in reason and reason == skipped["reason"]
    assert row.locator('[data-field="instances"]').inner_text() == str(skipped["instances"])

    # The SEG that was not imported: read from the PACS, skipped, why; its image links to its page.
    attention = board.page.locator('[data-section="segs-needing-attention"] tbody tr')
    assert attention.count() == len(status["attention"]) == 1
    row = board.page.locator("tr", has=board.page.locator(f'[data-seg="{seg_uid}"]'))
    assert row.locator('[data-field="direction"]').inner_text() == "read"
    assert row.locator('[data-field="state"]').inner_text() == "skipped"
    assert "overlap" in row.locator('[data-field="reason"]').inner_text()
    assert row.locator('[data-field="attempts"]').inner_text() == str(status["attention"][0]["attempts"])
    image = status["attention"][0]["image"]
    if image is not None:
        assert image == good_uid
        assert row.locator("a").get_attribute("href") == f"#/image/{quote(image, safe='')}"
    board.shot("pacs")

    # The header names the page on this server (it is told so by GET /info/, which never fails).
    board.page.wait_for_selector("nav[data-pacs]")
    assert board.page.locator('nav a[data-nav="pacs"]').count() == 1, "no PACS entry in the header"
    assert "current" in (board.page.locator('nav a[data-nav="pacs"]').get_attribute("class") or "")


def test_without_a_pacs_the_header_has_no_pacs_entry_and_no_request_fails(
    sqlite_server: LiveServer, dashboard: DashboardFactory
) -> None:
    server = sqlite_server
    assert requests.get(f"{server.url}/datastore/pacs", timeout=10).status_code == 406
    board = dashboard(server)
    board.open()
    board.page.wait_for_selector("nav[data-pacs]")
    assert board.page.get_attribute("nav", "data-pacs") == "off"
    assert board.page.locator('nav a[data-nav="pacs"]').count() == 0
    board.open("#/jobs")
    assert board.page.locator('nav a[data-nav="pacs"]').count() == 0
    assert board.console == []

    # Opened by its address anyway, the page says that no PACS is connected (the 406 it was
    # answered is logged by the browser: that tab expects it).
    typed = dashboard(server)
    typed.expected.append("406")
    typed.open("#/pacs")
    assert "No PACS is connected" in typed.text('[data-testid="no-pacs"]')
