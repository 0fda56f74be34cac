"""``GET /measurements/patients/{patient_id}``: a patient's studies in time order with each label's
volume and its change since the previous study (ours; MONAI Label has no such route).

The studies and their changes come from ``Datastore.patients``; this router only shapes them.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter
from fastapi import Path as PathParam
from pydantic import BaseModel, Field

from labelloop.api import schemas
from labelloop.api.deps import STRICT_QUERY, DatastoreDep
from labelloop.datastore import DEFAULT_TAG, PatientStudy

__all__ = ["router"]

router = APIRouter(tags=["measurements"], responses=schemas.AUTH_ERRORS)


class VolumeChangeRead(BaseModel):
    """One label on one study against the study before it."""

    volume_ml: float | None = Field(description="Its volume on this study, mL; null: not measured")
    previous_ml: float | None = Field(
        description="Its volume on the previous study, mL; null on the first study or when not measured"
    )
    change_ml: float | None = Field(description="volume_ml - previous_ml; null when either is")
    change_pct: float | None = Field(
        description="100 * change_ml / previous_ml; null when change_ml is, or when previous_ml is 0"
    )


class LabelRef(BaseModel):
    """The label version a study was measured on."""

    tag: str
    version: int
    etag: str


class StudyRead(BaseModel):
    """One study (image) of the patient."""

    image: str = Field(description="The image id")
    study_date: str | None = Field(description="Its StudyDate as an ISO date (YYYY-MM-DD); null if unknown")
    info: dict[str, Any] = Field(description="The image's info (PatientID, StudyDate, ...)")
    label: LabelRef | None = Field(description="Its current final label version; null if it has none")
    measurements: dict[str, Any] | None = Field(
        description="That version's measurements, as in GET /datastore/label/versions; null if none"
    )
    changes: dict[str, VolumeChangeRead] = Field(
        description="Label name -> its volume and change since the previous study, for every label of "
        "any study of the patient"
    )


class PatientRead(BaseModel):
    """A patient's studies, oldest first (by StudyDate; undated studies last)."""

    patient_id: str
    tag: str = Field(description="The label tag measured (final)")
    studies: list[StudyRead]


def _study(study: PatientStudy) -> StudyRead:
    label = study.label
    return StudyRead(
        image=study.image.id,
        study_date=None if study.acquired is None else study.acquired.isoformat(),
        info=study.image.public_info(),
        label=None if label is None else LabelRef(tag=label.tag, version=label.version, etag=label.etag),
        measurements=study.measurements,
        changes={name: VolumeChangeRead(**change.to_json()) for name, change in study.change.labels.items()},
    )


@router.get(
    "/measurements/patients/{patient_id}",
    summary="A patient's studies by StudyDate, each label's volume and change since the previous study",
    dependencies=[STRICT_QUERY],
    responses=schemas.errors(400, 404),
)
def patient(
    ds: DatastoreDep,
    patient_id: Annotated[str, PathParam(min_length=1, max_length=64, description="The images' PatientID")],
) -> PatientRead:
    studies = ds.patients.studies(patient_id)
    return PatientRead(patient_id=patient_id, tag=DEFAULT_TAG, studies=[_study(s) for s in studies])
