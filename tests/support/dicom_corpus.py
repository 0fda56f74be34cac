"""Real-world-shaped DICOM series and SEGs, built by the tests (pydicom, highdicom; no downloads).

The PACS path meets what scanners and other tools write, not only what ``volume_to_series``
writes: series that lack optional attributes, MR studies with several orientations, oblique
planes, multi-frame (Enhanced) instances, missing and unevenly spaced slices, compressed
transfer syntaxes, localizers mixed into a series, and SEGs written by OHIF or dcmqi. This
module derives each of those from the single-frame series of ``tests.support.dicom_series``.

Conventions are those of ``tests.support.dicom_series`` (and ``labelloop.imaging``):

- a ``Volume`` array is ``(I, J, K)``, its affine maps voxel ``(i, j, k)`` to **RAS** mm;
- a DICOM frame is ``(Rows, Columns) = (J, I)``; geometry attributes are in **LPS** mm;
- a label map handed to a SEG builder is ``(I, J, K)`` with ``k`` in *reading order*: the
  source's slices sorted by their position along ``row_dir x col_dir`` (what
  ``reading_order(source)`` gives for an evenly spaced series; see ``in_reading_order``).

Every series builder returns new datasets (deep copies; the inputs are never changed), each
with a file meta and a 128-byte preamble, ready for STOW-RS. Unless ``new_uids=False``, a
derived series gets a fresh ``SeriesInstanceUID`` and fresh ``SOPInstanceUID`` values (study
and frame of reference kept), so it can be stored next to its source in one Orthanc.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

import highdicom as hd
import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels.decoders.base import get_decoder
from pydicom.pixels.encoders.base import get_encoder
from pydicom.pixels.utils import pack_bits
from pydicom.sequence import Sequence as DicomSequence
from pydicom.sr.coding import Code
from pydicom.uid import (
    JPEG2000,
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    DeflatedExplicitVRLittleEndian,
    EnhancedCTImageStorage,
    EnhancedMRImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
    generate_uid,
)
from pydicom.valuerep import format_number_as_ds

from labelloop.imaging import Geometry, Volume
from tests.support.dicom_series import volume_to_series

__all__ = [
    "DCMQI_SEGMENTS",
    "DECODABLE_TRANSFER_SYNTAXES",
    "ENCODABLE_TRANSFER_SYNTAXES",
    "FRAME_OF_REFERENCE",
    "LOSSLESS_TRANSFER_SYNTAXES",
    "TYPE2_OPTIONAL",
    "Orientation",
    "compressed",
    "dcmqi_seg",
    "drop_slices",
    "enhanced",
    "fractional_seg",
    "in_reading_order",
    "jittered",
    "legacy_enhanced",
    "mr_study",
    "mr_volume",
    "ohif_bitmap_seg",
    "ohif_labelmap_seg",
    "overlapping_seg",
    "rotated",
    "small_volume",
    "soft_fractions",
    "uneven",
    "with_localizer",
    "without_attributes",
    "without_frame_of_reference",
]

Orientation = Literal["axial", "sagittal", "coronal"]

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])  # its own inverse

#: Top-level attributes real series often lack altogether (Type 2 written by no one, or Type 3).
#: ``without_attributes`` deletes them; a reader must not need any of them.
TYPE2_OPTIONAL: tuple[str, ...] = (
    "PatientName",
    "PatientBirthDate",
    "PatientSex",
    "ReferringPhysicianName",
    "StudyDate",
    "StudyTime",
    "StudyID",
    "AccessionNumber",
    "StudyDescription",
    "SeriesNumber",
    "SeriesDescription",
    "SeriesDate",
    "SeriesTime",
    "PatientPosition",
    "PositionReferenceIndicator",
    "Manufacturer",
    "InstanceNumber",
    "ContentDate",
    "ContentTime",
    "SliceThickness",
    "SliceLocation",
    "KVP",
    "AcquisitionNumber",
)

#: The Type 1 attribute whose absence a reader must refuse (``without_frame_of_reference``).
FRAME_OF_REFERENCE: tuple[str, ...] = ("FrameOfReferenceUID",)

#: Syntaxes pydicom writes without a pixel encoder (the pixel bytes stay native).
_NATIVE_SYNTAXES: tuple[UID, ...] = (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
)
_LOSSLESS_ENCAPSULATED: tuple[UID, ...] = (RLELossless, JPEGLSLossless, JPEG2000Lossless)
_LOSSY_ENCAPSULATED: tuple[UID, ...] = (JPEGLSNearLossless, JPEG2000)


def _can_encode(uid: UID) -> bool:
    encoder = get_encoder(uid)
    return encoder is not None and bool(encoder.is_available)


#: Lossless syntaxes ``compressed`` can produce with the installed packages: the native ones,
#: RLE Lossless (pydicom itself), and JPEG-LS / JPEG 2000 Lossless when pyjpegls / pylibjpeg
#: (with openjpeg) are installed.
LOSSLESS_TRANSFER_SYNTAXES: tuple[UID, ...] = _NATIVE_SYNTAXES + tuple(
    uid for uid in _LOSSLESS_ENCAPSULATED if _can_encode(uid)
)

#: Everything ``compressed`` can produce, lossy ones (JPEG-LS near-lossless, JPEG 2000) included.
ENCODABLE_TRANSFER_SYNTAXES: tuple[UID, ...] = LOSSLESS_TRANSFER_SYNTAXES + tuple(
    uid for uid in _LOSSY_ENCAPSULATED if _can_encode(uid)
)


def _decodable() -> tuple[UID, ...]:
    from pydicom.pixels.decoders.base import _PIXEL_DATA_DECODERS

    found = []
    for uid in sorted(_PIXEL_DATA_DECODERS):
        decoder = get_decoder(UID(uid))
        if decoder is not None and decoder.is_available:
            found.append(UID(uid))
    return tuple(found)


#: Transfer syntaxes whose pixel data pydicom can decode with the installed plugins.
DECODABLE_TRANSFER_SYNTAXES: tuple[UID, ...] = _decodable()

#: dcmqi's segments for ``dcmqi_seg``: ``(label value, segment label)`` in segment-number order.
#: Segment 1 is liver (value 2), segment 2 spleen (value 1): numbered unlike the app's values,
#: labelled with another case and a trailing space (pydicom strips that one when it reads LO).
DCMQI_SEGMENTS: tuple[tuple[int, str], ...] = ((2, "Liver"), (1, "spleen "))

#: SNOMED CT types dcmqi's JSON templates give these structures (keyed by lower-cased label).
_PROPERTY_TYPES: dict[str, Code] = {
    "liver": Code("10200004", "SCT", "Liver"),
    "spleen": Code("78961009", "SCT", "Spleen"),
    "kidney": Code("64033007", "SCT", "Kidney"),
    "pancreas": Code("15776009", "SCT", "Pancreas"),
}
_ANATOMICAL_STRUCTURE = Code("123037004", "SCT", "Anatomical Structure")
_TISSUE = Code("85756007", "SCT", "Tissue")
#: dcmjs (OHIF) still writes the retired SNOMED RT code for "Tissue" as category and type.
_OHIF_TISSUE = Code("T-D0050", "SRT", "Tissue")


def _ds(value: float) -> str:
    """A decimal string of at most 16 characters, as DICOM's DS allows."""
    return format_number_as_ds(float(value))


def _floats(ds: Dataset, keyword: str) -> npt.NDArray[np.float64]:
    return np.asarray([float(v) for v in ds[keyword].value], dtype=np.float64)


def _part10(ds: Dataset) -> Dataset:
    """``ds`` with a preamble and a file meta that names its SOP class and instance (in place)."""
    ds.preamble = b"\0" * 128
    meta = getattr(ds, "file_meta", None) or FileMetaDataset()
    meta.TransferSyntaxUID = getattr(meta, "TransferSyntaxUID", None) or ExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.ImplementationClassUID = getattr(meta, "ImplementationClassUID", None) or PYDICOM_IMPLEMENTATION_UID
    ds.file_meta = meta
    return ds


def _copies(datasets: Iterable[Dataset], new_uids: bool) -> list[Dataset]:
    """Deep copies; with ``new_uids`` one fresh SeriesInstanceUID for all, a fresh SOP UID each."""
    copies = [copy.deepcopy(ds) for ds in datasets]
    if new_uids:
        series_uid = generate_uid()
        for ds in copies:
            ds.SeriesInstanceUID = series_uid
            ds.SOPInstanceUID = generate_uid()
    return [_part10(ds) for ds in copies]


def _normal(ds: Dataset) -> npt.NDArray[np.float64]:
    orientation = _floats(ds, "ImageOrientationPatient")
    return np.cross(orientation[:3], orientation[3:])


def in_reading_order(source: Sequence[Dataset]) -> list[Dataset]:
    """``source``'s image slices sorted by position along the first one's ``row_dir x col_dir``.

    The same order as ``tests.support.dicom_series.reading_order`` (i.e. ``k`` of
    ``read_dicom_series``) for an evenly spaced series, but computed here and without its
    checks, so that series with gaps or uneven spacing (``drop_slices``, ``uneven``) can be
    segmented too. Slices without ``ImagePositionPatient`` are left out.
    """
    slices = [ds for ds in source if "ImagePositionPatient" in ds and "ImageOrientationPatient" in ds]
    if not slices:
        raise ValueError("the source holds no image slices with a position and an orientation")
    normal = _normal(slices[0])
    return sorted(slices, key=lambda ds: float(_floats(ds, "ImagePositionPatient") @ normal))


# ------------------------------------------------------------------ volumes


def small_volume(
    shape: tuple[int, int, int] = (24, 20, 12),
    spacing: tuple[float, float, float] = (0.8, 0.9, 2.5),
    *,
    direction: npt.NDArray[np.float64] | None = None,
    origin: tuple[float, float, float] = (100.0, 80.0, -40.0),
    seed: int = 0,
) -> Volume:
    """A CT-like int16 ``Volume`` of ``shape`` ``(I, J, K)``: random values in ``[-1000, 1000)``.

    ``spacing`` is mm along i, j, k; ``direction`` the ``(3, 3)`` RAS unit columns of i, j, k
    (default ``diag(-1, -1, 1)``: LPS-aligned axial slices); ``origin`` the RAS mm of voxel 0.
    """
    rng = np.random.default_rng(seed)
    array = rng.integers(-1000, 1000, size=shape, dtype=np.int16)
    axes = np.diag([-1.0, -1.0, 1.0]) if direction is None else np.asarray(direction, dtype=np.float64)
    affine = np.eye(4)
    affine[:3, :3] = axes @ np.diag(spacing)
    affine[:3, 3] = origin
    return Volume(array=array, geometry=Geometry(shape=shape, affine=affine))


def _axis_rotation(axis: str, radians: float) -> npt.NDArray[np.float64]:
    c, s = np.cos(radians), np.sin(radians)
    if axis == "x":
        return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    if axis == "y":
        return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    if axis == "z":
        return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    raise ValueError(f"a rotation axis is x, y or z, not {axis!r}")


def rotated(volume: Volume, degrees: float = 20.0, axes: str = "xy") -> Volume:
    """``volume`` (same array) with its affine rotated by ``degrees`` about each RAS axis in ``axes``.

    The rotations (applied in the order of ``axes``, e.g. ``"xy"``: about x, then about y) turn
    the grid rigidly about its centre voxel, so the i and j axes stay orthogonal (DICOM can
    hold the planes), spacings and handedness are kept, and the grid stays where it was.
    """
    rotation = np.eye(3)
    for axis in axes:
        rotation = _axis_rotation(axis, np.deg2rad(degrees)) @ rotation
    affine = np.asarray(volume.geometry.affine, dtype=np.float64)
    centre = affine @ np.array([*((np.asarray(volume.array.shape) - 1) / 2.0), 1.0])
    turn = np.eye(4)
    turn[:3, :3] = rotation
    turn[:3, 3] = centre[:3] - rotation @ centre[:3]
    return Volume(
        array=volume.array,
        geometry=Geometry(shape=volume.geometry.shape, affine=turn @ affine),
        format=volume.format,
    )


# LPS unit vectors (row_dir, col_dir) of each orientation; the slice normal is row x col.
_ORIENTATIONS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "axial": ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0)),  # normal +z (feet to head)
    "sagittal": ((0.0, 1.0, 0.0), (0.0, 0.0, -1.0)),  # normal -x (left to right)
    "coronal": ((1.0, 0.0, 0.0), (0.0, 0.0, -1.0)),  # normal +y (anterior to posterior)
}


def mr_volume(
    orientation: Orientation,
    shape: tuple[int, int, int] = (24, 20, 12),
    spacing: tuple[float, float, float] = (0.9, 0.9, 3.0),
    *,
    centre: tuple[float, float, float] = (0.0, 0.0, 0.0),
) -> Volume:
    """An MR-like int16 ``Volume`` with ``orientation``'s slices, centred on ``centre`` (RAS mm).

    ``shape`` is ``(I, J, K)`` = (columns, rows, slices) and ``spacing`` mm along them. The
    values are one function of the world position (a bright ellipsoid of about 1800 on a 300
    background plus a gentle left-right ramp), so every orientation images the same phantom.
    The affine is right-handed: ``k`` is the reading order.
    """
    row_lps, col_lps = (np.asarray(v) for v in _ORIENTATIONS[orientation])
    axes_lps = np.stack([row_lps, col_lps, np.cross(row_lps, col_lps)], axis=1)
    affine = np.eye(4)
    affine[:3, :3] = _LPS_TO_RAS[:3, :3] @ axes_lps @ np.diag(spacing)
    half = (np.asarray(shape, dtype=np.float64) - 1) / 2.0
    affine[:3, 3] = np.asarray(centre) - affine[:3, :3] @ half
    ijk = np.stack(np.meshgrid(*(np.arange(n) for n in shape), indexing="ij"), axis=-1).astype(np.float64)
    ras = ijk @ affine[:3, :3].T + affine[:3, 3] - np.asarray(centre)
    radii = np.array([8.0, 7.0, 12.0])
    inside = np.sum((ras / radii) ** 2, axis=-1)
    array = np.rint(300 + 1500 * np.exp(-inside) + 5 * ras[..., 0]).astype(np.int16)
    return Volume(array=array, geometry=Geometry(shape=shape, affine=affine))


def mr_study(
    *,
    patient_id: str,
    orientations: Sequence[Orientation] = ("axial", "sagittal", "coronal"),
    shape: tuple[int, int, int] = (24, 20, 12),
    spacing: tuple[float, float, float] = (0.9, 0.9, 3.0),
) -> dict[Orientation, list[Dataset]]:
    """One MR study: a single-frame MR Image Storage series per orientation (``mr_volume``).

    All series share ``StudyInstanceUID`` and ``FrameOfReferenceUID`` and image the same
    phantom; each has its own ``SeriesInstanceUID``, ``SeriesNumber`` (1, 2, ...) and
    ``SeriesDescription`` (``"t1_<orientation>"``), and ``ImageType`` ``ORIGINAL\\PRIMARY\\M\\ND``.
    """
    study_uid, frame_uid = generate_uid(), generate_uid()
    study: dict[Orientation, list[Dataset]] = {}
    for number, orientation in enumerate(orientations, start=1):
        datasets = volume_to_series(
            mr_volume(orientation, shape, spacing),
            patient_id=patient_id,
            study_uid=study_uid,
            frame_of_reference_uid=frame_uid,
            modality="MR",
            series_number=number,
            series_description=f"t1_{orientation}",
        )
        for ds in datasets:
            ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
        study[orientation] = datasets
    return study


# ------------------------------------------------------------------ series variants


def without_attributes(
    datasets: Iterable[Dataset], keywords: Iterable[str] = TYPE2_OPTIONAL, *, new_uids: bool = True
) -> list[Dataset]:
    """Copies of ``datasets`` with the top-level attributes ``keywords`` deleted (not emptied).

    Attributes a dataset does not hold are skipped. Nested ones (e.g. in functional groups of
    an Enhanced instance) are kept.
    """
    copies = _copies(datasets, new_uids)
    names = tuple(keywords)
    for ds in copies:
        for keyword in names:
            if keyword in ds:
                delattr(ds, keyword)
    return copies


def without_frame_of_reference(datasets: Iterable[Dataset], *, new_uids: bool = True) -> list[Dataset]:
    """Copies without the Type 1 ``FrameOfReferenceUID``: a series a reader must refuse."""
    return without_attributes(datasets, FRAME_OF_REFERENCE, new_uids=new_uids)


def drop_slices(
    datasets: Sequence[Dataset], indices: Iterable[int], *, new_uids: bool = True
) -> list[Dataset]:
    """Copies of ``datasets`` without the slices at ``indices`` (positions in ``datasets``).

    With ``volume_to_series`` output (``k`` order) dropping an inner ``k`` leaves a gap of two
    steps between its neighbours: an unevenly spaced series as a PACS has it when an instance
    never arrived. The remaining slices keep their positions and InstanceNumbers.
    """
    gone = {int(i) % len(datasets) for i in indices}
    return _copies((ds for n, ds in enumerate(datasets) if n not in gone), new_uids)


def uneven(
    datasets: Sequence[Dataset], shifts: Mapping[int, float], *, new_uids: bool = True
) -> list[Dataset]:
    """Copies with slice ``n``'s position moved ``shifts[n]`` mm along the slice normal.

    ``n`` indexes ``datasets``; ``ImagePositionPatient`` and ``SliceLocation`` follow. Shifts
    of a fraction of the step make unevenly spaced slices (positive: towards ``row x col``).
    """
    copies = _copies(datasets, new_uids)
    for n, shift in shifts.items():
        ds = copies[n]
        normal = _normal(ds)
        position = _floats(ds, "ImagePositionPatient") + float(shift) * normal
        ds.ImagePositionPatient = [_ds(v) for v in position]
        if "SliceLocation" in ds:
            ds.SliceLocation = _ds(float(position @ normal))
    return copies


def jittered(
    datasets: Sequence[Dataset], max_mm: float = 0.005, *, seed: int = 0, new_uids: bool = True
) -> list[Dataset]:
    """``uneven`` with every slice moved a random ``[-max_mm, max_mm]`` along the normal.

    The default (a few micrometres) is the rounding noise scanners' positions carry, which a
    reader must accept as even spacing; larger values make a series a reader must call uneven.
    """
    rng = np.random.default_rng(seed)
    shifts = {n: float(v) for n, v in enumerate(rng.uniform(-max_mm, max_mm, size=len(datasets)))}
    return uneven(datasets, shifts, new_uids=new_uids)


def compressed(
    datasets: Iterable[Dataset],
    transfer_syntax: str = RLELossless,
    *,
    jls_error: int = 2,
    new_uids: bool = True,
) -> list[Dataset]:
    """Copies re-encoded in ``transfer_syntax`` (one of ``ENCODABLE_TRANSFER_SYNTAXES``).

    Native syntaxes (Implicit VR / Deflated Explicit VR Little Endian) only change the file
    meta's TransferSyntaxUID: pydicom writes them so. Encapsulated ones are encoded with
    ``Dataset.compress`` (RLE Lossless by pydicom, JPEG-LS by pyjpegls, JPEG 2000 by pylibjpeg),
    one fragment per frame; JPEG-LS near-lossless uses ``jls_error`` (max abs error in stored
    values) and, like JPEG 2000 (lossy), sets ``LossyImageCompression = "01"``.

    Raises:
        ValueError: no installed package can encode ``transfer_syntax``.
    """
    uid = UID(transfer_syntax)
    if uid not in ENCODABLE_TRANSFER_SYNTAXES:
        raise ValueError(f"{uid.name or uid} cannot be encoded with the installed packages")
    copies = _copies(datasets, new_uids)
    for ds in copies:
        if uid in _NATIVE_SYNTAXES:
            ds.file_meta.TransferSyntaxUID = uid
            continue
        kwargs: dict[str, Any] = {}
        if uid == JPEGLSNearLossless:
            kwargs["jls_error"] = jls_error
        elif uid == JPEG2000:
            kwargs["j2k_cr"] = [10]
        ds.compress(uid, generate_instance_uid=False, **kwargs)
        if uid in _LOSSY_ENCAPSULATED:
            ds.LossyImageCompression = "01"
            ds.LossyImageCompressionMethod = "ISO_14495_1" if uid == JPEGLSNearLossless else "ISO_15444_1"
    return copies


def _plane(ds: Dataset) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], tuple[float, float]]:
    orientation = _floats(ds, "ImageOrientationPatient")
    spacing = _floats(ds, "PixelSpacing")
    return orientation[:3], orientation[3:], (float(spacing[0]), float(spacing[1]))


def with_localizer(
    datasets: Sequence[Dataset],
    *,
    count: int = 2,
    rows: int = 28,
    columns: int = 32,
    spacing: float = 1.5,
    seed: int = 0,
    new_uids: bool = True,
) -> list[Dataset]:
    """``count`` (1 or 2) localizer images, then copies of ``datasets``, all in one series.

    Each localizer copies the first slice's attributes, with its own SOPInstanceUID,
    ``ImageType = ORIGINAL\\PRIMARY\\LOCALIZER``, ``rows`` x ``columns`` random int16 pixels
    (unlike the series' Rows/Columns), ``PixelSpacing = spacing`` mm, ``SliceThickness`` 10
    and an orientation orthogonal to the series' planes: the first spans the series' row
    direction and normal, the second its column direction and normal; both through the
    series' centre. InstanceNumbers continue after the series'.
    """
    if count not in (1, 2):
        raise ValueError("one or two localizers")
    series = _copies(datasets, new_uids)
    ordered = in_reading_order(series)
    row_dir, col_dir, (row_spacing, col_spacing) = _plane(ordered[0])
    normal = np.cross(row_dir, col_dir)
    first = _floats(ordered[0], "ImagePositionPatient")
    last = _floats(ordered[-1], "ImagePositionPatient")
    centre = (first + last) / 2.0
    centre = centre + row_dir * col_spacing * (int(ordered[0].Columns) - 1) / 2.0
    centre = centre + col_dir * row_spacing * (int(ordered[0].Rows) - 1) / 2.0
    rng = np.random.default_rng(seed)
    numbers = [int(ds.InstanceNumber) for ds in series if "InstanceNumber" in ds]
    next_number = max(numbers, default=0) + 1
    localizers = []
    for n, (loc_row, loc_col) in enumerate([(row_dir, normal), (col_dir, normal)][:count]):
        ds = copy.deepcopy(ordered[0])
        ds.SOPInstanceUID = generate_uid()
        ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
        ds.ImageOrientationPatient = [_ds(v) for v in (*loc_row, *loc_col)]
        position = centre - (loc_row * (columns - 1) + loc_col * (rows - 1)) * spacing / 2.0
        ds.ImagePositionPatient = [_ds(v) for v in position]
        ds.SliceLocation = _ds(float(position @ np.cross(loc_row, loc_col)))
        ds.PixelSpacing = [_ds(spacing), _ds(spacing)]
        ds.SliceThickness = "10"
        ds.Rows, ds.Columns = rows, columns
        ds.InstanceNumber = next_number + n
        pixels = rng.integers(-1000, 1000, size=(rows, columns), dtype=np.int16)
        ds.PixelData = pixels.astype("<i2").tobytes()
        localizers.append(_part10(ds))
    return localizers + series


# ------------------------------------------------------------------ multi-frame


def legacy_enhanced(datasets: Sequence[Dataset], *, new_uids: bool = True) -> list[Dataset]:
    """One Legacy Converted Enhanced CT or MR instance (highdicom) of the single-frame series.

    SOP class 1.2.840.10008.5.1.4.1.1.2.2 (CT) or .4.4 (MR), by the datasets' Modality;
    ``NumberOfFrames`` = the slice count. Shared functional groups: PlaneOrientationSequence,
    PixelMeasuresSequence, PixelValueTransformationSequence, FrameVOILUTSequence,
    CT/MRImageFrameTypeSequence, UnassignedSharedConvertedAttributesSequence. Per frame:
    FrameContentSequence, PlanePositionSequence, ConversionSourceAttributesSequence (the
    source SOP instance), UnassignedPerFrameConvertedAttributesSequence. highdicom orders the
    frames itself (along the slice normal). The copies handed to highdicom get a
    WindowCenter/WindowWidth from their pixel range (it would otherwise leave the VOI empty).
    A one-element list, for STOW like the other builders; ``new_uids=False`` keeps the
    SeriesInstanceUID.
    """
    sources = [copy.deepcopy(ds) for ds in datasets]
    stored = np.concatenate([np.asarray(ds.pixel_array).ravel() for ds in sources])
    slope = float(getattr(sources[0], "RescaleSlope", 1) or 1)
    intercept = float(getattr(sources[0], "RescaleIntercept", 0) or 0)
    lo, hi = float(stored.min()) * slope + intercept, float(stored.max()) * slope + intercept
    for ds in sources:
        ds.WindowCenter = _ds((lo + hi) / 2)
        ds.WindowWidth = _ds(max(hi - lo, 1.0))
    modality = str(sources[0].Modality)
    classes = {"CT": hd.legacy.LegacyConvertedEnhancedCTImage, "MR": hd.legacy.LegacyConvertedEnhancedMRImage}
    if modality not in classes:
        raise ValueError(f"a CT or MR series is needed, not {modality!r}")
    series_number = int(getattr(sources[0], "SeriesNumber", 1) or 1)
    image = classes[modality](
        sources,
        series_instance_uid=generate_uid() if new_uids else str(sources[0].SeriesInstanceUID),
        series_number=series_number,
        sop_instance_uid=generate_uid(),
        instance_number=1,
    )
    return [_part10(image)]


def _item(**attributes: Any) -> Dataset:
    item = Dataset()
    for keyword, value in attributes.items():
        setattr(item, keyword, value)
    return item


def enhanced(datasets: Sequence[Dataset], *, shuffle_seed: int | None = 0) -> list[Dataset]:
    """One hand-made Enhanced CT (1.2.840.10008.5.1.4.1.1.2.1) or MR (.4.1) Image instance.

    What a scanner writes, not a legacy conversion: ``ImageType`` ORIGINAL\\PRIMARY\\AXIAL\\NONE
    (CT) or ORIGINAL\\PRIMARY\\VOLUME\\NONE (MR), the Enhanced image module's Type 1 attributes,
    a stack dimension (``DimensionIndexSequence``: StackID, InStackPositionNumber), and:

    - shared functional groups: PixelMeasuresSequence (PixelSpacing, SliceThickness,
      SpacingBetweenSlices), PlaneOrientationSequence, PixelValueTransformationSequence
      (RescaleSlope/Intercept/Type), FrameVOILUTSequence, CT/MRImageFrameTypeSequence;
    - per frame: FrameContentSequence (StackID "1", InStackPositionNumber = 1-based reading
      order, DimensionIndexValues), PlanePositionSequence (the source slice's position);
    - frames in a shuffled order (``shuffle_seed``; ``None`` keeps reading order), so a
      reader must sort them by position. No ``ImagePositionPatient`` at the top level.

    Patient, study, series, frame of reference and equipment attributes are those of the
    first dataset; the SeriesInstanceUID and SOPInstanceUID are new. A one-element list.
    """
    ordered = in_reading_order(datasets)
    first = ordered[0]
    modality = str(first.Modality)
    if modality not in ("CT", "MR"):
        raise ValueError(f"a CT or MR series is needed, not {modality!r}")
    order = list(range(len(ordered)))
    if shuffle_seed is not None and len(order) > 1:
        rng = np.random.default_rng(shuffle_seed)
        while order == sorted(order):
            order = [int(i) for i in rng.permutation(len(ordered))]

    ds = Dataset()
    for element in first:
        if element.tag.group in (0x0008, 0x0010, 0x0018, 0x0020) and element.keyword not in (
            "ImageType",
            "SOPClassUID",
            "SOPInstanceUID",
            "ImagePositionPatient",
            "ImageOrientationPatient",
            "SliceThickness",
            "SliceLocation",
            "InstanceNumber",
            "SourceImageSequence",
        ):
            ds.add(copy.deepcopy(element))
    ds.SOPClassUID = EnhancedCTImageStorage if modality == "CT" else EnhancedMRImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.InstanceNumber = 1
    date, time = str(getattr(first, "ContentDate", "20240101")), str(getattr(first, "ContentTime", "120000"))
    ds.ContentDate, ds.ContentTime = date, time
    ds.AcquisitionDateTime = f"{date}{time}"
    ds.AcquisitionNumber = 1
    ds.ContentQualification = "PRODUCT"
    third = "AXIAL" if modality == "CT" else "VOLUME"
    ds.ImageType = ["ORIGINAL", "PRIMARY", third, "NONE"]
    ds.PixelPresentation = "MONOCHROME"
    ds.VolumetricProperties = "VOLUME"
    ds.VolumeBasedCalculationTechnique = "NONE"
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "00"
    ds.PresentationLUTShape = "IDENTITY"
    ds.ManufacturerModelName = "labelloop corpus"
    ds.DeviceSerialNumber = "0"
    ds.SoftwareVersions = "1"
    if modality == "MR":
        ds.ComplexImageComponent = "MAGNITUDE"
        ds.AcquisitionContrast = "T1"
        ds.ResonantNucleus = "1H"
        ds.KSpaceFiltering = "NONE"
        ds.MagneticFieldStrength = "3"
        ds.ApplicableSafetyStandardAgency = "IEC"
        ds.ImageComments = "labelloop corpus"
    # Image Pixel
    for keyword in (
        "SamplesPerPixel",
        "PhotometricInterpretation",
        "Rows",
        "Columns",
        "BitsAllocated",
        "BitsStored",
        "HighBit",
        "PixelRepresentation",
    ):
        setattr(ds, keyword, getattr(first, keyword))
    ds.NumberOfFrames = len(ordered)

    # Multi-frame Dimension: a stack, indexed by in-stack position.
    organization = generate_uid()
    ds.DimensionOrganizationSequence = [_item(DimensionOrganizationUID=organization)]
    ds.DimensionOrganizationType = "3D"
    ds.DimensionIndexSequence = [
        _item(
            DimensionOrganizationUID=organization,
            DimensionIndexPointer=0x00209056,  # StackID
            FunctionalGroupPointer=0x00209111,  # FrameContentSequence
            DimensionDescriptionLabel="Stack ID",
        ),
        _item(
            DimensionOrganizationUID=organization,
            DimensionIndexPointer=0x00209057,  # InStackPositionNumber
            FunctionalGroupPointer=0x00209111,
            DimensionDescriptionLabel="In-Stack Position Number",
        ),
    ]

    _, _, pixel_spacing = _plane(first)
    positions = [_floats(s, "ImagePositionPatient") for s in ordered]
    normal = _normal(first)
    gaps = np.diff([float(p @ normal) for p in positions])
    between = float(np.median(gaps)) if len(gaps) else float(getattr(first, "SliceThickness", 1) or 1)
    thickness = str(getattr(first, "SliceThickness", "") or _ds(between))
    frame_type = _item(
        FrameType=["ORIGINAL", "PRIMARY", third, "NONE"],
        PixelPresentation="MONOCHROME",
        VolumetricProperties="VOLUME",
        VolumeBasedCalculationTechnique="NONE",
    )
    if modality == "MR":
        frame_type.ComplexImageComponent = "MAGNITUDE"
        frame_type.AcquisitionContrast = "T1"
    transformation = _item(
        RescaleIntercept=str(getattr(first, "RescaleIntercept", "0")),
        RescaleSlope=str(getattr(first, "RescaleSlope", "1")),
        RescaleType="HU" if modality == "CT" else "US",
    )
    stored = np.stack([np.asarray(s.pixel_array) for s in ordered])
    slope, intercept = float(transformation.RescaleSlope), float(transformation.RescaleIntercept)
    lo, hi = float(stored.min()) * slope + intercept, float(stored.max()) * slope + intercept
    shared = _item(
        PixelMeasuresSequence=[
            _item(
                PixelSpacing=[_ds(pixel_spacing[0]), _ds(pixel_spacing[1])],
                SliceThickness=thickness,
                SpacingBetweenSlices=_ds(abs(between)),
            )
        ],
        PlaneOrientationSequence=[_item(ImageOrientationPatient=list(first.ImageOrientationPatient))],
        PixelValueTransformationSequence=[transformation],
        FrameVOILUTSequence=[_item(WindowCenter=_ds((lo + hi) / 2), WindowWidth=_ds(max(hi - lo, 1.0)))],
    )
    setattr(
        shared, "CTImageFrameTypeSequence" if modality == "CT" else "MRImageFrameTypeSequence", [frame_type]
    )
    ds.SharedFunctionalGroupsSequence = [shared]

    per_frame = []
    for k in order:
        source = ordered[k]
        per_frame.append(
            _item(
                FrameContentSequence=[
                    _item(
                        FrameAcquisitionNumber=1,
                        FrameReferenceDateTime=f"{date}{time}",
                        FrameAcquisitionDateTime=f"{date}{time}",
                        FrameAcquisitionDuration=0.0,
                        StackID="1",
                        InStackPositionNumber=k + 1,
                        DimensionIndexValues=[1, k + 1],
                    )
                ],
                PlanePositionSequence=[_item(ImagePositionPatient=list(source.ImagePositionPatient))],
            )
        )
    ds.PerFrameFunctionalGroupsSequence = per_frame
    dtype = np.dtype("<i2" if int(first.PixelRepresentation) else "<u2")
    ds.PixelData = np.ascontiguousarray(stored[order]).astype(dtype).tobytes()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return [_part10(ds)]


# ------------------------------------------------------------------ SEGs by other tools


def _check_label(label: npt.NDArray[Any], ordered: Sequence[Dataset]) -> None:
    expected = (int(ordered[0].Columns), int(ordered[0].Rows), len(ordered))
    if tuple(label.shape[:3]) != expected:
        raise ValueError(f"the label's shape {label.shape} does not match the series' (I, J, K) {expected}")


def _frames(volume: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """``(I, J, K[, S])`` -> ``(K, J, I[, S])``: highdicom's (frames, rows, columns[, segments])."""
    axes = (2, 1, 0, *range(3, volume.ndim))
    return np.ascontiguousarray(np.transpose(volume, axes))


def _description(
    number: int, label: str, category: Code, kind: Code, algorithm: str = "MANUAL"
) -> hd.seg.SegmentDescription:
    return hd.seg.SegmentDescription(
        segment_number=number,
        segment_label=label,
        segmented_property_category=category,
        segmented_property_type=kind,
        algorithm_type=algorithm,
        algorithm_identification=(
            hd.AlgorithmIdentificationSequence(
                name="corpus", version="1", family=Code("123109", "DCM", "Manual Processing")
            )
            if algorithm != "MANUAL"
            else None
        ),
    )


def _descriptions(
    values: Sequence[int], names: Mapping[int, str] | None, *, ohif: bool
) -> list[hd.seg.SegmentDescription]:
    """Segments 1..N for ``values``: named ``names[value]``, else OHIF's "Segment <n>" with its
    retired SRT tissue code, or labelloop's "label <value>" with SCT codes."""
    names = names or {}
    return [
        _description(number, names.get(value, f"Segment {number}"), _OHIF_TISSUE, _OHIF_TISSUE)
        if ohif
        else _description(number, names.get(value, f"label {value}"), _ANATOMICAL_STRUCTURE, _TISSUE)
        for number, value in enumerate(values, start=1)
    ]


def _segmentation(
    ordered: Sequence[Dataset],
    pixels: npt.NDArray[Any],
    segmentation_type: str,
    descriptions: Sequence[hd.seg.SegmentDescription],
    *,
    manufacturer: str,
    model: str,
    software: str,
    series_description: str,
    transfer_syntax: str = ExplicitVRLittleEndian,
    creator: str | None = None,
    **kwargs: Any,
) -> Dataset:
    seg = hd.seg.Segmentation(
        source_images=list(ordered),
        pixel_array=pixels,
        segmentation_type=segmentation_type,
        segment_descriptions=list(descriptions),
        series_instance_uid=generate_uid(),
        series_number=300,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer=manufacturer,
        manufacturer_model_name=model,
        software_versions=software,
        device_serial_number="0",
        content_creator_name=creator,
        content_label="SEGMENTATION",
        series_description=series_description,
        transfer_syntax_uid=transfer_syntax,
        omit_empty_frames=True,
        **kwargs,
    )
    # highdicom names itself as contributing equipment; the tools these SEGs imitate do not.
    if "ContributingEquipmentSequence" in seg:
        del seg.ContributingEquipmentSequence
    return _part10(seg)


def _value_numbers(values: Iterable[int]) -> list[int]:
    present = sorted({int(v) for v in values if int(v) != 0})
    if not present:
        raise ValueError("the label is empty; a SEG needs at least one segment")
    return present


def ohif_labelmap_seg(
    label: npt.NDArray[Any],
    source: Sequence[Dataset],
    segment_labels: Mapping[int, str] | None = None,
    *,
    background_segment: bool = False,
) -> Dataset:
    """A Label Map Segmentation (SOP class 1.2.840.10008.5.1.4.1.1.66.7) as OHIF 3.13 writes it.

    ``label`` is ``(I, J, K)`` values on ``in_reading_order(source)``; its nonzero values, in
    increasing order, become segments 1..N (OHIF's segment indices; values 1..N map to
    themselves), labelled ``segment_labels[value]`` or OHIF's default ``"Segment <n>"``.
    SegmentationType LABELMAP, 8-bit MONOCHROME2 pixels holding segment numbers, RLE
    Lossless, one frame per slice where something is painted. Segments MANUAL, category and
    type the SNOMED RT "Tissue" (T-D0050, SRT) dcmjs writes; no ContentCreatorName.
    Per-frame groups: DerivationImageSequence (SourceImageSequence -> the source instance)
    and PlanePositionSequence, **no FrameContentSequence** (the DimensionIndexSequence
    highdicom wrote is kept, pointing at ImagePositionPatient). The SegmentSequence lists
    segments 1..N only; ``background_segment`` keeps the segment 0 "Background" (DCM 125040)
    highdicom adds to every LABELMAP.
    """
    ordered = in_reading_order(source)
    label = np.asarray(label)
    _check_label(label, ordered)
    values = _value_numbers(np.unique(label))
    if len(values) > 255:
        raise ValueError("an 8-bit label map holds at most 255 segments")
    number_of = np.zeros(max(values) + 1, dtype=np.uint8)
    for number, value in enumerate(values, start=1):
        number_of[value] = number
    descriptions = _descriptions(values, segment_labels, ohif=True)
    seg = _segmentation(
        ordered,
        _frames(number_of[label.astype(np.int64)]),
        "LABELMAP",
        descriptions,
        manufacturer="OHIF",
        model="OHIF Viewer",
        software="3.13.0",
        series_description="Segmentation",
        transfer_syntax=RLELossless,
    )
    for frame in seg.PerFrameFunctionalGroupsSequence:
        if "FrameContentSequence" in frame:
            del frame.FrameContentSequence
    if not background_segment:
        seg.SegmentSequence = DicomSequence([s for s in seg.SegmentSequence if int(s.SegmentNumber) != 0])
    return seg


def _drop_spatial_locations(seg: Dataset) -> None:
    for frame in seg.PerFrameFunctionalGroupsSequence:
        for derivation in getattr(frame, "DerivationImageSequence", []):
            for item in getattr(derivation, "SourceImageSequence", []):
                if "SpatialLocationsPreserved" in item:
                    del item.SpatialLocationsPreserved
    for item in getattr(seg, "SourceImageSequence", []):
        if "SpatialLocationsPreserved" in item:
            del item.SpatialLocationsPreserved


def _masks(
    label: npt.NDArray[Any], values: Sequence[int]
) -> npt.NDArray[np.uint8]:  # (I, J, K, S) 0/1, S = len(values)
    return np.stack([(label == value) for value in values], axis=-1).astype(np.uint8)


def ohif_bitmap_seg(
    label: npt.NDArray[Any],
    source: Sequence[Dataset],
    segment_labels: Mapping[int, str] | None = None,
) -> Dataset:
    """A BINARY Segmentation (1.2.840.10008.5.1.4.1.1.66.4) as OHIF's bitmap export writes it.

    Segments as in ``ohif_labelmap_seg`` (values in increasing order -> 1..N, default labels
    ``"Segment <n>"``, SRT "Tissue" codes, MANUAL); 1-bit frames, Explicit VR Little Endian,
    one frame per segment and slice where that segment is painted; no ContentCreatorName and
    **no SpatialLocationsPreserved** in the derivation items (per frame and top level).
    FrameContentSequence (DimensionIndexValues) and SegmentIdentificationSequence present.
    """
    ordered = in_reading_order(source)
    label = np.asarray(label)
    _check_label(label, ordered)
    values = _value_numbers(np.unique(label))
    descriptions = _descriptions(values, segment_labels, ohif=True)
    seg = _segmentation(
        ordered,
        _frames(_masks(label, values)),
        "BINARY",
        descriptions,
        manufacturer="OHIF",
        model="OHIF Viewer",
        software="3.13.0",
        series_description="Segmentation",
    )
    _drop_spatial_locations(seg)
    return seg


def _reorder_frames(seg: Dataset, order: Sequence[int]) -> None:
    """Put frame ``order[n]`` at place ``n`` (functional groups and native pixel data), in place."""
    frames = np.asarray(seg.pixel_array)
    if frames.ndim == 2:
        return
    frames = np.ascontiguousarray(frames[list(order)])
    groups = list(seg.PerFrameFunctionalGroupsSequence)
    seg.PerFrameFunctionalGroupsSequence = DicomSequence([groups[i] for i in order])
    if int(seg.BitsAllocated) == 1:
        seg.PixelData = pack_bits(frames.ravel())
    else:
        seg.PixelData = frames.astype(f"<u{int(seg.BitsAllocated) // 8}").tobytes()


def dcmqi_seg(
    label: npt.NDArray[Any],
    source: Sequence[Dataset],
    segments: Sequence[tuple[int, str]] = DCMQI_SEGMENTS,
    *,
    shuffle_seed: int = 0,
) -> Dataset:
    """A BINARY Segmentation as dcmqi (itkimage2segimage) writes it.

    ``segments`` lists ``(label value, segment label)`` in segment-number order: segment ``n``
    (1-based) holds the voxels of ``label == segments[n-1][0]``. The default numbers liver
    (value 2) as segment 1 and spleen (value 1) as segment 2, labelled ``"Liver"`` and
    ``"spleen "``. Category "Anatomical Structure" (SCT 123037004); type the structure's SCT
    code with its CodeMeaning (Liver 10200004, Spleen 78961009, Kidney 64033007, Pancreas
    15776009; "Tissue" 85756007 for others); SEMIAUTOMATIC with an algorithm identification;
    ContentCreatorName ``"Reader1^"``; ``Manufacturer`` "QIICR". 1-bit frames, Explicit VR
    Little Endian, one per segment and slice where that segment is present, in a shuffled
    order (``shuffle_seed``) that is neither the slice nor the segment order (functional
    groups move with their frames, so DimensionIndexValues stay consistent).
    """
    ordered = in_reading_order(source)
    label = np.asarray(label)
    _check_label(label, ordered)
    if not np.isin(label, [value for value, _ in segments]).any():
        raise ValueError("the label is empty; a SEG needs at least one segment")
    descriptions = [
        _description(
            number,
            name,
            _ANATOMICAL_STRUCTURE,
            _PROPERTY_TYPES.get(name.strip().lower(), _TISSUE),
            algorithm="SEMIAUTOMATIC",
        )
        for number, (_, name) in enumerate(segments, start=1)
    ]
    seg = _segmentation(
        ordered,
        _frames(_masks(label, [value for value, _ in segments])),
        "BINARY",
        descriptions,
        manufacturer="QIICR",
        model="dcmqi itkimage2segimage",
        software="dcmqi 1.3.0",
        series_description="Segmentation",
        creator="Reader1^",
    )
    count = int(seg.NumberOfFrames)
    if count > 1:
        rng = np.random.default_rng(shuffle_seed)
        order = list(range(count))
        while order == sorted(order):
            order = [int(i) for i in rng.permutation(count)]
        _reorder_frames(seg, order)
    return seg


def soft_fractions(
    label: npt.NDArray[Any], *, inside: float = 0.8, rim: float = 0.3
) -> dict[int, npt.NDArray[np.float32]]:
    """Per nonzero value of ``label`` ``(I, J, K)``: a float32 ``(I, J, K)`` fraction map.

    The value's voxels get ``inside`` (above 0.5), their 6-neighbours outside it ``rim``
    (below 0.5), everything else 0: thresholding each map at 0.5 gives ``label == value``.
    """
    label = np.asarray(label)
    result: dict[int, npt.NDArray[np.float32]] = {}
    for value in _value_numbers(np.unique(label)):
        mask = label == value
        grown = mask.copy()
        for axis in range(3):
            for shift in (1, -1):
                moved = np.roll(mask, shift, axis=axis)
                edge = [slice(None)] * 3
                edge[axis] = slice(0, 1) if shift == 1 else slice(-1, None)
                moved[tuple(edge)] = False  # no wrap-around
                grown |= moved
        fractions = np.zeros(label.shape, dtype=np.float32)
        fractions[grown] = rim
        fractions[mask] = inside
        result[value] = fractions
    return result


def fractional_seg(
    fractions: Mapping[int, npt.NDArray[np.floating[Any]]],
    source: Sequence[Dataset],
    segment_labels: Mapping[int, str] | None = None,
) -> Dataset:
    """A FRACTIONAL (PROBABILITY) Segmentation: 8-bit, MaximumFractionalValue 255.

    ``fractions`` maps label value -> ``(I, J, K)`` fractions in ``[0, 1]`` on
    ``in_reading_order(source)`` (e.g. ``soft_fractions(label)``); values in increasing order
    become segments 1..N labelled ``segment_labels[value]`` or ``"label <value>"``. Stored
    values are ``round(fraction * 255)``; one frame per segment and slice with a nonzero
    fraction. Explicit VR Little Endian, no ContentCreatorName.
    """
    ordered = in_reading_order(source)
    values = _value_numbers(fractions)
    stack = np.stack([np.asarray(fractions[v], dtype=np.float32) for v in values], axis=-1)
    _check_label(stack, ordered)
    if stack.min() < 0 or stack.max() > 1:
        raise ValueError("fractions must lie in [0, 1]")
    descriptions = _descriptions(values, segment_labels, ohif=False)
    return _segmentation(
        ordered,
        _frames(stack),
        "FRACTIONAL",
        descriptions,
        manufacturer="corpus",
        model="fractional",
        software="1",
        series_description="Probabilities",
        max_fractional_value=255,
    )


def overlapping_seg(
    masks: Mapping[int, npt.NDArray[np.bool_]],
    source: Sequence[Dataset],
    segment_labels: Mapping[int, str] | None = None,
) -> Dataset:
    """A BINARY Segmentation whose segments may overlap (``SegmentsOverlap`` YES when they do).

    ``masks`` maps label value -> boolean ``(I, J, K)`` on ``in_reading_order(source)``;
    values in increasing order become segments 1..N, labelled ``segment_labels[value]`` or
    ``"label <value>"``. One 1-bit frame per segment and slice where it is present.
    """
    ordered = in_reading_order(source)
    values = _value_numbers(masks)
    stack = np.stack([np.asarray(masks[v], dtype=bool) for v in values], axis=-1).astype(np.uint8)
    _check_label(stack, ordered)
    descriptions = _descriptions(values, segment_labels, ohif=False)
    return _segmentation(
        ordered,
        _frames(stack),
        "BINARY",
        descriptions,
        manufacturer="corpus",
        model="overlapping",
        software="1",
        series_description="Overlapping segments",
    )
