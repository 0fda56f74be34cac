"""Volumes as real single-frame DICOM series, and label maps as DICOM SEG, for PACS tests.

Conventions (those of ``labelloop.imaging``):

- a ``Volume`` array is ``(I, J, K)``; its affine maps voxel ``(i, j, k)`` to **RAS** mm;
- a DICOM slice is ``(Rows, Columns)`` = ``(J, I)``: column ``i`` runs along the first three
  ImageOrientationPatient values, row ``j`` along the last three, in **LPS** mm
  (``labelloop.imaging.read_dicom_series`` reads it back the same way);
- DICOM has no slice index of its own: readers (``read_dicom_series``, viewers) order the
  slices by their position along the normal ``row_dir x col_dir``. For a right-handed affine
  that is the volume's own ``k`` order; for a left-handed one (brain1's LPS direction
  ``diag(1, -1, 1)``) ``k`` comes back reversed, with the affine's third column negated, so
  every voxel keeps its physical position. ``as_read_back`` gives that volume.

Label maps handed to ``label_to_seg`` and returned by ``seg_to_label`` are ``(I, J, K)`` on the
grid ``read_dicom_series(source)`` gives, i.e. with ``k`` in ``reading_order(source)``.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sr.coding import Code
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    MRImageStorage,
    generate_uid,
)
from pydicom.valuerep import format_number_as_ds

from labelloop.imaging import Geometry, Volume, sort_dicom_series
from labelloop.imaging.dicomseg import SegAuthor, seg_to_label
from labelloop.imaging.dicomseg import label_to_seg as server_label_to_seg

__all__ = [
    "Modality",
    "as_read_back",
    "label_to_seg",
    "reading_order",
    "seg_to_label",
    "volume_to_series",
    "write_series",
    "zip_series",
]

Modality = Literal["CT", "MR"]

_SOP_CLASSES: dict[str, UID] = {"CT": CTImageStorage, "MR": MRImageStorage}
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])  # its own inverse: also RAS -> LPS
_INT16_MIN, _INT16_MAX = -32768, 32767

#: Generic codes for every segment: the tests care about voxels and names, not semantics.
_CATEGORY = Code("91723000", "SCT", "Anatomical Structure")
_TYPE = Code("85756007", "SCT", "Tissue")


def _ds(value: float) -> str:
    """A decimal string of at most 16 characters, as DICOM's DS allows."""
    return format_number_as_ds(float(value))


def _person_name(name: str) -> str:
    """A one-component name gets a trailing caret (a family name), as highdicom asks."""
    return name if "^" in name or not name else f"{name}^"


def _rescale(array: npt.NDArray[Any]) -> tuple[float, float]:
    """``(slope, intercept)`` that fit ``array``'s range into int16 (exactly, for integers)."""
    if array.size == 0:
        return 1.0, 0.0
    lo, hi = float(array.min()), float(array.max())
    integral = np.issubdtype(array.dtype, np.integer) or bool(np.all(np.mod(array, 1) == 0))
    if integral and lo >= _INT16_MIN and hi <= _INT16_MAX:
        return 1.0, 0.0
    if integral and hi - lo <= _INT16_MAX - _INT16_MIN:
        return 1.0, lo - _INT16_MIN
    slope = (hi - lo) / (_INT16_MAX - _INT16_MIN) if hi > lo else 1.0
    # Quantise with the values the DS strings hold, which is what readers will apply.
    slope = float(_ds(slope))
    return slope, float(_ds(lo - _INT16_MIN * slope))


def _plane_geometry(
    affine: npt.NDArray[np.float64],
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], tuple[float, float], npt.NDArray[np.float64]]:
    """``(row_dir, col_dir, (row spacing, column spacing), step)`` in LPS from a RAS affine."""
    lps = _LPS_TO_RAS @ np.asarray(affine, dtype=np.float64)
    spacing_i = float(np.linalg.norm(lps[:3, 0]))
    spacing_j = float(np.linalg.norm(lps[:3, 1]))
    if spacing_i == 0 or spacing_j == 0:
        raise ValueError("the affine has a zero in-plane spacing")
    row_dir, col_dir = lps[:3, 0] / spacing_i, lps[:3, 1] / spacing_j
    if abs(float(row_dir @ col_dir)) > 1e-6:
        raise ValueError("the affine's i and j axes are not orthogonal; DICOM planes cannot be sheared")
    return row_dir, col_dir, (spacing_j, spacing_i), lps[:3, 2]


def volume_to_series(
    volume: Volume,
    *,
    patient_id: str,
    patient_name: str | None = None,
    study_uid: str | None = None,
    series_uid: str | None = None,
    frame_of_reference_uid: str | None = None,
    modality: Modality = "CT",
    series_description: str = "labelloop synthetic series",
    study_description: str = "labelloop test study",
    study_date: str = "20240101",
    study_time: str = "120000",
    study_id: str = "1",
    accession_number: str = "",
    series_number: int = 1,
    manufacturer: str = "labelloop tests",
) -> list[Dataset]:
    """One single-frame CT (or MR) Image Storage dataset per ``k`` slice of ``volume``.

    Slice ``k`` holds ``volume.array[:, :, k].T`` (``(Rows, Columns) = (J, I)``) as int16
    (MONOCHROME2, 16 bits stored) with ``RescaleSlope``/``RescaleIntercept`` chosen so that
    integer values spanning at most 65536 come back exactly; wider integer ranges and
    non-integral floats are quantised to 65536 levels (MR writes the rescale too, although
    its Image module does not define one: readers apply it). Geometry (LPS):
    ``ImageOrientationPatient`` from the affine's i and j columns, ``PixelSpacing`` =
    ``[row spacing (j), column spacing (i)]``, ``ImagePositionPatient`` = the position of
    voxel ``(0, 0, k)``, ``SliceThickness`` = the slice distance along the normal.

    The datasets come back in ``k`` order, ``InstanceNumber = k + 1``, each with a file meta
    (Explicit VR Little Endian). UIDs not given are generated; all slices share them.

    Raises:
        ValueError: the affine's i and j axes are not orthogonal (DICOM cannot shear a plane),
            or ``modality`` is neither CT nor MR.
    """
    if modality not in _SOP_CLASSES:
        raise ValueError(f"modality must be CT or MR, not {modality!r}")
    array = np.asarray(volume.array)
    if array.ndim != 3:
        raise ValueError(f"a (I, J, K) array is needed, not shape {array.shape}")
    row_dir, col_dir, pixel_spacing, step = _plane_geometry(volume.geometry.affine)
    origin = (_LPS_TO_RAS @ volume.geometry.affine)[:3, 3]
    normal = np.cross(row_dir, col_dir)
    thickness = abs(float(step @ normal)) or float(np.linalg.norm(step)) or 1.0
    slope, intercept = _rescale(array)
    levels = np.rint((array.astype(np.float64) - intercept) / slope)
    stored = np.clip(levels, _INT16_MIN, _INT16_MAX).astype(np.int16)

    study_uid = study_uid or generate_uid()
    series_uid = series_uid or generate_uid()
    frame_of_reference_uid = frame_of_reference_uid or generate_uid()
    sop_class = _SOP_CLASSES[modality]
    orientation = [_ds(v) for v in (*row_dir, *col_dir)]
    datasets = []
    for k in range(array.shape[2]):
        position = origin + k * step
        ds = Dataset()
        # Without a preamble pydicom 3's dcmwrite (what dicomweb-client's STOW uses) writes no
        # "DICM" prefix; Orthanc stores such bytes as they are and WADO-RS then returns them so.
        ds.preamble = b"\0" * 128
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        ds.SpecificCharacterSet = "ISO_IR 192"
        ds.SOPClassUID = sop_class
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPClassUID = sop_class
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        # Patient and General Study
        ds.PatientName = _person_name(patient_name if patient_name is not None else f"Synthetic^{patient_id}")
        ds.PatientID = patient_id
        ds.PatientBirthDate = ""
        ds.PatientSex = ""
        ds.StudyInstanceUID = study_uid
        ds.StudyDate = study_date
        ds.StudyTime = study_time
        ds.StudyDescription = study_description
        ds.StudyID = study_id
        ds.AccessionNumber = accession_number
        ds.ReferringPhysicianName = ""
        # General Series, Frame of Reference, General Equipment
        ds.Modality = modality
        ds.SeriesInstanceUID = series_uid
        ds.SeriesNumber = series_number
        ds.SeriesDescription = series_description
        ds.SeriesDate = study_date
        ds.SeriesTime = study_time
        ds.PatientPosition = "HFS"
        ds.FrameOfReferenceUID = frame_of_reference_uid
        ds.PositionReferenceIndicator = ""
        ds.Manufacturer = manufacturer
        # General Image, Image Plane
        ds.InstanceNumber = k + 1
        ds.ContentDate = study_date
        ds.ContentTime = study_time
        ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
        ds.ImageOrientationPatient = orientation
        ds.ImagePositionPatient = [_ds(v) for v in position]
        ds.PixelSpacing = [_ds(pixel_spacing[0]), _ds(pixel_spacing[1])]
        ds.SliceThickness = _ds(thickness)
        ds.SliceLocation = _ds(float(position @ normal))
        # Image Pixel
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = int(array.shape[1]), int(array.shape[0])
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.RescaleSlope = _ds(slope)
        ds.RescaleIntercept = _ds(intercept)
        if modality == "CT":
            ds.RescaleType = "HU"
            ds.KVP = ""
            ds.AcquisitionNumber = 1
        else:
            ds.ScanningSequence = "RM"  # research mode: a synthetic volume has no sequence
            ds.SequenceVariant = "NONE"
            ds.ScanOptions = ""
            ds.MRAcquisitionType = "3D"
            ds.EchoTime = ""
            ds.EchoTrainLength = ""
        ds.PixelData = np.ascontiguousarray(stored[:, :, k].T).astype("<i2").tobytes()
        datasets.append(ds)
    return datasets


def reading_order(source: Sequence[Dataset]) -> list[Dataset]:
    """``source``'s slices sorted as ``read_dicom_series`` sorts them: along ``row_dir x col_dir``."""
    return list(sort_dicom_series(source, need_pixels=False).slices)


def as_read_back(volume: Volume) -> Volume:
    """``volume`` as a DICOM reader gives it back after ``volume_to_series``.

    Right-handed affines (``det > 0``): ``volume`` itself. Left-handed ones: ``k`` reversed,
    the affine's third column negated and its origin moved to the last slice, so every voxel
    stays at the same physical (RAS mm) position.
    """
    affine = np.asarray(volume.geometry.affine, dtype=np.float64)
    if np.linalg.det(affine[:3, :3]) > 0:
        return volume
    k = volume.array.shape[2]
    flip = np.eye(4)
    flip[2, 2] = -1.0
    flip[2, 3] = k - 1
    flipped = affine @ flip
    return Volume(
        array=np.ascontiguousarray(volume.array[:, :, ::-1]),
        geometry=Geometry(shape=volume.geometry.shape, affine=flipped),
        format=volume.format,
    )


def label_to_seg(
    label: npt.NDArray[Any],
    source: Sequence[Dataset],
    names: Mapping[int, str],
    *,
    creator: str = "tester",
    series_description: str = "labelloop segmentation",
    series_number: int = 100,
) -> Dataset:
    """The server's ``labelloop.imaging.label_to_seg`` with a manual author (see its docstring)."""
    seg: Dataset = server_label_to_seg(
        label,
        source,
        names,
        SegAuthor(creator=creator),
        series_description=series_description,
        series_number=series_number,
    )
    return seg


def write_series(folder: Path, datasets: Sequence[Dataset]) -> list[Path]:
    """Write each dataset as a DICOM Part 10 file ``folder/NNNN.dcm``; returns the paths in order."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for n, ds in enumerate(datasets):
        path = folder / f"{n:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def zip_series(path: Path, datasets: Sequence[Dataset]) -> Path:
    """Write the datasets as DICOM Part 10 members ``NNNN.dcm`` of the zip ``path``; returns it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for n, ds in enumerate(datasets):
            buffer = io.BytesIO()
            ds.save_as(buffer, enforce_file_format=True)
            archive.writestr(f"{n:04d}.dcm", buffer.getvalue())
    return path


def stow_body(datasets: Sequence[Dataset], boundary: str = "labelloop-test-boundary") -> tuple[bytes, str]:
    """A STOW-RS request body as OHIF sends one, and its content type
    (``multipart/related; type="application/dicom"``): one Part 10 file per part."""
    body = b""
    for ds in datasets:
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        body += (
            f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + buffer.getvalue() + b"\r\n"
        )
    body += f"--{boundary}--\r\n".encode()
    return body, f'multipart/related; type="application/dicom"; boundary={boundary}'
