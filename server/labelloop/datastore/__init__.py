"""The catalogue: images, immutable label versions, sessions; SQLite or PostgreSQL plus blob files."""

from labelloop.datastore.blobs import BlobStore, pid_alive, sha256_file
from labelloop.datastore.ids import DEFAULT_TAG, ORIGINAL_TAG, validate_id, validate_tag
from labelloop.datastore.intake import read_image, read_label
from labelloop.datastore.labels import parse_if_match
from labelloop.datastore.measured import Measurer
from labelloop.datastore.patients import PatientStudy
from labelloop.datastore.progress import AuthorWork, DayCount, LabelProgress, label_progress
from labelloop.datastore.records import (
    ImageRecord,
    LabelFile,
    LabelSource,
    LabelVersion,
    Provenance,
    SessionRecord,
)
from labelloop.datastore.runs import InferenceRun, InferenceRuns
from labelloop.datastore.segs import PacsSegs, SegRecord, SeriesSkip
from labelloop.datastore.service import Datastore
from labelloop.datastore.sources.dicomweb import DicomWebSource, PacsError, SeriesRef, stow_datasets
from labelloop.datastore.sources.folder import ImportReport, studies_id
from labelloop.datastore.sources.pacs import PacsLink, RefreshReport

__all__ = [
    "pid_alive",
    "DEFAULT_TAG",
    "ORIGINAL_TAG",
    "AuthorWork",
    "BlobStore",
    "Datastore",
    "DayCount",
    "DicomWebSource",
    "ImageRecord",
    "ImportReport",
    "InferenceRun",
    "InferenceRuns",
    "LabelFile",
    "LabelProgress",
    "LabelSource",
    "LabelVersion",
    "Measurer",
    "PacsError",
    "PacsLink",
    "PacsSegs",
    "PatientStudy",
    "Provenance",
    "RefreshReport",
    "SegRecord",
    "SeriesSkip",
    "SeriesRef",
    "SessionRecord",
    "label_progress",
    "parse_if_match",
    "read_image",
    "read_label",
    "sha256_file",
    "stow_datasets",
    "studies_id",
    "validate_id",
    "validate_tag",
]
