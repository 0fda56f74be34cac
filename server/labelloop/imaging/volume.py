"""Volumes and their geometry; NIfTI and NRRD read and write.

Conventions used everywhere in labelloop:

- ``Volume.array`` has shape ``(I, J, K)``, in the file's own voxel index order (NIfTI's
  i, j, k; NRRD's first, second, third axis; a DICOM series' column, row, slice).
- ``Geometry.affine`` is a ``(4, 4)`` float64 matrix mapping voxel indices ``(i, j, k, 1)``
  to world coordinates in **RAS**, in millimetres (NIfTI's convention; NRRD and DICOM,
  which are LPS, are converted on read and back on write).
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from labelloop.errors import ImageFormatError, ImageReadError
from labelloop.imaging.formats import FileKind, scrub, sniff
from labelloop.imaging.limits import DecodeLimits, DecodeSize
from labelloop.quiet import quiet_warnings

__all__ = [
    "Geometry",
    "Volume",
    "VolumeFormat",
    "declared_size",
    "read_geometry",
    "read_volume",
    "write_volume",
]

VolumeFormat = Literal["nifti", "nrrd", "dicom"]

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])

# NRRD "space" values and the sign that turns each axis into RAS.
_NRRD_SPACES: Mapping[str, tuple[float, float, float]] = {
    "right-anterior-superior": (1.0, 1.0, 1.0),
    "ras": (1.0, 1.0, 1.0),
    "left-anterior-superior": (-1.0, 1.0, 1.0),
    "las": (-1.0, 1.0, 1.0),
    "left-posterior-superior": (-1.0, -1.0, 1.0),
    "lps": (-1.0, -1.0, 1.0),
    "scanner-xyz": (1.0, 1.0, 1.0),
    "3d-right-handed": (1.0, 1.0, 1.0),
}


@dataclass(frozen=True)
class Geometry:
    """A 3D voxel grid in world space.

    Attributes:
        shape: ``(I, J, K)`` voxels.
        affine: ``(4, 4)`` float64, voxel index -> RAS millimetres.
    """

    shape: tuple[int, int, int]
    affine: npt.NDArray[np.float64]

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size along i, j, k in millimetres."""
        norms = np.linalg.norm(self.affine[:3, :3], axis=0)
        return (float(norms[0]), float(norms[1]), float(norms[2]))

    @property
    def direction(self) -> npt.NDArray[np.float64]:
        """``(3, 3)`` unit direction cosines of the i, j, k axes (columns), RAS."""
        norms = np.linalg.norm(self.affine[:3, :3], axis=0)
        norms[norms == 0] = 1.0
        return np.asarray(self.affine[:3, :3] / norms, dtype=np.float64)

    @property
    def origin(self) -> tuple[float, float, float]:
        """World position of voxel (0, 0, 0), RAS millimetres."""
        o = self.affine[:3, 3]
        return (float(o[0]), float(o[1]), float(o[2]))

    def to_json(self) -> dict[str, Any]:
        """A JSON-able description: shape, spacing (mm), RAS affine rows."""
        return {
            "shape": list(self.shape),
            "spacing": [round(s, 6) for s in self.spacing],
            "affine": [[float(v) for v in row] for row in self.affine],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Geometry:
        shape = tuple(int(v) for v in data["shape"])
        if len(shape) != 3:
            raise ValueError("geometry shape must have 3 entries")
        return cls(shape=(shape[0], shape[1], shape[2]), affine=np.asarray(data["affine"], dtype=np.float64))


@dataclass(frozen=True)
class Volume:
    """A 3D image or label.

    Attributes:
        array: ``(I, J, K)`` voxel values (any numeric dtype) in file index order.
        geometry: its grid; ``geometry.shape == array.shape``.
        format: the file format it was read from.
    """

    array: npt.NDArray[Any]
    geometry: Geometry
    format: VolumeFormat = "nifti"


def _squeeze_to_3d(shape: tuple[int, ...], what: str) -> tuple[int, int, int]:
    dims = list(shape)
    while len(dims) > 3 and dims[-1] == 1:
        dims.pop()
    if len(dims) == 2:
        dims.append(1)
    if len(dims) != 3:
        raise ImageReadError(f"{what} has {len(shape)} dimensions {tuple(shape)}; a 3D volume is needed")
    if min(dims) < 1:
        raise ImageReadError(f"{what} has an empty dimension {tuple(shape)}; every axis needs a voxel")
    return (dims[0], dims[1], dims[2])


# ---------------------------------------------------------------- NIfTI


@contextmanager
def _nifti_image(path: Path, kind: FileKind) -> Iterator[Any]:
    """The NIfTI image in ``path``, read by content (scratch files have no extension)."""
    import nibabel as nib

    with gzip.open(path, "rb") if kind == "nifti-gz" else open(path, "rb") as f:
        head = f.read(4)
        f.seek(0)
        sizeof_hdr = int.from_bytes(head, "little") if head else 0
        if sizeof_hdr not in (348, 540):
            sizeof_hdr = int.from_bytes(head, "big")
        cls = nib.Nifti2Image if sizeof_hdr == 540 else nib.Nifti1Image
        holder = nib.FileHolder(fileobj=f)
        try:
            with quiet_warnings():  # nibabel's header complaints; thread-safe (labelloop.quiet)
                img = cls.from_file_map({"header": holder, "image": holder})
        except Exception as exc:  # nibabel raises many types for broken headers
            raise ImageReadError(f"The NIfTI header cannot be read: {scrub(exc, path)}") from exc
        yield img


def _nifti_decode_size(img: Any, geometry: Geometry) -> DecodeSize:
    """What decoding the NIfTI image takes: its dtype, plus float64 when the header scales values."""
    voxels = int(np.prod(geometry.shape))
    itemsize = img.header.get_data_dtype().itemsize
    slope, inter = img.header.get_slope_inter()
    scaled = (slope is not None and slope != 1) or (inter is not None and inter != 0)
    return DecodeSize(voxels, voxels * (itemsize + (8 if scaled else 0)))


def _nifti_geometry(img: Any) -> Geometry:
    shape = _squeeze_to_3d(tuple(int(s) for s in img.shape), "The NIfTI image")
    affine = np.asarray(img.affine, dtype=np.float64)
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise ImageReadError("The NIfTI header has no usable orientation (singular or non-finite affine)")
    return Geometry(shape=shape, affine=affine)


# ---------------------------------------------------------------- NRRD


def _nrrd_geometry(header: Mapping[str, Any]) -> Geometry:
    sizes = tuple(int(s) for s in header.get("sizes", ()))
    if not sizes:
        raise ImageReadError("The NRRD header has no sizes field")
    directions = header.get("space directions")
    if directions is not None:
        rows = np.asarray(directions, dtype=np.float64)
        spatial_axes = [a for a in range(rows.shape[0]) if np.all(np.isfinite(rows[a]))]
        columns = rows[spatial_axes].T  # (space dimension, spatial axes)
    else:
        spacings = header.get("spacings")
        spacing = np.asarray(spacings if spacings is not None else [1.0] * len(sizes), dtype=np.float64)
        spatial_axes = [a for a in range(len(sizes)) if np.isfinite(spacing[a]) or a < 3]
        columns = np.diag(np.where(np.isfinite(spacing[spatial_axes]), spacing[spatial_axes], 1.0))
    nonspatial = [a for a in range(len(sizes)) if a not in spatial_axes]
    if any(sizes[a] != 1 for a in nonspatial):
        raise ImageReadError(
            f"The NRRD file has a non-spatial axis of size {[sizes[a] for a in nonspatial if sizes[a] != 1]} "
            "(multi-channel or multi-layer segmentation); a single 3D volume is needed"
        )
    if columns.shape == (2, 2):  # a 2D image in a 2D space: embed in 3D with a 1 mm slice
        columns = np.pad(columns, ((0, 1), (0, 1)))
        columns[2, 2] = 1.0
    elif columns.shape == (3, 2):  # a single slice in 3D space (as Slicer and ITK write one)
        normal = np.cross(columns[:, 0], columns[:, 1])
        norm = np.linalg.norm(normal)
        columns = np.c_[columns, normal / norm if norm > 0 else normal]
    if columns.shape != (3, 3):
        raise ImageReadError(f"The NRRD file has {columns.shape[1]} spatial axes; a 3D volume is needed")
    origin = np.asarray(header.get("space origin", np.zeros(3)), dtype=np.float64)
    if origin.shape[0] == 2:
        origin = np.append(origin, 0.0)
    space = str(header.get("space", "left-posterior-superior")).lower()
    signs = _NRRD_SPACES.get(space)
    if signs is None:
        raise ImageReadError(f"The NRRD space {space!r} is not supported")
    affine = np.eye(4)
    affine[:3, :3] = columns
    affine[:3, 3] = origin
    affine = np.diag([*signs, 1.0]) @ affine
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise ImageReadError("The NRRD header has no usable orientation (singular or non-finite directions)")
    shape = _squeeze_to_3d(tuple(sizes[a] for a in spatial_axes), "The NRRD image")
    return Geometry(shape=shape, affine=affine)


_NRRD_COMPRESSED = ("gzip", "gz", "bzip2", "bz2")
_CHUNK = 1 << 20


def _nrrd_read_header(path: Path) -> dict[str, Any]:
    """The header of an attached NRRD; a detached one (``data file:``) is refused unread, since its
    data could be any file on this server (``/etc/passwd``, the database)."""
    import nrrd

    try:
        header: dict[str, Any] = nrrd.read_header(str(path))
    except Exception as exc:
        raise ImageReadError(f"The NRRD header cannot be read: {scrub(exc, path)}") from exc
    if "data file" in header or "datafile" in header:
        raise ImageFormatError(
            "Detached NRRD (a header whose 'data file' field names another file) is not accepted; "
            "send one .nrrd file with its data attached"
        )
    return header


def _nrrd_dtype(header: Mapping[str, Any]) -> np.dtype[Any]:
    from nrrd.reader import _determine_datatype

    try:
        dtype: np.dtype[Any] = np.dtype(_determine_datatype(header))
        return dtype
    except Exception as exc:
        raise ImageReadError(f"The NRRD type {header.get('type')!r} is not supported") from exc


def _nrrd_check_inflated(path: Path, header: Mapping[str, Any], expected: int) -> None:
    """Inflate a gzip or bzip2 NRRD's data once, keeping nothing, to check it holds no more than the
    ``expected`` bytes its header declares (pynrrd inflates everything there is before it checks)."""
    import bz2
    import zlib

    import nrrd

    encoding = str(header.get("encoding", "raw")).lower()
    if encoding not in _NRRD_COMPRESSED:
        return
    skip = int(header.get("byte skip", 0) or 0)
    allowed = expected + max(skip, 0)
    gzip = encoding in ("gzip", "gz")
    inflater: Any = zlib.decompressobj(zlib.MAX_WBITS | 16) if gzip else bz2.BZ2Decompressor()
    total = 0
    with open(path, "rb") as fh:
        nrrd.read_header(fh)
        try:
            while not inflater.eof and (data := fh.read(_CHUNK)):
                while True:  # at most _CHUNK bytes out per call: memory stays flat
                    total += len(inflater.decompress(data, _CHUNK))
                    if total > allowed:
                        raise ImageReadError(
                            "The NRRD data inflates to more bytes than its header's sizes and type declare"
                        )
                    if gzip:
                        data = inflater.unconsumed_tail
                        if not data or inflater.eof:
                            break
                    else:
                        if inflater.eof or inflater.needs_input:
                            break
                        data = b""
        except (zlib.error, OSError, EOFError, ValueError) as exc:
            raise ImageReadError(f"The NRRD data cannot be inflated: {exc}") from exc


def declared_size(path: Path) -> DecodeSize:
    """Voxels and peak bytes that reading ``path`` in full takes, from its header alone.

    NIfTI: the stored dtype, plus float64 when the header scales the values; NRRD: the stored type,
    twice (the inflated buffer and the array).

    Raises:
        ImageFormatError: not a NIfTI or NRRD file, or a detached NRRD.
        ImageReadError: a broken header.
    """
    kind = sniff(path)
    if kind in ("nifti", "nifti-gz"):
        with _nifti_image(path, kind) as img:
            return _nifti_decode_size(img, _nifti_geometry(img))
    if kind == "nrrd":
        header = _nrrd_read_header(path)
        voxels = int(np.prod(_nrrd_geometry(header).shape))
        return DecodeSize(voxels, 2 * voxels * _nrrd_dtype(header).itemsize)
    raise ImageFormatError(f"Expected a NIfTI or NRRD file, found {kind}")


# ---------------------------------------------------------------- public


def read_geometry(path: Path) -> tuple[Geometry, VolumeFormat]:
    """The grid of a NIfTI or NRRD file, reading only its header.

    Raises:
        ImageFormatError: not a NIfTI or NRRD file.
        ImageReadError: a broken header, or not a 3D volume.
    """
    kind = sniff(path)
    if kind in ("nifti", "nifti-gz"):
        with _nifti_image(path, kind) as img:
            return _nifti_geometry(img), "nifti"
    if kind == "nrrd":
        return _nrrd_geometry(_nrrd_read_header(path)), "nrrd"
    raise ImageFormatError(f"Expected a NIfTI or NRRD file, found {kind}")


def read_volume(path: Path, limits: DecodeLimits | None = None) -> Volume:
    """Read a whole NIfTI or NRRD volume (a zipped DICOM series goes through ``read_dicom_zip``).

    Returns a ``Volume`` whose ``array`` is ``(I, J, K)`` with the file's dtype (NIfTI scaling
    applied, which may make it float). With ``limits``, the header's declared size is checked first
    (and a compressed NRRD's data is checked not to inflate past it), so a file that declares or
    holds more than the limits is refused before its voxels are read.

    Raises:
        ImageFormatError: not a NIfTI or NRRD file, or a detached NRRD.
        ImageReadError: the file is truncated or inconsistent.
        PayloadTooLargeError: over ``limits``.
    """
    kind = sniff(path)
    if limits is not None and kind == "nrrd":
        limits.check(declared_size(path), "The NRRD file")
    if kind in ("nifti", "nifti-gz"):
        with _nifti_image(path, kind) as img:
            geometry = _nifti_geometry(img)
            if limits is not None:  # from the header just read, before a voxel is
                limits.check(_nifti_decode_size(img, geometry), "The image")
            try:
                data = np.asanyarray(img.dataobj)
            except Exception as exc:
                raise ImageReadError(f"The NIfTI voxel data cannot be read: {scrub(exc, path)}") from exc
        return Volume(array=np.asarray(data).reshape(geometry.shape), geometry=geometry, format="nifti")
    if kind == "nrrd":
        import nrrd

        header = _nrrd_read_header(path)
        geometry = _nrrd_geometry(header)
        _nrrd_check_inflated(path, header, int(np.prod(geometry.shape)) * _nrrd_dtype(header).itemsize)
        try:
            data, header = nrrd.read(str(path), index_order="F")
        except Exception as exc:
            raise ImageReadError(f"The NRRD file cannot be read: {scrub(exc, path)}") from exc
        geometry = _nrrd_geometry(header)
        if int(np.prod(data.shape)) != int(np.prod(geometry.shape)):
            raise ImageReadError("The NRRD voxel data does not match its header's sizes")
        return Volume(array=np.asarray(data).reshape(geometry.shape), geometry=geometry, format="nrrd")
    raise ImageFormatError(f"Expected a NIfTI or NRRD file, found {kind}")


def write_volume(path: Path, array: npt.NDArray[Any], affine: npt.NDArray[np.float64]) -> None:
    """Write an ``(I, J, K)`` array with a RAS ``affine`` as NIfTI or NRRD, chosen by ``path``'s suffix.

    ``.nii.gz``/``.nii`` -> NIfTI-1 with sform and qform set; ``.nrrd``/``.seg.nrrd`` -> gzip NRRD
    in LPS space. The caller chooses the dtype.
    """
    name = path.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        import nibabel as nib

        img = nib.Nifti1Image(np.asarray(array), np.asarray(affine, dtype=np.float64))
        img.set_sform(affine, code=1)
        img.set_qform(affine, code=1)
        img.header.set_xyzt_units("mm", "sec")
        nib.save(img, str(path))
        return
    if name.endswith(".nrrd"):
        import nrrd

        lps = _LPS_TO_RAS @ np.asarray(affine, dtype=np.float64)
        header = {
            "space": "left-posterior-superior",
            "space directions": lps[:3, :3].T,
            "space origin": lps[:3, 3],
            "kinds": ["domain", "domain", "domain"],
            "encoding": "gzip",
        }
        nrrd.write(str(path), np.asarray(array), header=header, index_order="F", compression_level=1)
        return
    raise ImageFormatError(f"Cannot write {path.name}: use .nii.gz, .nii or .nrrd")
