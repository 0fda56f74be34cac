"""The annotator at ``/annotate/`` in headless Chromium, NiiVue on WebGL2 (issue 16, item 2).

Two annotators log in. grey takes the next case (the lease says grey holds it), clicks into the
phantom's organ and runs the click-guided random walker, paints a region of another label, erases
only that label where it crosses the organ, undoes a stroke and saves. The saved version is read
back through the API: it holds exactly the random walker's answer to the same click and the
painted voxels, on the image's grid and orientation (a voxel clicked on screen is the same (i, j,
k) in the image, whose value the page showed, and in the saved label). blue opens the same
image, grey saves again meanwhile, and blue's save gets the conflict dialog naming grey, reloads
grey's label and saves on top of it. The page loads nothing from elsewhere and logs no error but
the browser's own line for the 409 it handles. Screenshots go to ``tests/web/screenshots``.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import requests
from playwright.sync_api import Page

from labelloop.auth import UserStore
from labelloop.settings import AuthSettings
from tests.support.http import upload
from tests.support.servers import LiveServer
from tests.support.volumes import DEFAULT_AFFINE, make_phantom
from tests.web.conftest import PASSWORD, READY_MS, Dashboard, DashboardFactory, bearer

Users = Callable[[LiveServer], UserStore]
#: Axes of the phantom: I and J flipped against RAS (DEFAULT_AFFINE), so NiiVue reorders it.
SHAPE = (64, 56, 24)
LIVER, SPLEEN = 1, 2
#: How long the random walker may take on two busy cores.
INFER_MS = 60_000


@dataclass
class Annotator:
    """A tab on ``/annotate/``: what the page shows, read from its ``data-*`` attributes."""

    board: Dashboard

    @property
    def page(self) -> Page:
        return self.board.page

    def login(self, name: str, hash_: str = "") -> None:
        self.page.goto(f"{self.board.url}/annotate/{hash_}")
        self.page.wait_for_selector("form.login", timeout=READY_MS)
        self.page.fill("input[name=username]", name)
        self.page.fill("input[name=password]", PASSWORD)
        self.page.click("form.login button[type=submit]")
        self.page.wait_for_selector("main[data-ready] #gl", timeout=READY_MS)

    def voxels(self, label: str) -> int:
        return int(self.page.get_attribute(f'tr[data-label="{label}"]', "data-voxels") or -1)

    def wait_voxels(self, label: str, test: str) -> int:
        """Wait until ``label``'s voxel count ``n`` passes ``test`` (a JS expression of ``n``)."""
        self.page.wait_for_function(
            f"""() => {{ const n = Number(document.querySelector('tr[data-label="{label}"]')
                ?.dataset.voxels); return {test}; }}""",
            timeout=READY_MS,
        )
        return self.voxels(label)

    def spot(self) -> tuple[tuple[int, int, int], float]:
        """The crosshair's voxel (i, j, k) of the image file and the image's value there."""
        box = self.page.locator('[data-testid="spot"]')
        i, j, k = (int(v) for v in (box.get_attribute("data-voxel") or "").split(","))
        return (i, j, k), float(box.get_attribute("data-value") or "nan")

    def canvas(self) -> tuple[float, float, float]:
        """The canvas's centre on screen and its shorter side, in CSS pixels."""
        box = self.page.locator("#gl").bounding_box()
        assert box is not None
        return box["x"] + box["width"] / 2, box["y"] + box["height"] / 2, min(box["width"], box["height"])

    def stroke(self, start: tuple[float, float], end: tuple[float, float]) -> None:
        self.page.mouse.move(*start)
        self.page.mouse.down()
        self.page.mouse.move(*end, steps=12)
        self.page.mouse.up()

    def tool(self, name: str, label: str | None = None, pen: int | None = None) -> None:
        if label is not None:
            self.page.check(f'input[name=label][data-label="{label}"]')
        if pen is not None:
            self.page.eval_on_selector(
                "input[name=pen_size]",
                "(el, v) => { el.value = v; el.dispatchEvent(new Event('input')); }",
                str(pen),
            )
        self.page.click(f'button[data-tool="{name}"]')

    def save(self) -> None:
        self.page.click('button[data-action="save"]')


def _label(server: LiveServer, image: str, headers: dict[str, str], version: int | None = None) -> np.ndarray:
    query = {"label": image, "tag": "final", **({"version": version} if version else {})}
    answer = requests.get(f"{server.url}/datastore/label", params=query, headers=headers, timeout=30)
    assert answer.status_code == 200, answer.text
    label = nib.Nifti1Image.from_bytes(_gunzip(answer.content))
    assert label.shape == SHAPE
    assert np.allclose(label.affine, DEFAULT_AFFINE, atol=1e-4), label.affine
    return np.asarray(label.dataobj)


def _gunzip(content: bytes) -> bytes:
    return gzip.decompress(content) if content[:2] == b"\x1f\x8b" else content


def _walker(
    server: LiveServer, image: str, click: tuple[int, int, int], headers: dict[str, str]
) -> np.ndarray:
    """The random walker's answer to one foreground click, through the API."""
    answer = requests.post(
        f"{server.url}/infer/random_walker",
        params={"image": image, "output": "image"},
        data={"params": json.dumps({"foreground": [list(click)], "result_extension": ".nii.gz"})},
        headers=headers,
        timeout=120,
    )
    assert answer.status_code == 200, answer.text
    return np.asarray(nib.Nifti1Image.from_bytes(_gunzip(answer.content)).dataobj)


def test_take_a_case_run_the_click_model_paint_save_and_meet_a_conflict(
    make_server: Callable[..., LiveServer],
    dashboard: DashboardFactory,
    users_of: Users,
    tmp_path: Path,
) -> None:
    server = make_server(auth=AuthSettings(enabled=True))
    store = users_of(server)
    for name in ("grey", "blue"):
        store.add(name, ["monailabel-annotator"], PASSWORD)
    store.add("boss", ["monailabel-admin"], PASSWORD)
    admin = bearer(server, "boss")
    image = make_phantom(tmp_path / "phantom.nii.gz", SHAPE)
    for case in ("case00", "case01"):
        upload(server, case, tmp_path / "phantom.nii.gz", headers=admin)

    grey = Annotator(dashboard(server))
    grey.login("grey")
    grey.board.shot("annotate-start")

    # The next case by a strategy: leased to grey, and the page says so.
    grey.page.select_option("select[name=strategy]", "first")
    grey.page.click('button[data-action="next"]')
    grey.page.wait_for_selector('[data-testid="load-ms"]', timeout=READY_MS)
    assert grey.board.text('[data-testid="image"]') == "case00"
    assert "held by grey" in grey.board.text('[data-testid="lease"]')
    leases = requests.get(f"{server.url}/activelearning/leases", headers=admin, timeout=30).json()
    assert [(lease["image"], lease["holder"]) for lease in leases] == [("case00", "grey")]
    print(f"annotator: next case to image shown, {SHAPE}: {grey.board.text('[data-testid=load-ms]')} ms")  # noqa: T201

    # One click in the organ, on the axial slice, and the click-guided model.
    grey.page.select_option("select[name=view]", "axial")
    grey.page.select_option("select[name=model]", "random_walker")
    cx, cy, side = grey.canvas()
    grey.tool("clicks", label="liver")
    grey.page.mouse.click(cx, cy)
    grey.page.wait_for_selector('[data-click="foreground"]', timeout=READY_MS)
    click, value = grey.spot()
    assert grey.board.text('[data-click="foreground"]') == f"foreground ({', '.join(map(str, click))})"
    assert image[click] == value  # the page's voxel is the file's (i, j, k): NiiVue shows its value
    grey.page.click('button[data-action="run"]')
    grey.page.wait_for_selector('[data-testid="model-status"]:has-text("answered")', timeout=INFER_MS)
    liver = grey.wait_voxels("liver", "n > 0")
    walked = _walker(server, "case00", click, admin)
    assert liver == int((walked == 1).sum())
    voxel_ml = 0.8 * 0.8 * 2.5 / 1000
    shown_ml = float(grey.page.locator('tr[data-label="liver"] [data-field="ml"]').inner_text())
    assert abs(shown_ml - liver * voxel_ml) <= 0.051

    # Paint spleen from outside into the organ, then erase only spleen along a line that goes on
    # into the liver: the liver keeps every voxel.
    grey.tool("paint", label="spleen", pen=3)
    grey.stroke((cx - 0.42 * side, cy), (cx - 0.12 * side, cy))
    spleen = grey.wait_voxels("spleen", "n > 0")
    liver = grey.voxels("liver")
    grey.tool("erase", label="spleen")
    grey.stroke((cx - 0.30 * side, cy), (cx - 0.02 * side, cy))
    after = grey.wait_voxels("spleen", f"n < {spleen}")
    assert 0 < after and grey.voxels("liver") == liver
    # A stroke and its undo.
    grey.tool("paint", label="spleen", pen=3)
    grey.stroke((cx + 0.40 * side, cy + 0.30 * side), (cx + 0.45 * side, cy + 0.30 * side))
    grey.wait_voxels("spleen", f"n > {after}")
    grey.page.click('button[data-action="undo"]')
    assert grey.wait_voxels("spleen", f"n === {after}") == after
    # One voxel painted with a click: where it lands in the saved file.
    grey.tool("paint", label="spleen", pen=1)
    grey.page.mouse.click(cx + 0.40 * side, cy - 0.40 * side)
    spleen = grey.wait_voxels("spleen", f"n === {after + 1}")
    dot, dot_value = grey.spot()
    assert image[dot] == dot_value
    grey.board.shot("annotate-painted")

    grey.save()
    grey.page.wait_for_selector('[data-testid="save-message"] [data-version="1"]', timeout=READY_MS)
    saved = _label(server, "case00", admin)
    painted = saved == SPLEEN
    assert int(painted.sum()) == spleen and saved[dot] == SPLEEN and saved[click] == LIVER
    assert set(np.unique(np.argwhere(painted)[:, 2])) == {click[2]}  # painted on the axial slice shown
    # The liver is the walker's answer less what the spleen strokes took, all on that slice.
    kept = saved == LIVER
    assert int(kept.sum()) == liver and not (kept & (walked != 1)).any()
    assert set(np.unique(np.argwhere((walked == 1) & ~kept)[:, 2])) == {click[2]}
    assert set(np.unique(saved)) == {0, LIVER, SPLEEN}
    [version] = requests.get(
        f"{server.url}/datastore/label/versions", params={"image": "case00"}, headers=admin, timeout=30
    ).json()
    assert version["author"] == "grey" and version["model"] == "random_walker"
    assert requests.get(f"{server.url}/activelearning/leases", headers=admin, timeout=30).json() == []

    # blue opens the same image and sees grey's label; grey saves again meanwhile.
    blue = Annotator(dashboard(server))
    blue.board.expected.append("status of 409 (Conflict)")
    blue.login("blue", "#/image/case00")
    assert "version 1 by grey" in blue.board.text('[data-testid="label-state"]')
    assert blue.voxels("spleen") == spleen and blue.voxels("liver") == int((saved == LIVER).sum())
    grey.tool("erase", label="liver", pen=3)
    grey.stroke((cx - 0.1 * side, cy + 0.05 * side), (cx + 0.1 * side, cy + 0.05 * side))
    grey_liver = grey.wait_voxels("liver", f"n < {int((saved == LIVER).sum())}")
    grey.save()
    grey.page.wait_for_selector('[data-testid="save-message"] [data-version="2"]', timeout=READY_MS)

    bcx, bcy, bside = blue.canvas()
    blue.page.select_option("select[name=view]", "axial")
    blue.tool("paint", label="lesion", pen=3)
    blue.stroke((bcx - 0.05 * bside, bcy - 0.05 * bside), (bcx + 0.05 * bside, bcy - 0.05 * bside))
    blue.wait_voxels("lesion", "n > 0")
    blue.save()
    blue.page.wait_for_selector('dialog[data-testid="conflict"][open]', timeout=READY_MS)
    who = blue.board.text('[data-testid="conflict-who"]')
    assert "Version 2 was saved by grey" in who, who
    assert "version 2" in blue.board.text('[data-testid="conflict-detail"]')
    blue.board.shot("annotate-conflict")
    assert [
        v["version"]
        for v in requests.get(
            f"{server.url}/datastore/label/versions", params={"image": "case00"}, headers=admin, timeout=30
        ).json()
    ] == [2, 1]
    blue.page.click('dialog button[data-action="reload"]')
    blue.wait_voxels("lesion", "n === 0")
    assert blue.voxels("liver") == grey_liver
    assert "version 2 by grey" in blue.board.text('[data-testid="label-state"]')
    # Now on grey's version: blue's save goes on top of it.
    blue.tool("paint", label="lesion", pen=3)
    blue.stroke((bcx - 0.05 * bside, bcy - 0.05 * bside), (bcx + 0.05 * bside, bcy - 0.05 * bside))
    lesion = blue.wait_voxels("lesion", "n > 0")
    blue.save()
    blue.page.wait_for_selector('[data-testid="save-message"] [data-version="3"]', timeout=READY_MS)
    third = _label(server, "case00", admin)
    assert int((third == 5).sum()) == lesion
    assert np.array_equal(third[third != 5], _label(server, "case00", admin, version=2)[third != 5])
    assert blue.board.console == [
        "Failed to load resource: the server responded with a status of 409 (Conflict)"
    ]


def test_with_auth_off_annotators_go_by_their_name_and_skip_a_case(
    sqlite_server: LiveServer, dashboard: DashboardFactory, tmp_path: Path
) -> None:
    server = sqlite_server
    make_phantom(tmp_path / "phantom.nii.gz", SHAPE)
    for case in ("case00", "case01"):
        upload(server, case, tmp_path / "phantom.nii.gz")
    ann = Annotator(dashboard(server))
    ann.page.goto(f"{server.url}/annotate/")
    ann.page.wait_for_selector("main[data-ready] #gl", timeout=READY_MS)
    ann.page.fill('[data-testid="client-id"]', "ann1")
    ann.page.press('[data-testid="client-id"]', "Enter")
    ann.page.locator('[data-testid="client-id"]').blur()
    ann.page.select_option("select[name=strategy]", "first")
    ann.page.click('button[data-action="next"]')
    ann.page.wait_for_selector('[data-testid="image"]:text("case00")', timeout=READY_MS)
    assert "held by ann1" in ann.board.text('[data-testid="lease"]')
    # The models that need training cannot be chosen until they have weights.
    assert ann.page.locator('select[name=model] option[value="segmentation"]').is_disabled()
    ann.page.select_option("select[name=preset]", "soft tissue")
    assert ann.page.input_value("input[name=window]") == "400"
    assert ann.page.input_value("input[name=level]") == "40"
    ann.board.shot("annotate-multiplanar")

    ann.page.fill("input[name=skip_reason]", "motion artefact")
    ann.page.click('button[data-action="skip"]')
    ann.page.wait_for_selector('[data-testid="image"]:text("case01")', timeout=READY_MS)
    skips = requests.get(f"{server.url}/activelearning/skips", timeout=30).json()
    assert [(s["image"], s["holder"], s["reason"]) for s in skips] == [("case00", "ann1", "motion artefact")]


def test_the_annotator_page_is_served_like_the_dashboard(make_server: Callable[..., LiveServer]) -> None:
    server = make_server(auth=AuthSettings(enabled=True))
    page = requests.get(f"{server.url}/annotate/", timeout=30)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<meta name="labelloop-auth" content="on">' in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for name, media_type in (("annotate.js", "text/javascript"), ("annotate.css", "text/css")):
        assert f"/web/{name}?v=" in page.text
        asset = requests.get(f"{server.url}/web/{name}", timeout=30)
        assert asset.status_code == 200 and asset.headers["content-type"].startswith(media_type)
    moved = requests.get(f"{server.url}/annotate", allow_redirects=False, timeout=30)
    assert moved.status_code == 308 and moved.headers["location"] == "/annotate/"
    assert requests.get(f"{server.url}/web/annotate.html", timeout=30).status_code in (401, 404)
