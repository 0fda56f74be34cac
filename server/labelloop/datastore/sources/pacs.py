"""Keeping the catalogue in step with a PACS: new series registered, SEGs imported, labels written back.

``PacsLink`` is what the datastore holds as its ``remote``: it resolves PACS images to cached
files, and writes every final label of a PACS image back as a DICOM SEG (checked by reading it
back, then stored with STOW-RS) before the label version is committed.
"""

from __future__ import annotations

import io
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from labelloop.datastore.blobs import BlobStore
from labelloop.datastore.ids import DEFAULT_TAG, ID_PATTERN
from labelloop.datastore.images import ImageStore
from labelloop.datastore.labels import LabelStore
from labelloop.datastore.records import LabelFile, Provenance
from labelloop.datastore.sources.dicomweb import (
    DicomWebSource,
    PacsError,
    SeriesRef,
    parse_location,
    series_location,
)
from labelloop.errors import LabelloopError
from labelloop.imaging import write_volume
from labelloop.imaging.dicomseg import SegAuthor, label_to_seg, referenced_series, seg_to_label

__all__ = ["PacsLink", "RefreshReport"]

logger = logging.getLogger(__name__)


@dataclass
class RefreshReport:
    added: int = 0
    unchanged: int = 0
    segs_imported: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)


class PacsLink:
    """A ``DicomWebSource`` plus the label names SEG segments are named after."""

    def __init__(self, source: DicomWebSource, label_names: Mapping[str, int]) -> None:
        self.source = source
        self.names = {value: name for name, value in label_names.items() if value != 0}
        self._refresh_lock = threading.Lock()

    # ------------------------------------------------------------ RemoteImages

    def cached_path(self, series_uid: str) -> Path:
        return self.source.cached_path(series_uid)

    def local_path(self, location: str) -> Path:
        return self.source.local_path(location)

    # ------------------------------------------------------------ writing back

    def seg_bytes(self, location: str, label: np.ndarray, author: SegAuthor) -> tuple[Any, bytes]:
        """A SEG of ``label`` (``(I, J, K)`` on the series' grid) over the series, and its bytes."""
        study, series = parse_location(location)
        source = self.source.metadata(SeriesRef(study, series, ""))
        seg = label_to_seg(label, source, self.names, author)
        buffer = io.BytesIO()
        seg.save_as(buffer, enforce_file_format=True)
        return seg, buffer.getvalue()

    def export_label(self, location: str, label: np.ndarray, author: SegAuthor) -> dict[str, Any]:
        """Write ``label`` back to the PACS as a DICOM SEG: built, read back and compared, then stored.

        Raises:
            PacsError: the SEG does not read back as the label, or the PACS refused it.
        """
        import pydicom

        study, series = parse_location(location)
        seg, raw = self.seg_bytes(location, label, author)
        source = self.source.metadata(SeriesRef(study, series, ""))
        back = seg_to_label(pydicom.dcmread(io.BytesIO(raw)), source, self.names)
        if not np.array_equal(back, np.asarray(label, dtype=np.uint8)):
            raise PacsError(
                "The DICOM SEG written for this label does not read back as the label; not stored"
            )
        self.source.store([seg])
        logger.info("label of series %s stored in the PACS as SEG %s", series, seg.SOPInstanceUID)
        return {
            "seg_series_uid": str(seg.SeriesInstanceUID),
            "seg_sop_instance_uid": str(seg.SOPInstanceUID),
        }

    # ------------------------------------------------------------ reading from the PACS

    def refresh(self, images: ImageStore, labels: LabelStore, blobs: BlobStore, user: str) -> RefreshReport:
        """Register new series (metadata only) and import SEGs that reference known series.

        Incremental: a series already registered with the same instances is not fetched again.
        One refresh at a time; a broken series is skipped with the reason logged.
        """
        report = RefreshReport()
        with self._refresh_lock:
            for ref in self.source.search_series():
                self._register(ref, images, user, report)
            self._import_segs(images, labels, blobs, user, report)
        for name, reason in report.skipped:
            logger.warning("PACS series %s skipped: %s", name, reason)
        logger.info(
            "PACS refresh: %d series added, %d unchanged, %d SEGs imported, %d skipped",
            report.added,
            report.unchanged,
            report.segs_imported,
            len(report.skipped),
        )
        return report

    def _register(self, ref: SeriesRef, images: ImageStore, user: str, report: RefreshReport) -> None:
        if not ID_PATTERN.fullmatch(ref.series_uid):
            report.skipped.append((ref.series_uid, "its SeriesInstanceUID is not a valid image id"))
            return
        try:
            if images.exists(ref.series_uid):
                report.unchanged += 1
                return
            geometry, identity, _ = self.source.geometry(ref)
            images.register_remote(
                ref.series_uid,
                series_location(ref.study_uid, ref.series_uid),
                geometry,
                identity,
                self.source.info(ref),
                user,
            )
            report.added += 1
        except LabelloopError as exc:
            report.skipped.append((ref.series_uid, exc.message))
        except Exception as exc:  # a malformed series must not stop the others
            report.skipped.append((ref.series_uid, f"{type(exc).__name__}: {exc}"))

    def _import_segs(
        self, images: ImageStore, labels: LabelStore, blobs: BlobStore, user: str, report: RefreshReport
    ) -> None:
        imported = {
            str(v.params.get("seg_series_uid"))
            for v in labels.current(DEFAULT_TAG)
            if v.params.get("seg_series_uid")
        }
        for ref in self.source.search_series(["SEG"]):
            if ref.series_uid in imported:
                continue
            try:
                self._import_seg(ref, images, labels, blobs, user, report)
            except Exception as exc:
                report.skipped.append((ref.series_uid, f"SEG not imported: {exc}"))

    def _import_seg(
        self,
        ref: SeriesRef,
        images: ImageStore,
        labels: LabelStore,
        blobs: BlobStore,
        user: str,
        report: RefreshReport,
    ) -> None:
        for seg in self.source.retrieve(ref.study_uid, ref.series_uid):
            target = referenced_series(seg)
            if target is None or not images.exists(target[1]):
                continue
            image = images.get(target[1])
            if any(
                v.params.get("seg_sop_instance_uid") == str(seg.SOPInstanceUID)
                for v in labels.versions(image.id)
            ):
                continue
            study, series = parse_location(image.location)
            label = seg_to_label(seg, self.source.metadata(SeriesRef(study, series, "")), self.names)
            with blobs.scratch(".nii.gz") as path:
                write_volume(path, label, image.geometry.affine)
                params = {
                    "seg_series_uid": ref.series_uid,
                    "seg_sop_instance_uid": str(seg.SOPInstanceUID),
                    "imported_from": "PACS",
                    "creator": str(getattr(seg, "ContentCreatorName", "") or ""),
                }
                labels.save(
                    image.id,
                    DEFAULT_TAG,
                    LabelFile(path, disposable=True),
                    Provenance(author=user, source="import", params=params),
                    write_back=False,
                )
            report.segs_imported += 1
