"""PACS timings against a real Orthanc: first retrieval of a series, cached retrieval, SEG write.

A CT series (lung1 from the pyradiomics sample data when it is cached, else a synthetic CT of
the same size, 512x512x48) is stored in a fresh Orthanc; a labelloop server (a separate
process) lists it over DICOMweb; then, over HTTP:

- first retrieval: ``GET /datastore/image`` of the series (WADO-RS, DICOM -> NIfTI, cache);
- cached retrieval: the same request again;
- SEG write: ``PUT /datastore/label`` of a final label (SEG built, read back, STOW-RS, commit).

Usage::

    python bench/pacs.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import requests

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from labelloop.imaging import Geometry, Volume, write_volume  # noqa: E402
from labelloop.sampledata.synthetic import generate_case  # noqa: E402
from labelloop.settings import Settings  # noqa: E402
from tests.support.dicom_series import volume_to_series  # noqa: E402
from tests.support.orthanc import start_orthanc  # noqa: E402
from tests.support.servers import APP_DIR, free_port, start_process_server  # noqa: E402


def _case() -> tuple[str, Volume, np.ndarray]:
    cache = Path.home() / ".cache" / "labelloop"
    try:
        from labelloop.imaging import read_volume
        from labelloop.sampledata import fetch_real

        with tempfile.TemporaryDirectory() as folder:
            fetch_real(Path(folder), cache_dir=cache)
            image = read_volume(Path(folder) / "lung1.nii.gz")
            label = read_volume(Path(folder) / "labels" / "reference" / "lung1.nii.gz")
        return "lung1 (real CT)", image, np.asarray(label.array, dtype=np.uint8)
    except Exception as exc:  # no network and no cache
        print(f"lung1 not available ({exc}); using a synthetic CT of the same size")
        image, label, affine = generate_case(
            np.random.default_rng(0), shape=(512, 512, 48), spacing=(0.7, 0.7, 5.0)
        )
        return "synthetic CT", Volume(array=image, geometry=Geometry(shape=image.shape, affine=affine)), label


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    name, volume, label = _case()
    series = volume_to_series(volume, patient_id="BENCH")
    series_uid = str(series[0].SeriesInstanceUID)
    orthanc, stop_orthanc = start_orthanc()
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        try:
            started = time.perf_counter()
            orthanc.store(series)
            stow_s = time.perf_counter() - started
            data = work / "data"
            data.mkdir()
            settings = Settings(app=APP_DIR, data_dir=data, port=free_port(), studies=orthanc.dicomweb)
            server, _ = start_process_server(
                settings,
                env={"LABELLOOP_DICOMWEB__REFRESH_INTERVAL_S": "0.5", "LABELLOOP_JOBS__WORKERS": "0"},
            )
            try:
                deadline = time.monotonic() + 60
                while requests.get(f"{server.url}/datastore/", timeout=10).json()["total"] < 1:
                    if time.monotonic() > deadline:
                        raise SystemExit("the server did not list the series")
                    time.sleep(0.2)
                url = f"{server.url}/datastore/image"
                started = time.perf_counter()
                first = requests.get(url, params={"image": series_uid}, timeout=300)
                first_s = time.perf_counter() - started
                first.raise_for_status()
                cached = []
                for _ in range(args.repeats):
                    started = time.perf_counter()
                    requests.get(url, params={"image": series_uid}, timeout=300).raise_for_status()
                    cached.append(time.perf_counter() - started)
                label_path = work / "label.nii.gz"
                write_volume(label_path, label, volume.geometry.affine)
                writes = []
                for _ in range(args.repeats):
                    started = time.perf_counter()
                    with open(label_path, "rb") as f:
                        answer = requests.put(
                            f"{server.url}/datastore/label",
                            params={"image": series_uid},
                            files={"label": (label_path.name, f)},
                            timeout=300,
                        )
                    writes.append(time.perf_counter() - started)
                    answer.raise_for_status()
            finally:
                server.stop()
        finally:
            stop_orthanc()
    shape = "x".join(str(n) for n in volume.geometry.shape)
    print(f"\nPACS timings on {name}, {shape} voxels ({len(series)} DICOM slices), Orthanc on loopback")
    print(f"  STOW-RS of the series (setup)           {stow_s:8.3f} s")
    megabytes = len(first.content) / 1e6
    print(f"  first retrieval (WADO-RS + convert)     {first_s:8.3f} s   ({megabytes:.1f} MB NIfTI)")
    print(f"  cached retrieval   median of {args.repeats}        {statistics.median(cached):8.3f} s")
    print(f"  SEG write (final label save) median     {statistics.median(writes):8.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
