"""Volume I/O (NIfTI, NRRD, DICOM series) and geometry checks.

Arrays are ``(I, J, K)`` in file index order; affines map voxel indices to RAS millimetres.
"""

from labelloop.imaging.dicom import (
    DicomFrame,
    DicomSeries,
    check_deflated,
    dicom_decode_size,
    read_dicom_series,
    read_dicom_zip,
    sort_dicom_series,
)
from labelloop.imaging.formats import (
    VOLUME_EXTENSIONS,
    FileKind,
    canonical_extension,
    sniff,
    strip_extensions,
)
from labelloop.imaging.geometry import check_same_grid
from labelloop.imaging.limits import DecodeBudget, DecodeLimits, DecodeSize
from labelloop.imaging.resample import resample_nearest, world_to_voxel
from labelloop.imaging.volume import (
    Geometry,
    Volume,
    VolumeFormat,
    declared_size,
    read_geometry,
    read_volume,
    write_volume,
)

__all__ = [
    "VOLUME_EXTENSIONS",
    "DecodeBudget",
    "DecodeLimits",
    "DecodeSize",
    "DicomFrame",
    "DicomSeries",
    "FileKind",
    "Geometry",
    "Volume",
    "VolumeFormat",
    "canonical_extension",
    "check_deflated",
    "check_same_grid",
    "declared_size",
    "dicom_decode_size",
    "read_dicom_series",
    "read_dicom_zip",
    "read_geometry",
    "read_volume",
    "resample_nearest",
    "sniff",
    "sort_dicom_series",
    "strip_extensions",
    "world_to_voxel",
    "write_volume",
]
