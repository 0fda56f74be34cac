"""Turning an uploaded file into something the datastore may keep, or a clear refusal.

Nothing here writes outside the scratch directory; callers store the result afterwards.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from labelloop.datastore.blobs import BlobStore
from labelloop.errors import ImageFormatError, ImageReadError
from labelloop.imaging import (
    DecodeBudget,
    DecodeLimits,
    DecodeSize,
    Geometry,
    Volume,
    VolumeFormat,
    canonical_extension,
    check_deflated,
    check_same_grid,
    declared_size,
    dicom_decode_size,
    read_dicom_series,
    read_dicom_zip,
    read_volume,
    sniff,
    write_volume,
)
from labelloop.settings import DatastoreSettings

__all__ = ["Accepted", "Decoder", "accept_image", "accept_label", "read_label", "read_image"]


class Decoder:
    """Reads uploads within the per-file limits, holding a share of one process-wide budget.

    Each read is sized from the file's header first (413 over ``max_voxels``/``max_decoded_bytes``,
    before a voxel is read), then waits for that many bytes of ``decode_budget_bytes`` (503 after
    ``decode_wait_s``), so uploads decoded at the same time cannot add up past the budget.
    A zipped DICOM series is sized as it is read, so it reserves the whole per-file limit.
    """

    def __init__(self, settings: DatastoreSettings, *, label_max: int | None = None) -> None:
        self.settings = settings
        self.limits = DecodeLimits(settings.max_voxels, settings.max_decoded_bytes)
        self.budget = DecodeBudget(settings.decode_budget_bytes, settings.decode_wait_s)
        self.label_max = settings.max_label_value or label_max

    def size(self, source: Path) -> DecodeSize:
        """What decoding ``source`` (an image or label upload) takes, from its header; checked."""
        kind = sniff(source)
        if kind == "zip":
            return DecodeSize(0, self.limits.max_bytes)
        if kind == "dicom":
            raise ImageFormatError(
                "A single DICOM file was sent; upload the whole series as a zip of its files"
            )
        size = declared_size(source)
        self.limits.check(size, "The upload")
        return size

    @contextmanager
    def image(self, source: Path) -> Iterator[Volume]:
        """The image in ``source`` (see ``read_image``), with its budget held until the block ends."""
        with self.budget.reserve(self.size(source).bytes):
            yield read_image(source, self.settings, self.limits)

    @contextmanager
    def label(self, source: Path, filename: str | None, image: Geometry) -> Iterator[Volume]:
        """The label in ``source`` for ``image`` (see ``read_label``), its budget held meanwhile."""
        if filename and filename.lower().endswith(".bin"):
            need = source.stat().st_size
        elif sniff(source) in ("nifti", "nifti-gz", "nrrd"):
            need = self.size(source).bytes
        else:
            need = 0  # read_label refuses it, naming the formats a label may have
        with self.budget.reserve(need):
            yield read_label(source, filename, image, self.settings, self.limits, self.label_max)

    @contextmanager
    def dicom_files(self, files: Sequence[tuple[str | None, Path]]) -> Iterator[Volume]:
        """Several uploaded DICOM files as one series (their pixels sized from their headers)."""
        import pydicom

        with self.budget.reserve(self.limits.max_bytes):
            datasets: list[Any] = []
            for filename, path in files:
                raw = path.read_bytes()
                check_deflated(raw, filename or "a file", self.limits.max_bytes)
                try:
                    datasets.append(pydicom.dcmread(io.BytesIO(raw)))
                except Exception as exc:
                    raise ImageFormatError(
                        f"Several files make a DICOM series, but {filename or 'a file'} is not DICOM: {exc}"
                    ) from exc
                self.limits.check(dicom_decode_size(datasets), "The DICOM series")
            yield read_dicom_series(datasets, release=True)


@dataclass(frozen=True)
class Accepted:
    """A validated volume file ready to be stored under ``ext``."""

    file: Path
    ext: str
    format: VolumeFormat
    geometry: Geometry
    converted: bool = False
    measurements: dict[str, Any] | None = None


def read_image(source: Path, settings: DatastoreSettings, limits: DecodeLimits | None = None) -> Volume:
    """Read an image file sent by a client: NIfTI, NRRD or a zipped DICOM series (see ``Decoder``
    for the limits and the budget).

    Raises:
        ImageFormatError: (415) none of the supported formats, or a detached NRRD.
        ImageReadError: (422) a supported format that does not decode to a 3D volume.
        PayloadTooLargeError: (413) over ``limits``.
    """
    kind = sniff(source)
    if kind == "dicom":
        raise ImageFormatError("A single DICOM file was sent; upload the whole series as a zip of its files")
    if kind == "zip":
        return read_dicom_zip(source, settings.dicom_zip_max_bytes, limits)
    return read_volume(source, limits)


@contextmanager
def accept_image(
    source: Path, filename: str | None, blobs: BlobStore, decoder: Decoder
) -> Iterator[Accepted]:
    """Validate an uploaded image (see ``read_image``); a DICOM series is stored converted to NIfTI.

    The whole voxel payload is decoded, so a truncated file is refused here, not at inference.
    """
    with decoder.image(source) as volume:
        if volume.format == "dicom":
            with blobs.scratch(".nii.gz") as converted:
                write_volume(converted, volume.array, volume.geometry.affine)
                yield Accepted(converted, ".nii.gz", "dicom", volume.geometry, converted=True)
            return
        geometry, fmt = volume.geometry, volume.format
    yield Accepted(source, canonical_extension(sniff(source), filename), fmt, geometry)


def _check_label_values(array: np.ndarray, label_max: int | None) -> None:
    if array.dtype.kind in "iub":
        if array.dtype.kind == "i" and array.size and int(array.min()) < 0:
            raise ImageReadError("The label holds negative values; labels are class indices >= 0")
        if label_max is not None and array.size and int(array.max()) > label_max:
            raise ImageReadError(
                f"The label holds the value {int(array.max())}; label values are 0 to {label_max} "
                "(the app's label indices)"
            )
        return
    if array.dtype.kind != "f":
        raise ImageReadError(f"The label has dtype {array.dtype}; an integer label map is needed")
    if not np.all(np.isfinite(array)):
        raise ImageReadError("The label holds NaN or infinite values")
    if np.any(array < 0) or np.any(array != np.round(array)):
        raise ImageReadError("The label holds non-integer or negative values; labels are class indices")
    if label_max is not None and array.size and float(array.max()) > label_max:
        raise ImageReadError(
            f"The label holds the value {float(array.max()):g}; label values are 0 to {label_max} "
            "(the app's label indices)"
        )


def read_label(
    source: Path,
    filename: str | None,
    image: Geometry,
    settings: DatastoreSettings,
    limits: DecodeLimits | None = None,
    label_max: int | None = None,
) -> Volume:
    """Read a label sent for an image and check it lies on the image's grid.

    A ``.bin`` upload is OHIF's raw dump: uint8 voxels in Fortran order with the image's
    shape, placed on the image's grid.

    Raises:
        ImageFormatError: (415) not NIfTI, NRRD or ``.bin``.
        ImageReadError: (422) undecodable, or not an integer label map.
        GeometryMismatchError: (422) another shape, spacing, orientation or origin.
    """
    if filename and filename.lower().endswith(".bin"):
        expected = int(np.prod(image.shape))
        size = source.stat().st_size
        if size != expected:
            raise ImageReadError(
                f"The raw .bin label has {size} bytes; its image {tuple(image.shape)} needs {expected}"
            )
        array = np.fromfile(source, dtype=np.uint8).reshape(image.shape, order="F")
        _check_label_values(array, label_max)
        return Volume(array=array, geometry=image, format="nifti")
    kind = sniff(source)
    if kind not in ("nifti", "nifti-gz", "nrrd"):
        raise ImageFormatError(f"A label must be a NIfTI or NRRD file (or OHIF's raw .bin), not {kind}")
    volume = read_volume(source, limits)
    check_same_grid(
        image,
        volume.geometry,
        spacing_rtol=settings.spacing_tolerance,
        direction_atol=settings.direction_tolerance,
        origin_tol_voxels=settings.origin_tolerance_voxels,
    )
    _check_label_values(volume.array, label_max)
    return volume


@contextmanager
def accept_label(
    source: Path,
    filename: str | None,
    image: Geometry,
    blobs: BlobStore,
    decoder: Decoder,
    measure: Callable[[Volume], dict[str, Any]] | None = None,
) -> Iterator[Accepted]:
    """Validate a label against its image's grid (see ``read_label``); ``.bin`` is stored as NIfTI.

    ``measure`` runs on the decoded label while its decode budget is held (the label is decoded
    once, for the check and the measurements); what it returns is ``Accepted.measurements``.
    """
    with decoder.label(source, filename, image) as volume:
        measurements = measure(volume) if measure is not None else None
        if filename and filename.lower().endswith(".bin"):
            with blobs.scratch(".nii.gz") as converted:
                write_volume(converted, volume.array, image.affine)
                yield Accepted(
                    converted, ".nii.gz", "nifti", image, converted=True, measurements=measurements
                )
            return
        fmt, geometry = volume.format, volume.geometry
    yield Accepted(
        source, canonical_extension(sniff(source), filename), fmt, geometry, measurements=measurements
    )
