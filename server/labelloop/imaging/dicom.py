"""DICOM series (one file per slice) to a ``Volume``."""

from __future__ import annotations

import io
import math
import zipfile
import zlib
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from labelloop.errors import ImageReadError, PayloadTooLargeError
from labelloop.imaging.formats import scrub
from labelloop.imaging.limits import DecodeLimits, DecodeSize
from labelloop.imaging.volume import Geometry, Volume

__all__ = [
    "DicomSeries",
    "check_deflated",
    "dicom_decode_size",
    "read_dicom_zip",
    "read_dicom_series",
    "sort_dicom_series",
]

_DEFLATED = "1.2.840.10008.1.2.1.99"  # Deflated Explicit VR Little Endian: the whole dataset is zlib'd
_CHUNK = 1 << 20


def check_deflated(raw: bytes, name: str, allowance: int) -> None:
    """A deflated-transfer-syntax file inflates whole when pydicom reads it: inflate it once here,
    keeping nothing, and refuse it if it holds more than ``allowance`` bytes."""
    from pydicom.filereader import _read_file_meta_info, read_preamble

    fp = io.BytesIO(raw)
    try:
        read_preamble(fp, force=False)
        meta = _read_file_meta_info(fp)
    except Exception:
        return  # not a DICOM file with a meta header: dcmread decides
    if str(meta.get("TransferSyntaxUID", "")) != _DEFLATED:
        return
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    data, total = fp.read(), 0
    try:
        while data and not inflater.eof:
            total += len(inflater.decompress(data, _CHUNK))
            if total > allowance:
                raise PayloadTooLargeError(
                    f"The deflated DICOM file {name!r} inflates to more than the {allowance:,} bytes left "
                    "under the limit (setting datastore.max_decoded_bytes)"
                )
            data = inflater.unconsumed_tail
    except zlib.error as exc:
        raise ImageReadError(f"The deflated DICOM file {name!r} cannot be inflated: {exc}") from exc


def _pixels(ds: Any) -> DecodeSize:
    """Voxels and stored bytes of one dataset's pixel data, from its header."""
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
        samples = int(getattr(ds, "SamplesPerPixel", 1) or 1)
        bits = int(getattr(ds, "BitsAllocated", 16) or 16)
    except (AttributeError, TypeError, ValueError):
        return DecodeSize(0, 0)
    voxels = max(rows, 0) * max(cols, 0) * max(frames, 1) * max(samples, 1)
    return DecodeSize(voxels, voxels * math.ceil(max(bits, 1) / 8))


def dicom_decode_size(datasets: Iterable[Any]) -> DecodeSize:
    """What stacking ``datasets`` takes: their voxels, and their decoded pixels plus the float32 or
    int16 volume they become (counted as 4 bytes a voxel)."""
    sizes = [_pixels(ds) for ds in datasets]
    voxels = sum(s.voxels for s in sizes)
    return DecodeSize(voxels, sum(s.bytes for s in sizes) + 4 * voxels)


def _datasets_from_zip(path: Path, max_bytes: int, limits: DecodeLimits | None) -> list[Any]:
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
        read = 0  # bytes held: the members' raw bytes and what deflated members inflate to
        for member in members:
            # Members are read into memory by name, never extracted, so ".." in a name is harmless.
            try:
                raw = archive.read(member)
            except (zipfile.BadZipFile, OSError, RuntimeError) as exc:
                raise ImageReadError(f"The zip member {member.filename!r} cannot be read: {exc}") from exc
            if limits is not None:
                check_deflated(raw, member.filename, max(limits.max_bytes - read, 0))
            try:
                ds = pydicom.dcmread(io.BytesIO(raw), force=False)
            except Exception:
                continue  # not DICOM (a DICOMDIR, a readme, ...): skipped
            datasets.append(ds)
            if limits is not None:
                # Decoded pixels count, not the zip's declared sizes (compressed pixel data and
                # deflated files decode to far more than they store).
                read += len(raw) + _pixels(ds).bytes
                limits.check(dicom_decode_size(datasets), "The DICOM series")
    return datasets


def read_dicom_zip(path: Path, max_bytes: int, limits: DecodeLimits | None = None) -> Volume:
    """Read a zip of single-frame DICOM files holding one series.

    Raises:
        ImageReadError: no image slices, several series, or inconsistent geometry.
        PayloadTooLargeError: the zip unpacks to more than ``max_bytes``, or its pixels (rows x
            columns x frames, counted from each file's header before any is decoded) exceed ``limits``.
    """
    return read_dicom_series(_datasets_from_zip(path, max_bytes, limits), release=True)


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


def read_dicom_series(datasets: Iterable[Any], *, release: bool = False) -> Volume:
    """Stack single-frame DICOM datasets of one series into a ``Volume``.

    The result's ``array`` is ``(I, J, K)`` = (column, row, slice) with rescale slope and
    intercept applied (int16 when they are integral and fit, else float32); the affine maps
    to RAS millimetres. ``release``: drop each dataset's pixel data once it is copied (the
    datasets are the caller's, so only when it will not use them again).
    """
    series = sort_dicom_series(datasets)
    slices = series.slices
    slope = float(getattr(slices[0], "RescaleSlope", 1) or 1)
    intercept = float(getattr(slices[0], "RescaleIntercept", 0) or 0)
    integral = slope == int(slope) and intercept == int(intercept)
    # Filled one slice at a time, each slice's stored pixels let go once copied: the peak is the
    # stored pixels plus the volume, not several float64 copies of it.
    array: npt.NDArray[Any] = np.empty(series.geometry.shape, dtype=np.int16 if integral else np.float32)
    for k, ds in enumerate(slices):
        try:
            plane = np.asarray(ds.pixel_array)
        except Exception as exc:
            raise ImageReadError(f"The DICOM pixel data cannot be decoded: {exc}") from exc
        if plane.ndim != 2:
            raise ImageReadError(
                f"A DICOM slice has pixel data of shape {plane.shape}; one grey plane is needed"
            )
        # float32 holds every integer up to 2^24 exactly, which covers stored pixels (at most 16 bits)
        # times an integral slope plus intercept whenever the result fits int16.
        values: npt.NDArray[Any] = plane.T.astype(np.float32) * np.float32(slope) + np.float32(intercept)
        if array.dtype == np.int16 and (values.min() < -32768 or values.max() > 32767):
            array = array.astype(np.float32)  # the values need more than int16: keep them exact
        array[:, :, k] = values
        del plane, values
        if release:  # the caller is done with the datasets: free each slice's pixels as we go
            if "PixelData" in ds:
                del ds.PixelData
            if hasattr(ds, "_pixel_array"):
                ds._pixel_array = None
    return Volume(array=array, geometry=series.geometry, format="dicom")
