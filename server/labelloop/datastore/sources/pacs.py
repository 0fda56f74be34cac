"""Keeping the catalogue in step with a PACS: new series registered, SEGs imported, labels written back.

``PacsLink`` is what the datastore holds as its ``remote``: it resolves PACS images to cached
files, builds the DICOM SEG of every final label of a PACS image (checked by reading it back
before the label is saved) and sends it by STOW-RS once the label version is committed (the
outbox of ``datastore.segs``). A refresh registers new series, remembers those that cannot be
used (``pacs_skipped_series``, tried again when their instances change) and imports each SEG
instance of the PACS once, whatever tool wrote it (``imaging.dicomseg.read_seg``).
"""

from __future__ import annotations

import io
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Connection

from labelloop.datastore.blobs import BlobStore
from labelloop.datastore.ids import DEFAULT_TAG, ID_PATTERN
from labelloop.datastore.images import ImageStore
from labelloop.datastore.labels import LabelStore
from labelloop.datastore.records import ImageRecord, LabelFile, LabelVersion, Provenance, StoreOutcome
from labelloop.datastore.segs import PacsSegs, SeriesSkip
from labelloop.datastore.sources.dicomweb import (
    DicomWebSource,
    PacsError,
    SeriesRef,
    parse_location,
    series_location,
)
from labelloop.errors import ImageNotFoundError, ImageReadError, LabelloopError
from labelloop.imaging import write_volume
from labelloop.imaging.dicomseg import (
    LABEL_MAP_SEGMENTATION_STORAGE,
    SEGMENTATION_STORAGE,
    SegAuthor,
    SegImport,
    label_to_seg,
    read_seg,
    referenced_series,
    seg_to_label,
)

__all__ = ["PacsLink", "RefreshReport"]

logger = logging.getLogger(__name__)


@dataclass
class RefreshReport:
    """What a refresh did. ``skipped``: ``(series or SEG instance, reason)`` newly found unusable."""

    added: int = 0
    unchanged: int = 0
    segs_imported: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    finished_at: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "added": self.added,
            "unchanged": self.unchanged,
            "segs_imported": self.segs_imported,
            "skipped": [{"uid": uid, "reason": reason} for uid, reason in self.skipped],
            "finished_at": self.finished_at,
        }


class PacsLink:
    """A ``DicomWebSource`` plus the label names SEG segments are named after."""

    def __init__(self, source: DicomWebSource, label_names: Mapping[str, int]) -> None:
        self.source = source
        self.names = {value: name for name, value in label_names.items() if value != 0}
        self._refresh_lock = threading.Lock()
        self.last_refresh: RefreshReport | None = None

    # ------------------------------------------------------------ RemoteImages

    def cached_path(self, series_uid: str) -> Path:
        return self.source.cached_path(series_uid)

    def local_path(self, location: str) -> Path:
        return self.source.local_path(location)

    # ------------------------------------------------------------ writing back

    def prepare_seg(self, location: str, label: np.ndarray, author: SegAuthor) -> tuple[str, str, bytes]:
        """The SEG of ``label`` (``(I, J, K)`` on the series' grid), built and read back:
        ``(SOPInstanceUID, SeriesInstanceUID, Part 10 bytes)``; nothing is sent.

        Raises:
            ImageReadError: the series cannot carry a SEG (a Type 1 attribute missing, its
                geometry), naming the attribute and the series.
            PacsError: the PACS could not send the series' metadata, or the SEG does not read back
                as the label.
        """
        import pydicom

        study, series = parse_location(location)
        source = self.source.metadata(SeriesRef(study, series, ""))
        seg = label_to_seg(label, source, self.names, author)
        buffer = io.BytesIO()
        seg.save_as(buffer, enforce_file_format=True)
        raw = buffer.getvalue()
        back = seg_to_label(pydicom.dcmread(io.BytesIO(raw)), source, self.names)
        if not np.array_equal(back, np.asarray(label, dtype=np.uint8)):
            raise PacsError("The DICOM SEG written for this label does not read back as the label; not saved")
        return str(seg.SOPInstanceUID), str(seg.SeriesInstanceUID), raw

    def push_seg(self, raw: bytes) -> StoreOutcome:
        """STOW-RS a SEG's bytes; never raises (the outbox records what happened)."""
        import pydicom

        try:
            seg = pydicom.dcmread(io.BytesIO(raw))
            self.source.store([seg])
        except PacsError as exc:
            return StoreOutcome(False, exc.message, permanent=exc.refused)
        except Exception as exc:
            return StoreOutcome(False, f"{type(exc).__name__}: {exc}", permanent=True)
        logger.info("SEG %s stored in the PACS for series %s", seg.SOPInstanceUID, referenced_series(seg))
        return StoreOutcome(True)

    # ------------------------------------------------------------ reading from the PACS

    def refresh(
        self, images: ImageStore, labels: LabelStore, segs: PacsSegs, blobs: BlobStore, user: str
    ) -> RefreshReport:
        """Register new series (metadata only) and import new SEG instances that reference known series.

        Incremental: a registered series is not fetched again; a series that cannot be used is
        not fetched again until its number of instances changes; a SEG instance is read once.
        One refresh at a time; what is newly skipped is logged with the reason once.
        """
        report = RefreshReport()
        with self._refresh_lock:
            skipped = segs.skipped_series()
            for ref in self.source.search_series():
                self._register(ref, images, segs, skipped, user, report)
            self._import_segs(images, labels, segs, blobs, user, report)
            report.finished_at = time.time()
            self.last_refresh = report
        for name, reason in report.skipped:
            logger.warning("PACS series or SEG %s skipped: %s", name, reason)
        logger.info(
            "PACS refresh: %d series added, %d unchanged, %d SEGs imported, %d newly skipped",
            report.added,
            report.unchanged,
            report.segs_imported,
            len(report.skipped),
        )
        return report

    def _register(
        self,
        ref: SeriesRef,
        images: ImageStore,
        segs: PacsSegs,
        skipped: Mapping[str, SeriesSkip],
        user: str,
        report: RefreshReport,
    ) -> None:
        instances = _int(ref.fields.get("NumberOfSeriesRelatedInstances"))
        known = skipped.get(ref.series_uid)
        if known is not None and known.instances == instances:
            return  # unusable as it was last time: not fetched again
        if not ID_PATTERN.fullmatch(ref.series_uid):
            reason = "its SeriesInstanceUID is not a valid image id"
        else:
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
                if known is not None:
                    segs.unskip_series(ref.series_uid)
                return
            except PacsError as exc:  # the PACS, not the series: tried again next time
                logger.warning("PACS series %s not registered this time: %s", ref.series_uid, exc.message)
                return
            except LabelloopError as exc:
                reason = exc.message
            except Exception as exc:  # a malformed series must not stop the others
                reason = f"{type(exc).__name__}: {exc}"
        segs.skip_series(ref.series_uid, ref.study_uid, instances, reason)
        report.skipped.append((ref.series_uid, reason))

    def _import_segs(
        self,
        images: ImageStore,
        labels: LabelStore,
        segs: PacsSegs,
        blobs: BlobStore,
        user: str,
        report: RefreshReport,
    ) -> None:
        for ref in self.source.search_series(["SEG"]):
            try:
                uids = self.source.instance_uids(ref.study_uid, ref.series_uid)
            except PacsError as exc:
                logger.warning("SEG series %s not listed this time: %s", ref.series_uid, exc.message)
                continue
            for uid in sorted(set(uids) - segs.known(uids)):
                try:
                    seg = self.source.retrieve_instance(ref.study_uid, ref.series_uid, uid)
                except PacsError as exc:
                    logger.warning("SEG %s not retrieved this time: %s", uid, exc.message)
                    continue
                try:
                    self._import_seg(ref, seg, images, labels, segs, blobs, user, report)
                except PacsError as exc:
                    logger.warning("SEG %s not imported this time: %s", uid, exc.message)
                except Exception as exc:
                    reason = (
                        exc.message if isinstance(exc, LabelloopError) else f"{type(exc).__name__}: {exc}"
                    )
                    segs.record_import(None, uid, ref.series_uid, reason=f"not imported: {reason}")
                    report.skipped.append((uid, f"SEG not imported: {reason}"))

    def is_seg(self, ds: Any) -> bool:
        return str(getattr(ds, "SOPClassUID", "")) in (SEGMENTATION_STORAGE, LABEL_MAP_SEGMENTATION_STORAGE)

    def has_instance(self, ds: Any) -> bool:
        """Whether the PACS holds this instance (QIDO-RS).

        Raises:
            PacsError: the PACS could not be asked.
        """
        study = str(getattr(ds, "StudyInstanceUID", "") or "")
        series = str(getattr(ds, "SeriesInstanceUID", "") or "")
        return str(getattr(ds, "SOPInstanceUID", "")) in self.source.instance_uids(study, series)

    def decode_seg(self, seg: Any, images: ImageStore) -> tuple[ImageRecord, SegImport, dict[str, Any]]:
        """A SEG on the grid of the catalogue image it segments: the image, the decoded label and
        the params to record with the label version (the SEG's UIDs, its creator, how each segment
        mapped to a label).

        Raises:
            ImageNotFoundError: the series it segments is not (yet) in the catalogue.
            ImageReadError: it names no series, cannot be read onto it, or none of its segments
                is one of the app's labels.
            PacsError: the PACS could not send the series' metadata.
        """
        target = referenced_series(seg)
        if target is None:
            raise ImageReadError("the SEG names no referenced series (ReferencedSeriesSequence)")
        if not images.exists(target[1]):
            raise ImageNotFoundError(f"The SEG segments series {target[1]}, which is not in the catalogue")
        image = images.get(target[1])
        study, series = parse_location(image.location)
        read = read_seg(seg, self.source.metadata(SeriesRef(study, series, "")), self.names)
        if not read.label.any():
            names = ", ".join(f"{s.number} {s.label!r}" for s in read.skipped) or "none"
            raise ImageReadError(f"no segment of the SEG is one of the app's labels (segments: {names})")
        uid = str(seg.SOPInstanceUID)
        for skipped in read.skipped:
            logger.info(
                "SEG %s: segment %d %r matches no label of the app; left out",
                uid,
                skipped.number,
                skipped.label,
            )
        params = {
            "seg_series_uid": str(getattr(seg, "SeriesInstanceUID", "") or ""),
            "seg_sop_instance_uid": uid,
            "creator": str(getattr(seg, "ContentCreatorName", "") or ""),
            "segments": [s.as_dict() for s in read.segments],
        }
        return image, read, params

    def _import_seg(
        self,
        ref: SeriesRef,
        seg: Any,
        images: ImageStore,
        labels: LabelStore,
        segs: PacsSegs,
        blobs: BlobStore,
        user: str,
        report: RefreshReport,
    ) -> None:
        try:
            image, read, params = self.decode_seg(seg, images)
        except ImageNotFoundError:
            return  # its series is not (yet) in the catalogue: tried again on a later refresh
        uid = params["seg_sop_instance_uid"]

        def record(conn: Connection, version: LabelVersion) -> None:
            segs.record_import(
                conn, uid, ref.series_uid, image_id=image.id, tag=version.tag, version=version.version
            )

        with blobs.scratch(".nii.gz") as path:
            write_volume(path, read.label, image.geometry.affine)
            labels.save(
                image.id,
                DEFAULT_TAG,
                LabelFile(path, disposable=True),
                Provenance(author=user, source="import", params={**params, "imported_from": "PACS"}),
                write_back=False,
                in_transaction=record,
            )
        report.segs_imported += 1


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except ValueError:
        return None
