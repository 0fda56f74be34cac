"""Real single-frame DICOM series for the tests, derived from pydicom's own CT test file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid


def write_series(folder: Path, slices: int = 4, step_mm: float = 2.5) -> list[Path]:
    """Write ``slices`` CT slices of one series into ``folder``; returns their paths (z order)."""
    folder.mkdir(parents=True, exist_ok=True)
    source = get_testdata_file("CT_small.dcm", download=False)
    assert isinstance(source, str), "pydicom's test data is installed with pydicom"
    template = pydicom.dcmread(source)
    series_uid = generate_uid()
    orientation = np.asarray(template.ImageOrientationPatient, dtype=float)
    normal = np.cross(orientation[:3], orientation[3:])
    origin = np.asarray(template.ImagePositionPatient, dtype=float)
    paths = []
    for k in range(slices):
        ds = pydicom.dcmread(source)
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [float(v) for v in origin + k * step_mm * normal]
        ds.SliceThickness = step_mm
        path = folder / f"slice{k:03d}.dcm"
        ds.save_as(path)
        paths.append(path)
    return paths
