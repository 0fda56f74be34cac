"""Turning an uploaded file into something the datastore may keep, or a clear refusal.

Nothing here writes outside the scratch directory; callers store the result afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from labelloop.datastore.blobs import BlobStore
from labelloop.errors import ImageFormatError, ImageReadError
from labelloop.imaging import (
    Geometry,
    Volume,
    VolumeFormat,
    canonical_extension,
    check_same_grid,
    read_dicom_zip,
    read_volume,
    sniff,
    write_volume,
)
from labelloop.settings import DatastoreSettings

__all__ = ["Accepted", "accept_image", "accept_label", "read_label", "read_image"]


@dataclass(frozen=True)
class Accepted:
    """A validated volume file ready to be stored under ``ext``."""

    file: Path
    ext: str
    format: VolumeFormat
    geometry: Geometry
    converted: bool = False


def read_image(source: Path, settings: DatastoreSettings) -> Volume:
    """Read an image file sent by a client: NIfTI, NRRD or a zipped DICOM series.

    Raises:
        ImageFormatError: (415) none of the supported formats.
        ImageReadError: (422) a supported format that does not decode to a 3D volume.
    """
    kind = sniff(source)
    if kind == "dicom":
        raise ImageFormatError("A single DICOM file was sent; upload the whole series as a zip of its files")
    if kind == "zip":
        return read_dicom_zip(source, settings.dicom_zip_max_bytes)
    return read_volume(source)


@contextmanager
def accept_image(
    source: Path, filename: str | None, blobs: BlobStore, settings: DatastoreSettings
) -> Iterator[Accepted]:
    """Validate an uploaded image (see ``read_image``); a DICOM series is stored converted to NIfTI.

    The whole voxel payload is decoded, so a truncated file is refused here, not at inference.
    """
    volume = read_image(source, settings)
    if volume.format == "dicom":
        with blobs.scratch(".nii.gz") as converted:
            write_volume(converted, volume.array, volume.geometry.affine)
            yield Accepted(converted, ".nii.gz", "dicom", volume.geometry, converted=True)
        return
    yield Accepted(source, canonical_extension(sniff(source), filename), volume.format, volume.geometry)


def _check_label_values(array: np.ndarray) -> None:
    if array.dtype.kind in "iub":
        if array.dtype.kind == "i" and array.size and int(array.min()) < 0:
            raise ImageReadError("The label holds negative values; labels are class indices >= 0")
        return
    if array.dtype.kind != "f":
        raise ImageReadError(f"The label has dtype {array.dtype}; an integer label map is needed")
    if not np.all(np.isfinite(array)):
        raise ImageReadError("The label holds NaN or infinite values")
    if np.any(array < 0) or np.any(array != np.round(array)):
        raise ImageReadError("The label holds non-integer or negative values; labels are class indices")


def read_label(source: Path, filename: str | None, image: Geometry, settings: DatastoreSettings) -> Volume:
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
        return Volume(array=array, geometry=image, format="nifti")
    kind = sniff(source)
    if kind not in ("nifti", "nifti-gz", "nrrd"):
        raise ImageFormatError(f"A label must be a NIfTI or NRRD file (or OHIF's raw .bin), not {kind}")
    volume = read_volume(source)
    check_same_grid(
        image,
        volume.geometry,
        spacing_rtol=settings.spacing_tolerance,
        direction_atol=settings.direction_tolerance,
        origin_tol_voxels=settings.origin_tolerance_voxels,
    )
    _check_label_values(volume.array)
    return volume


@contextmanager
def accept_label(
    source: Path,
    filename: str | None,
    image: Geometry,
    blobs: BlobStore,
    settings: DatastoreSettings,
) -> Iterator[Accepted]:
    """Validate a label against its image's grid (see ``read_label``); ``.bin`` is stored as NIfTI."""
    volume = read_label(source, filename, image, settings)
    if filename and filename.lower().endswith(".bin"):
        with blobs.scratch(".nii.gz") as converted:
            write_volume(converted, volume.array, image.affine)
            yield Accepted(converted, ".nii.gz", "nifti", image, converted=True)
        return
    yield Accepted(source, canonical_extension(sniff(source), filename), volume.format, volume.geometry)
