"""Where images come from besides uploads: a studies folder registered in place, or a DICOMweb PACS
(series listed and fetched on first use, final labels written back as DICOM SEG, SEGs imported)."""

from labelloop.datastore.sources.dicomweb import DicomWebSource, PacsError, SeriesRef
from labelloop.datastore.sources.folder import ImportReport, Progress, import_folder, studies_id
from labelloop.datastore.sources.pacs import PacsLink, RefreshReport

__all__ = [
    "DicomWebSource",
    "ImportReport",
    "PacsError",
    "PacsLink",
    "Progress",
    "RefreshReport",
    "SeriesRef",
    "import_folder",
    "studies_id",
]
