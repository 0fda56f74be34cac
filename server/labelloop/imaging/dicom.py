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
    "DicomFrame",
    "DicomSeries",
    "check_deflated",
    "dicom_decode_size",
    "functional_group",
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


def _float_list(value: Any, keyword: str, n: int, where: str) -> list[float]:
    if value is None or len(value) != n:
        raise ImageReadError(f"The DICOM {where} has no usable {keyword}")
    try:
        return [float(v) for v in value]
    except (TypeError, ValueError) as exc:
        raise ImageReadError(f"The DICOM {where} has an unreadable {keyword}: {exc}") from exc


def _describe(ds: Any) -> str:
    number = getattr(ds, "InstanceNumber", None)
    uid = str(getattr(ds, "SOPInstanceUID", "") or "?")
    return f"instance {number} ({uid})" if number not in (None, "") else f"instance {uid}"


def functional_group(ds: Any, index: int, group: str) -> Any:
    """The first item of the functional group ``group`` (a sequence keyword such as
    ``PlanePositionSequence``) for frame ``index`` (0-based) of a multi-frame instance: from its
    per-frame functional groups, else from the shared ones; ``None`` if neither has it."""
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []
    candidates = [per_frame[index]] if index < len(per_frame) else []
    candidates += list(ds.get("SharedFunctionalGroupsSequence") or [])[:1]
    for groups in candidates:
        items = groups.get(group)
        if items:
            return items[0]
    return None


def _functional(ds: Any, index: int, group: str, keyword: str) -> Any:
    """An attribute of frame ``index`` of a multi-frame instance (see ``functional_group``)."""
    item = functional_group(ds, index, group)
    return item.get(keyword) if item is not None else None


def _is_multiframe(ds: Any) -> bool:
    return "PerFrameFunctionalGroupsSequence" in ds or "SharedFunctionalGroupsSequence" in ds


@dataclass(frozen=True)
class DicomFrame:
    """One 2-D plane of a series: a single-frame instance, or one frame of an enhanced one.

    Attributes:
        dataset: the instance the plane belongs to.
        frame: its 1-based frame number in a multi-frame instance; ``None`` for a single-frame one.
        position: ImagePositionPatient of its first pixel, LPS mm, shape ``(3,)``.
        orientation: ImageOrientationPatient (row direction, then column direction), shape ``(6,)``.
        pixel_spacing: ``(row spacing, column spacing)`` in mm.
        slope, intercept: the rescale from stored values to output units (HU for CT).
    """

    dataset: Any
    frame: int | None
    position: npt.NDArray[np.float64]
    orientation: npt.NDArray[np.float64]
    pixel_spacing: tuple[float, float]
    slope: float
    intercept: float

    @property
    def sop_instance_uid(self) -> str:
        return str(getattr(self.dataset, "SOPInstanceUID", "") or "")

    def describe(self) -> str:
        """How a message names the plane: ``instance 12 (1.2.3...)`` or ``frame 4 of instance ...``."""
        where = _describe(self.dataset)
        return where if self.frame is None else f"frame {self.frame} of {where}"


def _rescale(value: Any, default: float) -> float:
    try:
        return float(value) if value not in (None, "") else default
    except (TypeError, ValueError):
        return default


def _frames_of(ds: Any) -> list[DicomFrame]:
    """The planes of one instance (one for a single-frame instance)."""
    if not _is_multiframe(ds):
        where = _describe(ds)
        spacing = _float_list(getattr(ds, "PixelSpacing", None), "PixelSpacing", 2, where)
        return [
            DicomFrame(
                dataset=ds,
                frame=None,
                position=np.asarray(
                    _float_list(getattr(ds, "ImagePositionPatient", None), "ImagePositionPatient", 3, where)
                ),
                orientation=np.asarray(
                    _float_list(
                        getattr(ds, "ImageOrientationPatient", None), "ImageOrientationPatient", 6, where
                    )
                ),
                pixel_spacing=(spacing[0], spacing[1]),
                slope=_rescale(getattr(ds, "RescaleSlope", None), 1.0),
                intercept=_rescale(getattr(ds, "RescaleIntercept", None), 0.0),
            )
        ]
    count = int(getattr(ds, "NumberOfFrames", 1) or 1)
    frames = []
    for index in range(count):
        where = f"frame {index + 1} of {_describe(ds)}"
        spacing = _float_list(
            _functional(ds, index, "PixelMeasuresSequence", "PixelSpacing"), "PixelSpacing", 2, where
        )
        slope = _functional(ds, index, "PixelValueTransformationSequence", "RescaleSlope")
        intercept = _functional(ds, index, "PixelValueTransformationSequence", "RescaleIntercept")
        frames.append(
            DicomFrame(
                dataset=ds,
                frame=index + 1,
                position=np.asarray(
                    _float_list(
                        _functional(ds, index, "PlanePositionSequence", "ImagePositionPatient"),
                        "ImagePositionPatient",
                        3,
                        where,
                    )
                ),
                orientation=np.asarray(
                    _float_list(
                        _functional(ds, index, "PlaneOrientationSequence", "ImageOrientationPatient"),
                        "ImageOrientationPatient",
                        6,
                        where,
                    )
                ),
                pixel_spacing=(spacing[0], spacing[1]),
                slope=_rescale(slope if slope is not None else getattr(ds, "RescaleSlope", None), 1.0),
                intercept=_rescale(
                    intercept if intercept is not None else getattr(ds, "RescaleIntercept", None), 0.0
                ),
            )
        )
    return frames


def _is_localizer(ds: Any) -> bool:
    image_type = getattr(ds, "ImageType", None) or []
    values = [str(v).upper() for v in ([image_type] if isinstance(image_type, str) else image_type)]
    return "LOCALIZER" in values


def _has_position(ds: Any) -> bool:
    if _is_multiframe(ds):
        return _functional(ds, 0, "PlanePositionSequence", "ImagePositionPatient") is not None
    return "ImagePositionPatient" in ds


@dataclass(frozen=True)
class DicomSeries:
    """A sorted series: its planes in ``k`` order and the grid they make.

    Attributes:
        frames: the planes (single-frame instances, or frames of enhanced multi-frame ones),
            ordered along the slice normal (``k`` = 0 first).
        geometry: ``(I, J, K)`` = (columns, rows, planes) with a voxel -> RAS mm affine.
        skipped: ``(instance, reason)`` for the instances left out (localizers).
    """

    frames: list[DicomFrame]
    geometry: Geometry
    skipped: list[tuple[str, str]]

    @property
    def slices(self) -> list[Any]:
        """The instances in the order of their first plane (each instance once)."""
        seen: dict[int, Any] = {}
        for frame in self.frames:
            seen.setdefault(id(frame.dataset), frame.dataset)
        return list(seen.values())

    @property
    def multiframe(self) -> bool:
        return any(frame.frame is not None for frame in self.frames)


def _mm(value: float) -> str:
    return f"{value:.2f} mm"


def sort_dicom_series(datasets: Iterable[Any], *, need_pixels: bool = True) -> DicomSeries:
    """Order the planes of one series along their normal and derive the voxel grid.

    Single-frame instances and enhanced multi-frame ones (planes from their functional groups)
    are both read; localizers (``LOCALIZER`` in ImageType) are left out and listed in
    ``skipped``; instances with no plane position (SEG, SR, presentation states) are ignored.
    With ``need_pixels=False`` metadata alone (WADO-RS metadata, no PixelData) is enough.

    Raises:
        ImageReadError: no planes, several series, mixed orientations or sizes, planes sharing a
            position, or uneven spacing (the message names the gap and the instances around it).
    """
    candidates = [ds for ds in datasets if (not need_pixels or "PixelData" in ds) and _has_position(ds)]
    skipped = [(_describe(ds), "a localizer (ImageType LOCALIZER)") for ds in candidates if _is_localizer(ds)]
    candidates = [ds for ds in candidates if not _is_localizer(ds)]
    if not candidates:
        if skipped:
            raise ImageReadError("The series holds only localizer images, no image slices")
        raise ImageReadError("The archive holds no DICOM image slices")
    by_series: dict[str, list[Any]] = defaultdict(list)
    for ds in candidates:
        by_series[str(getattr(ds, "SeriesInstanceUID", ""))].append(ds)
    if len(by_series) > 1:
        raise ImageReadError(f"The archive holds {len(by_series)} DICOM series; upload one series at a time")
    frames = [frame for ds in candidates for frame in _frames_of(ds)]
    orient = frames[0].orientation
    row_dir, col_dir = orient[:3], orient[3:]
    normal = np.cross(row_dir, col_dir)
    if np.linalg.norm(normal) < 1e-6:
        raise ImageReadError(f"The DICOM ImageOrientationPatient of {frames[0].describe()} is degenerate")
    odd = [f for f in frames if not np.allclose(f.orientation, orient, atol=1e-4)]
    if odd:
        names = ", ".join(f.describe() for f in odd[:3]) + (
            f" and {len(odd) - 3} more" if len(odd) > 3 else ""
        )
        raise ImageReadError(
            f"The DICOM slices have different orientations: {names} differ from {frames[0].describe()} "
            "(only localizers, marked LOCALIZER in ImageType, are left out)"
        )
    order = np.argsort([float(f.position @ normal) for f in frames], kind="stable")
    frames = [frames[i] for i in order]
    rows, cols = _plane_size(frames[0])
    for frame in frames:
        if _plane_size(frame) != (rows, cols):
            raise ImageReadError(
                f"The DICOM slices have different sizes: {frame.describe()} is {_plane_size(frame)} "
                f"(rows, columns), {frames[0].describe()} is {(rows, cols)}"
            )
    pixel_spacing = frames[0].pixel_spacing  # (row spacing, column spacing)
    if len(frames) > 1:
        positions = np.asarray([f.position for f in frames])
        steps = np.diff(positions, axis=0)
        distances = steps @ normal
        for k, distance in enumerate(distances):
            if abs(distance) < 1e-3:
                raise ImageReadError(
                    f"Several DICOM slices share one position: {frames[k].describe()} and "
                    f"{frames[k + 1].describe()} are both at {_mm(float(positions[k] @ normal))} along the "
                    "normal (several echoes, phases or time points in one series?)"
                )
        step = np.median(steps, axis=0)
        expected = float(step @ normal)
        for k in range(len(steps)):
            if np.linalg.norm(steps[k] - step) > 0.01 * np.linalg.norm(step) + 1e-3:
                raise ImageReadError(
                    "The DICOM slices are not evenly spaced: between "
                    f"{frames[k].describe()} at {_mm(float(positions[k] @ normal))} and "
                    f"{frames[k + 1].describe()} at {_mm(float(positions[k + 1] @ normal))} the step is "
                    f"{_mm(float(distances[k]))} where the series' step is {_mm(expected)} "
                    "(a missing slice, or uneven spacing: labelloop does not resample DICOM series)"
                )
    else:
        thickness = _rescale(
            getattr(frames[0].dataset, "SliceThickness", None)
            or (
                _functional(frames[0].dataset, 0, "PixelMeasuresSequence", "SliceThickness")
                if frames[0].frame is not None
                else None
            ),
            1.0,
        )
        step = normal * (thickness or 1.0)
    lps = np.eye(4)
    lps[:3, 0] = row_dir * pixel_spacing[1]
    lps[:3, 1] = col_dir * pixel_spacing[0]
    lps[:3, 2] = step
    lps[:3, 3] = frames[0].position
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps
    return DicomSeries(
        frames=frames, geometry=Geometry(shape=(cols, rows, len(frames)), affine=affine), skipped=skipped
    )


def _plane_size(frame: DicomFrame) -> tuple[int, int]:
    try:
        return int(frame.dataset.Rows), int(frame.dataset.Columns)
    except (AttributeError, TypeError, ValueError) as exc:
        raise ImageReadError(f"The DICOM {frame.describe()} has no usable Rows and Columns") from exc


def _decoded(ds: Any) -> npt.NDArray[Any]:
    """The instance's pixels: ``(rows, columns)``, or ``(frames, rows, columns)`` for multi-frame."""
    try:
        return np.asarray(ds.pixel_array)
    except Exception as exc:
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        named = f" (transfer syntax {syntax.name if hasattr(syntax, 'name') else syntax})" if syntax else ""
        raise ImageReadError(
            f"The DICOM pixel data of {_describe(ds)} cannot be decoded{named}: {exc}"
        ) from exc


def read_dicom_series(datasets: Iterable[Any], *, release: bool = False) -> Volume:
    """Stack the planes of one DICOM series (single-frame or enhanced multi-frame) into a ``Volume``.

    The result's ``array`` is ``(I, J, K)`` = (column, row, plane) with each plane's rescale slope
    and intercept applied (int16 when they are integral and the values fit, else float32); the
    affine maps to RAS millimetres. Localizers are left out (``sort_dicom_series``). Compressed
    pixel data decodes with pydicom's handlers: RLE, JPEG baseline/extended (Pillow), JPEG
    lossless (pylibjpeg-libjpeg), JPEG-LS (pyjpegls) and JPEG 2000 (Pillow). ``release``: drop each
    dataset's pixel data once it is copied (the datasets are the caller's, so only when it will
    not use them again).
    """
    series = sort_dicom_series(datasets)
    frames = series.frames
    integral = all(f.slope == int(f.slope) and f.intercept == int(f.intercept) for f in frames)
    # Filled one instance at a time, each instance's decoded pixels let go once copied: the peak is
    # one instance's pixels plus the volume, not several float64 copies of it.
    array: npt.NDArray[Any] = np.empty(series.geometry.shape, dtype=np.int16 if integral else np.float32)
    planes_of: dict[int, list[tuple[int, DicomFrame]]] = defaultdict(list)
    for k, frame in enumerate(frames):
        planes_of[id(frame.dataset)].append((k, frame))
    for ds in series.slices:
        pixels = _decoded(ds)
        for k, frame in planes_of[id(ds)]:
            if frame.frame is None:
                plane = pixels
            elif pixels.ndim == 3 and frame.frame <= pixels.shape[0]:
                plane = pixels[frame.frame - 1]
            elif pixels.ndim == 2 and frame.frame == 1:
                plane = pixels
            else:
                raise ImageReadError(f"The DICOM {frame.describe()} is not in its pixel data {pixels.shape}")
            if plane.ndim != 2:
                raise ImageReadError(
                    f"The DICOM {frame.describe()} has pixel data of shape {plane.shape}; "
                    "one grey plane is needed"
                )
            # float32 holds every integer up to 2^24 exactly, which covers stored pixels (at most 16
            # bits) times an integral slope plus intercept whenever the result fits int16.
            values: npt.NDArray[Any] = plane.T.astype(np.float32) * np.float32(frame.slope) + np.float32(
                frame.intercept
            )
            if array.dtype == np.int16 and (values.min() < -32768 or values.max() > 32767):
                array = array.astype(np.float32)  # the values need more than int16: keep them exact
            array[:, :, k] = values
            del plane, values
        del pixels
        if release:  # the caller is done with the datasets: free each instance's pixels as we go
            if "PixelData" in ds:
                del ds.PixelData
            if hasattr(ds, "_pixel_array"):
                ds._pixel_array = None
    return Volume(array=array, geometry=series.geometry, format="dicom")
