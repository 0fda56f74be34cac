"""The annotator's load time: from "Next case" clicked to the image on screen, two CT sizes.

A ``labelloop serve`` (a separate process, auth off) holds synthetic abdominal CTs
(``labelloop.sampledata.synthetic.generate_case``, int16, gzipped NIfTI) on two grids: the
cohort's 128x128x64 voxels of 3x3x4 mm and a thin-slice 512x512x48 of 0.7x0.7x5 mm. Debian's
Chromium (headless, Playwright; software WebGL2 on these machines, SwiftShader) opens
``/annotate/`` in a fresh browser context for each run (no cache), as a different annotator
(``client_id``), and clicks "Next case" (strategy ``first``). The page measures, with the
performance API, the time from the click to the first frame after NiiVue drew the image
(``labelloop:annotate:next-to-image``): the lease (``POST /activelearning/first``), the image's
download (``GET /datastore/image``), its decompression and parsing, the WebGL upload and the draw.
The download's own share comes from the browser's resource timing. The label volumes and
the final label, loaded after the image is shown, are not in it.

Usage::

    python bench/annotator.py [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

import numpy as np
import requests

if __package__ in (None, ""):  # run as ``python bench/annotator.py``
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._util import interrupt_on_sigterm, render_table, scratch_dir, serve  # noqa: E402
from labelloop.api.web import static_dir  # noqa: E402
from labelloop.imaging import write_volume  # noqa: E402
from labelloop.sampledata.synthetic import generate_case  # noqa: E402
from tests.support.browser import chromium, offline_page  # noqa: E402

GRIDS: dict[str, tuple[tuple[int, int, int], tuple[float, float, float]]] = {
    "128x128x64": ((128, 128, 64), (3.0, 3.0, 4.0)),
    "512x512x48": ((512, 512, 48), (0.7, 0.7, 5.0)),
}
TIMEOUT_MS = 120_000


def _one_load(browser: Any, url: str, client: str) -> dict[str, float]:
    with offline_page(browser) as offline:
        page = offline.page
        page.set_viewport_size({"width": 1400, "height": 900})
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.add_init_script(f"localStorage.setItem('labelloop.client_id', {client!r})")
        page.goto(f"{url}/annotate/")
        page.wait_for_selector("main[data-ready] #gl", timeout=TIMEOUT_MS)
        page.select_option("select[name=strategy]", "first")
        page.click('button[data-action="next"]')
        page.wait_for_selector('[data-testid="load-ms"]', timeout=TIMEOUT_MS)
        timing: dict[str, float] = page.evaluate(
            """() => ({
                total: performance.getEntriesByName('labelloop:annotate:next-to-image').at(-1).duration,
                download: performance.getEntriesByType('resource')
                    .filter((e) => e.name.includes('/datastore/image?')).at(-1).duration,
            })"""
        )
        if errors or offline.errors or offline.blocked:
            raise RuntimeError(f"the page failed: {errors} {offline.errors} {offline.blocked}")
        return timing


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    interrupt_on_sigterm()
    bundle = static_dir() / "annotate.js"
    if not bundle.is_file():
        print("the annotator is not built: run `make web`")  # noqa: T201
        return 1
    rows = []
    with scratch_dir("labelloop-bench-annotator-") as work, chromium() as browser:
        for name, (shape, spacing) in GRIDS.items():
            image, _, affine = generate_case(np.random.default_rng(0), shape=shape, spacing=spacing)
            path = work / f"{name}.nii.gz"
            write_volume(path, image, affine)
            data = work / f"data-{name}"
            data.mkdir()
            with serve(data, log_level="WARNING") as server:
                for run in range(args.runs):
                    with path.open("rb") as f:
                        answer = requests.put(
                            f"{server.url}/datastore/image",
                            params={"image": f"case{run:02d}"},
                            files={"file": (path.name, f)},
                            timeout=300,
                        )
                    answer.raise_for_status()
                loads = [_one_load(browser, server.url, f"bench{run}") for run in range(args.runs)]
            totals = [load["total"] for load in loads]
            rows.append(
                [
                    name,
                    f"{path.stat().st_size / 1e6:.1f}",
                    str(len(loads)),
                    f"{statistics.median(totals):.0f}",
                    f"{min(totals):.0f}",
                    f"{max(totals):.0f}",
                    f"{statistics.median(load['download'] for load in loads):.0f}",
                ]
            )
    headers = ["volume", "file MB", "runs", "median ms", "min ms", "max ms", "download ms (median)"]
    print('"Next case" clicked -> image shown, in the annotator (headless Chromium, software WebGL2)')  # noqa: T201
    print(render_table(headers, rows))  # noqa: T201
    print(f"annotate.js: {bundle.stat().st_size / 1024:.0f} KiB (minified, not compressed)")  # noqa: T201
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
