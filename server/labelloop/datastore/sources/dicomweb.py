"""Images from a PACS over DICOMweb: series found by QIDO-RS, retrieved by WADO-RS when first
needed, cached on disk as NIfTI within a size budget; labels written back as DICOM SEG (STOW-RS).

A series' image id is its SeriesInstanceUID; its location in the catalogue is
``dicomweb:<StudyInstanceUID>/<SeriesInstanceUID>``.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labelloop.errors import LabelloopError, NotFoundError
from labelloop.imaging import Geometry, read_dicom_series, sort_dicom_series, write_volume
from labelloop.settings import DicomWebSettings

__all__ = [
    "DicomWebSource",
    "SeriesRef",
    "PacsError",
    "LOCATION_PREFIX",
    "series_location",
    "parse_location",
    "stow_datasets",
]

logger = logging.getLogger(__name__)

LOCATION_PREFIX = "dicomweb:"
_INFO_FIELDS = ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "Modality", "StudyDate", "StudyTime")


class PacsError(LabelloopError):
    """The PACS did not answer as expected. ``refused``: it answered, and said no (trying the same
    request again will not help)."""

    refused: bool = False


def series_location(study_uid: str, series_uid: str) -> str:
    return f"{LOCATION_PREFIX}{study_uid}/{series_uid}"


def parse_location(location: str) -> tuple[str, str]:
    """``dicomweb:<study>/<series>`` -> ``(study, series)``."""
    study, _, series = location[len(LOCATION_PREFIX) :].partition("/")
    return study, series


def stow_datasets(body: bytes, content_type: str) -> list[Any]:
    """The DICOM instances of a STOW-RS request body (``multipart/related; type="application/dicom"``);
    parts that are not DICOM (metadata, bulk data) are left out."""
    import email.parser
    import email.policy
    import io

    import pydicom

    if not content_type.lower().startswith("multipart/related"):
        return []
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    datasets = []
    for part in message.iter_parts() if message.is_multipart() else []:
        if part.get_content_type() != "application/dicom":
            continue
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes):
            continue
        try:
            datasets.append(pydicom.dcmread(io.BytesIO(payload)))
        except Exception:
            logger.info("a STOW-RS part is not a DICOM instance; left out")
    return datasets


def _value(item: dict[str, Any], tag: str) -> str | None:
    """A DICOM JSON attribute's first value as text (PersonName's Alphabetic form)."""
    element = item.get(tag) or {}
    values = element.get("Value") or []
    if not values:
        return None
    first = values[0]
    if isinstance(first, dict):
        return str(first.get("Alphabetic", ""))
    return str(first)


_TAGS = {
    "PatientID": "00100020",
    "StudyInstanceUID": "0020000D",
    "SeriesInstanceUID": "0020000E",
    "Modality": "00080060",
    "StudyDate": "00080020",
    "StudyTime": "00080030",
    "SeriesDescription": "0008103E",
    "NumberOfSeriesRelatedInstances": "00201209",
}


@dataclass(frozen=True)
class SeriesRef:
    """A series found by QIDO-RS, with the fields OHIF and curators read."""

    study_uid: str
    series_uid: str
    modality: str
    fields: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_qido(cls, item: dict[str, Any]) -> SeriesRef | None:
        study, series = _value(item, _TAGS["StudyInstanceUID"]), _value(item, _TAGS["SeriesInstanceUID"])
        if not study or not series:
            return None
        found = {name: v for name, tag in _TAGS.items() if (v := _value(item, tag)) is not None}
        return cls(study_uid=study, series_uid=series, modality=found.get("Modality", ""), fields=found)


class DicomWebSource:
    """One DICOMweb server (QIDO-RS, WADO-RS, STOW-RS) and the local cache of its series."""

    def __init__(self, url: str, settings: DicomWebSettings, cache_dir: Path) -> None:
        self.url = url.rstrip("/")
        self.settings = settings
        self.cache_dir = cache_dir
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    # ------------------------------------------------------------ the client

    def client(self) -> Any:
        """A fresh DICOMweb client (requests sessions are not shared between threads)."""
        import requests
        from dicomweb_client.api import DICOMwebClient

        session = requests.Session()
        if self.settings.username:
            session.auth = (self.settings.username, self.settings.password or "")
        client = DICOMwebClient(url=self.url, session=session, timeout=self.settings.timeout_s)
        # Its default is 5 attempts with 1-16 s back-off, also on refused connections: an
        # annotator would wait half a minute for an answer a PACS that is down gives at once.
        client.set_http_retry_params(retry=True, max_attempts=2, wait_exponential_multiplier=250)
        return client

    @contextmanager
    def _calling(self, what: str) -> Iterator[None]:
        try:
            yield
        except LabelloopError:
            raise
        except Exception as exc:
            raise PacsError(f"The PACS failed to {what}: {type(exc).__name__}: {exc}") from exc

    # ------------------------------------------------------------ finding series

    def search_series(self, modalities: Sequence[str] | None = None) -> list[SeriesRef]:
        """Series of the configured modalities (QIDO-RS, one query per modality, all pages)."""
        found: dict[str, SeriesRef] = {}
        client = self.client()
        for modality in modalities or self.settings.modalities:
            with self._calling(f"search {modality} series"):
                items = client.search_for_series(
                    search_filters={"Modality": modality},
                    fields=list(_TAGS),
                    get_remaining=True,
                )
            for item in items:
                ref = SeriesRef.from_qido(item)
                if ref is not None:
                    found.setdefault(ref.series_uid, ref)
        return list(found.values())

    def metadata(self, ref: SeriesRef, *, fresh: bool = False) -> list[Any]:
        """The series' instances without pixel data (WADO-RS metadata), as pydicom datasets.

        The metadata of a registered series is kept on disk (``<series>.meta.json.gz``, a few KB a
        slice), so a label's SEG can be built while the PACS is down; ``fresh`` asks the PACS.
        """
        from pydicom import Dataset

        cached = self.cache_dir / f"{ref.series_uid}.meta.json.gz"
        items: list[dict[str, Any]] | None = None
        if not fresh and cached.is_file():
            try:
                items = json.loads(gzip.decompress(cached.read_bytes()))
            except (OSError, ValueError, EOFError):
                items = None  # damaged: asked for again
        if items is None:
            with self._calling(f"send the metadata of series {ref.series_uid}"):
                items = self.client().retrieve_series_metadata(ref.study_uid, ref.series_uid)
            # Bulk data (pixels) is only referenced in metadata; leave it out rather than fetch it.
            items = [
                {tag: value for tag, value in item.items() if "BulkDataURI" not in value} for item in items
            ]
            partial = cached.with_name(f".{uuid.uuid4().hex}.meta.json.gz")
            try:
                partial.write_bytes(gzip.compress(json.dumps(items).encode(), compresslevel=6))
                os.replace(partial, cached)
            finally:
                partial.unlink(missing_ok=True)
        return [Dataset.from_json(item) for item in items]

    def geometry(self, ref: SeriesRef) -> tuple[Geometry, str, list[Any]]:
        """Grid, content identity and sorted metadata of a series, from its metadata (fresh from
        the PACS, and kept).

        The identity is the SHA-256 of the sorted SOPInstanceUIDs: DICOM instances never change
        under the same UID, so a series with the same instances has the same content.
        """
        series = sort_dicom_series(self.metadata(ref, fresh=True), need_pixels=False)
        for name, reason in series.skipped:
            logger.info("series %s: %s left out: %s", ref.series_uid, name, reason)
        uids = sorted(str(ds.SOPInstanceUID) for ds in series.slices)
        identity = hashlib.sha256("\n".join(uids).encode()).hexdigest()
        return series.geometry, identity, series.slices

    def info(self, ref: SeriesRef) -> dict[str, Any]:
        """The image info OHIF reads (section 2.4), with the series' WADO-RS URL."""
        out: dict[str, Any] = {name: ref.fields[name] for name in _INFO_FIELDS if name in ref.fields}
        if "SeriesDescription" in ref.fields:
            out["SeriesDescription"] = ref.fields["SeriesDescription"]
        out["RetrieveURL"] = f"{self.url}/studies/{ref.study_uid}/series/{ref.series_uid}"
        return out

    # ------------------------------------------------------------ retrieving

    def retrieve(self, study_uid: str, series_uid: str) -> list[Any]:
        """All instances of a series with pixel data (WADO-RS)."""
        with self._calling(f"send series {series_uid}"):
            datasets: list[Any] = self.client().retrieve_series(study_uid, series_uid)
        if not datasets:
            raise NotFoundError(f"The PACS has no instances of series {series_uid}")
        return datasets

    def _lock(self, series_uid: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(series_uid, threading.Lock())

    def cached_path(self, series_uid: str) -> Path:
        return self.cache_dir / f"{series_uid}.nii.gz"

    def local_path(self, location: str) -> Path:
        """The series as a cached NIfTI file, retrieved and converted on first use."""
        study_uid, series_uid = parse_location(location)
        path = self.cached_path(series_uid)
        with self._lock(series_uid):
            if path.is_file():
                os.utime(path)  # recently used: last to be evicted
                return path
            volume = read_dicom_series(self.retrieve(study_uid, series_uid))
            partial = path.with_name(f".{uuid.uuid4().hex}.nii.gz")
            try:
                write_volume(partial, volume.array, volume.geometry.affine)
                os.replace(partial, path)
            finally:
                partial.unlink(missing_ok=True)
            logger.info("series %s retrieved and cached (%d slices)", series_uid, volume.geometry.shape[2])
        self._evict(keep=path)
        return path

    def _evict(self, keep: Path) -> None:
        """Remove least recently used cached series until the cache fits its budget."""
        files = [p for p in self.cache_dir.glob("*.nii.gz") if not p.name.startswith(".")]
        total = sum(p.stat().st_size for p in files)
        for path in sorted(files, key=lambda p: p.stat().st_mtime):
            if total <= self.settings.cache_bytes:
                break
            if path == keep:
                continue
            total -= path.stat().st_size
            path.unlink(missing_ok=True)
            logger.info("evicted cached series %s", path.name)

    def instance_uids(self, study_uid: str, series_uid: str) -> list[str]:
        """The SOPInstanceUIDs of a series (QIDO-RS, all pages)."""
        with self._calling(f"list the instances of series {series_uid}"):
            items = self.client().search_for_instances(
                study_uid, series_uid, fields=["00080018"], get_remaining=True
            )
        return [uid for item in items if (uid := _value(item, "00080018"))]

    def retrieve_instance(self, study_uid: str, series_uid: str, sop_instance_uid: str) -> Any:
        """One instance with its pixel data (WADO-RS)."""
        with self._calling(f"send instance {sop_instance_uid}"):
            return self.client().retrieve_instance(study_uid, series_uid, sop_instance_uid)

    # ------------------------------------------------------------ writing back

    def store(self, datasets: Sequence[Any]) -> None:
        """STOW-RS the datasets (DICOM SEG) to the PACS.

        Raises:
            PacsError: the PACS could not be reached, refused them (``refused``: an HTTP 4xx other
                than 408 and 429, or failed SOP instances in its answer), or failed.
        """
        import requests

        try:
            answer = self.client().store_instances(list(datasets))
        except requests.HTTPError as exc:
            status = exc.response.status_code if exc.response is not None else 0
            error = PacsError(f"The PACS refused to store the DICOM SEG: HTTP {status}")
            error.refused = 400 <= status < 500 and status not in (408, 429)
            raise error from exc
        except Exception as exc:
            raise PacsError(f"The PACS failed to store the DICOM SEG: {type(exc).__name__}: {exc}") from exc
        failed = getattr(answer, "FailedSOPSequence", None) if answer is not None else None
        if failed:
            reasons = sorted({str(getattr(item, "FailureReason", "?")) for item in failed})
            error = PacsError(
                f"The PACS refused to store the DICOM SEG (failure reason {', '.join(reasons)})"
            )
            error.refused = True
            raise error
