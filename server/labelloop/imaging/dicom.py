"""DICOM series (one file per slice) to a ``Volume``."""

from __future__ import annotations

import io
import zipfile
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from labelloop.errors import ImageReadError, PayloadTooLargeError
from labelloop.imaging.formats import scrub
from labelloop.imaging.volume import Geometry, Volume

__all__ = ["DicomSeries", "read_dicom_zip", "read_dicom_series", "sort_dicom_series"]


def _datasets_from_zip(path: Path, max_bytes: int) -> list[Any]:
    import pydicom

    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ImageReadError(f"The zip file cannot be opened: {scrub(exc, path)}") from exc
    with archive:
        members = [m for m in archive.infolist() if not m.is_dir()]
        total = sum(m.file_size for m in members)
        if total > max_bytes:
            raise PayloadTooLargeError(
                f"The zip unpacks to {total} bytes, over the limit of {max_bytes} bytes"
            )
        datasets = []
        for member in members:
            # Members are read into memory by name, never extracted, so ".." in a name is harmless.
            try:
                raw = archive.read(member)
            except (zipfile.BadZipFile, OSError, RuntimeError) as exc:
                raise ImageReadError(f"The zip member {member.filename!r} cannot be read: {exc}") from exc
            try:
                ds = pydicom.dcmread(io.BytesIO(raw), force=False)
            except Exception:
                continue  # not DICOM (a DICOMDIR, a readme, ...): skipped
            datasets.append(ds)
    return datasets


def read_dicom_zip(path: Path, max_bytes: int) -> Volume:
    """Read a zip of single-frame DICOM files holding one series.

    Raises:
        ImageReadError: no image slices, several series, or inconsistent geometry.
        PayloadTooLargeError: the zip unpacks to more than ``max_bytes``.
    """
    return read_dicom_series(_datasets_from_zip(path, max_bytes))


def _float_list(ds: Any, keyword: str, n: int) -> list[float]:
    value = getattr(ds, keyword, None)
    if value is None or len(value) != n:
        raise ImageReadError(f"A DICOM slice has no usable {keyword}")
    return [float(v) for v in value]


@dataclass(frozen=True)
class DicomSeries:
    """A sorted single-frame series: its slices in ``k`` order and the grid they make.

    Attributes:
        slices: the datasets, ordered along the slice normal (``k`` = 0 first).
        geometry: ``(I, J, K)`` = (columns, rows, slices) with a voxel -> RAS mm affine.
    """

    slices: list[Any]
    geometry: Geometry


def sort_dicom_series(datasets: Iterable[Any], *, need_pixels: bool = True) -> DicomSeries:
    """Order the slices of one series along their normal and derive the voxel grid.

    With ``need_pixels=False`` metadata alone (WADO-RS metadata, no PixelData) is enough.

    Raises:
        ImageReadError: no slices, several series, mixed orientations or sizes, uneven spacing.
    """
    slices = [
        ds for ds in datasets if (not need_pixels or "PixelData" in ds) and "ImagePositionPatient" in ds
    ]
    if not slices:
        raise ImageReadError("The archive holds no DICOM image slices")
    by_series: dict[str, list[Any]] = defaultdict(list)
    for ds in slices:
        by_series[str(getattr(ds, "SeriesInstanceUID", ""))].append(ds)
    if len(by_series) > 1:
        raise ImageReadError(f"The archive holds {len(by_series)} DICOM series; upload one series at a time")
    orient = np.asarray(_float_list(slices[0], "ImageOrientationPatient", 6))
    row_dir, col_dir = orient[:3], orient[3:]
    normal = np.cross(row_dir, col_dir)
    if np.linalg.norm(normal) < 1e-6:
        raise ImageReadError("The DICOM ImageOrientationPatient is degenerate")
    positions = []
    for ds in slices:
        if not np.allclose(_float_list(ds, "ImageOrientationPatient", 6), orient, atol=1e-4):
            raise ImageReadError("The DICOM slices have different orientations")
        positions.append(np.asarray(_float_list(ds, "ImagePositionPatient", 3)))
    order = np.argsort([float(p @ normal) for p in positions])
    slices = [slices[i] for i in order]
    positions = [positions[i] for i in order]
    rows, cols = int(slices[0].Rows), int(slices[0].Columns)
    if any(int(ds.Rows) != rows or int(ds.Columns) != cols for ds in slices):
        raise ImageReadError("The DICOM slices have different sizes")
    pixel_spacing = _float_list(slices[0], "PixelSpacing", 2)  # (row spacing, column spacing)
    if len(slices) > 1:
        steps = np.diff(np.asarray(positions), axis=0)
        step = steps.mean(axis=0)
        if np.linalg.norm(step) < 1e-6:
            raise ImageReadError("Several DICOM slices share one position")
        if np.max(np.linalg.norm(steps - step, axis=1)) > 0.01 * np.linalg.norm(step) + 1e-3:
            raise ImageReadError("The DICOM slices are not evenly spaced (missing slices?)")
    else:
        thickness = float(getattr(slices[0], "SliceThickness", 1.0) or 1.0)
        step = normal * thickness
    lps = np.eye(4)
    lps[:3, 0] = row_dir * pixel_spacing[1]
    lps[:3, 1] = col_dir * pixel_spacing[0]
    lps[:3, 2] = step
    lps[:3, 3] = positions[0]
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps
    return DicomSeries(slices=slices, geometry=Geometry(shape=(cols, rows, len(slices)), affine=affine))


def read_dicom_series(datasets: Iterable[Any]) -> Volume:
    """Stack single-frame DICOM datasets of one series into a ``Volume``.

    The result's ``array`` is ``(I, J, K)`` = (column, row, slice) with rescale slope and
    intercept applied (int16 when they are integral and fit, else float32); the affine maps
    to RAS millimetres.
    """
    series = sort_dicom_series(datasets)
    slices = series.slices
    try:
        planes = [ds.pixel_array for ds in slices]
    except Exception as exc:
        raise ImageReadError(f"The DICOM pixel data cannot be decoded: {exc}") from exc
    stack = np.stack(planes, axis=-1).transpose(1, 0, 2)  # (rows, cols, k) -> (cols, rows, k)
    slope = float(getattr(slices[0], "RescaleSlope", 1) or 1)
    intercept = float(getattr(slices[0], "RescaleIntercept", 0) or 0)
    data = stack.astype(np.float64) * slope + intercept
    if slope == int(slope) and intercept == int(intercept) and data.min() >= -32768 and data.max() <= 32767:
        array = data.astype(np.int16)
    else:
        array = data.astype(np.float32)
    return Volume(array=array, geometry=series.geometry, format="dicom")
