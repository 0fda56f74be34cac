"""A patient's studies in time order, with each label's volume and its change since the study before.

A study is an image whose info says ``PatientID`` (read from DICOM for PACS images, or set by the
client in the image's info); ``StudyDate`` (DICOM's ``YYYYMMDD``, or ISO ``YYYY-MM-DD``) orders them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import select

from labelloop.datastore.ids import DEFAULT_TAG
from labelloop.datastore.images import ImageStore
from labelloop.datastore.labels import LabelStore
from labelloop.datastore.models import images
from labelloop.datastore.records import Context, ImageRecord, LabelVersion
from labelloop.errors import ImageNotFoundError, LabelNotFoundError, NotFoundError
from labelloop.measurements import LabelMeasurements, StudyChange, StudyVolumes, volume_changes

__all__ = ["PatientStudy", "Patients", "study_date"]


def study_date(info: dict[str, Any]) -> date | None:
    """The ``StudyDate`` of an image's info (``YYYYMMDD`` or ``YYYY-MM-DD``); ``None`` if absent or
    not a date."""
    value = info.get("StudyDate")
    if not isinstance(value, str):
        return None
    try:
        return date.fromisoformat(value.strip())
    except ValueError:
        return None


@dataclass(frozen=True)
class PatientStudy:
    """One study of a patient.

    Attributes:
        image: the study's image.
        acquired: its ``StudyDate``, if it has a valid one.
        label: the current version of its label (``final`` by default), if it has one.
        measurements: that version's measurements, if it has any (versions saved before the server
            measured labels have none).
        change: each label's volume on this study and its change since the previous study (mL, %).
    """

    image: ImageRecord
    acquired: date | None
    label: LabelVersion | None
    measurements: dict[str, Any] | None
    change: StudyChange


class Patients:
    """Reads a patient's studies and the volume trend of their labels (see the module)."""

    def __init__(self, ctx: Context, images: ImageStore, labels: LabelStore) -> None:
        self._ctx = ctx
        self._images = images
        self._labels = labels

    def _study_ids(self, patient_id: str) -> list[str]:
        query = select(images.c.id).where(
            images.c.deleted_at.is_(None), images.c.info["PatientID"].as_string() == patient_id
        )
        with self._ctx.db.read() as conn:
            return [row.id for row in conn.execute(query)]

    def studies(self, patient_id: str, tag: str = DEFAULT_TAG) -> list[PatientStudy]:
        """The patient's studies by ``StudyDate``, oldest first (undated ones last, by upload time),
        each with its ``tag`` label's measurements and their change since the study before.

        A study without a measured label has no volumes: its changes, and the next study's, are
        ``None``.

        Raises:
            NotFoundError: (404) no live image has ``PatientID == patient_id``.
        """
        found: list[tuple[ImageRecord, date | None]] = []
        for image_id in self._study_ids(patient_id):
            try:
                record = self._images.get(image_id)
            except ImageNotFoundError:  # deleted meanwhile
                continue
            found.append((record, study_date(record.info)))
        if not found:
            raise NotFoundError(f"No image has PatientID '{patient_id}'")
        found.sort(
            key=lambda item: (
                item[1] is None,
                item[1] or date.min,
                str(item[0].info.get("StudyTime", "")),
                item[0].created_at,
                item[0].id,
            )
        )
        labels: list[LabelVersion | None] = []
        for record, _ in found:
            try:
                labels.append(self._labels.get(record.id, tag))
            except LabelNotFoundError:
                labels.append(None)
        volumes = [
            StudyVolumes(
                study_id=record.id,
                volumes_ml={}
                if label is None or label.measurements is None
                else LabelMeasurements.from_json(label.measurements).volumes_ml(),
                acquired=acquired,
            )
            for (record, acquired), label in zip(found, labels, strict=True)
        ]
        changes = volume_changes(volumes)
        return [
            PatientStudy(
                image=record,
                acquired=acquired,
                label=label,
                measurements=None if label is None else label.measurements,
                change=change,
            )
            for (record, acquired), label, change in zip(found, labels, changes, strict=True)
        ]
