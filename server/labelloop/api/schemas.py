"""The wire format: MONAI Label's response shapes (and our additive fields), apart from the domain records.

Services hand out plain records (``Job``, ``ModelVersion``, ``LabelVersion``); the functions here
turn them into what clients read, and the models give OpenAPI the shapes. Optional fields that a
record does not have are left unset, and the routes serialise with ``exclude_unset``, so an absent
key stays absent on the wire (Slicer tells a task that has no ``details`` from one whose details
are empty).
"""

from __future__ import annotations

import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from labelloop.activelearning import Handout, Lease, RankEntry, ReadsOutcome, Skip
from labelloop.datastore import LabelVersion
from labelloop.jobs import Job, JobStatus
from labelloop.registry import ModelVersion
from labelloop.workflows import LabelSaved

__all__ = [
    "AUTH_ERRORS",
    "MAX_INT",
    "DatastoreModelRead",
    "DatastoreStatsRead",
    "EachTaskRead",
    "ErrorRead",
    "ID_SCHEMA",
    "InfoRead",
    "InferModelRead",
    "ModelFileRead",
    "TAG_SCHEMA",
    "TrainPairRead",
    "ValidationErrorRead",
    "ValidationIssue",
    "errors",
    "file_response",
    "LabelSavedRead",
    "LabelVersionRead",
    "LeaseRead",
    "ModelVersionRead",
    "NextSampleRead",
    "RankRead",
    "TaskRead",
    "format_ts",
    "label_saved",
    "label_version",
    "lease",
    "model_version",
    "next_sample",
    "rank",
    "task",
    "task_json",
]


def format_ts(ts: float) -> str:
    """MONAI Label's task timestamp: local time ``YYYY-mm-dd HH:MM:SS``."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


# ---------------------------------------------------------------- parameters

#: ``labelloop.datastore.ID_PATTERN`` without ``..`` (which ``validate_id`` refuses besides): a
#: letter or digit, then letters, digits, ``_``, ``-`` and single dots. Written without lookahead
#: so that every JSON Schema dialect (and the fuzzer's generator) reads it the same way.
_ID_REGEX = r"[A-Za-z0-9](\.?[A-Za-z0-9_-])*\.?"

#: The JSON Schema of an id (image, label, model, strategy, task). It documents the rule; the
#: server checks it with ``validate_id`` and answers 400 ``{"detail"}`` naming it, as it always has.
ID_SCHEMA: dict[str, Any] = {"pattern": f"^{_ID_REGEX}$", "minLength": 1, "maxLength": 128}
#: A label tag: an id, or empty for ``final`` (as in MONAI Label).
TAG_SCHEMA: dict[str, Any] = {"pattern": f"^({_ID_REGEX})?$", "maxLength": 128}
#: The largest integer an INTEGER column holds (PostgreSQL's int4; label and model versions are
#: INTEGER): a larger query or path integer is a 422, never an overflow in the database driver.
MAX_INT = 2**31 - 1


# ---------------------------------------------------------------- errors


class ErrorRead(BaseModel):
    """Every refusal and error: ``{"detail": message}`` (MONAI Label section 1.3)."""

    detail: str


class ValidationIssue(BaseModel):
    """One entry of a request-validation 422 (FastAPI's pydantic-v2 shape, as MONAI Label sends it)."""

    model_config = ConfigDict(extra="allow")

    type: str
    loc: list[str | int]
    msg: str
    input: Any = None
    ctx: dict[str, Any] | None = None


class ValidationErrorRead(BaseModel):
    """422: a list of issues when a parameter fails its declared type, else a message (a ``params``
    or ``info`` field that is not a JSON object, nested too deeply, or an invalid option)."""

    detail: str | list[ValidationIssue]


_ERROR_DESCRIPTIONS = {
    400: "Invalid id or tag, or an unreadable request",
    401: "Not logged in, or the token is invalid or expired (auth on)",
    403: "The user's role may not call this route (auth on)",
    404: "Not found",
    406: "The feature is not enabled on this server",
    409: "Conflicts with the current state (a changed label, a lease, a retired version)",
    413: "Larger than the configured limit",
    415: "Not a supported image format",
    422: "Invalid parameters",
    429: "Too many: a task of this kind is already queued or running, too many sessions, or log-ins",
    502: "The PACS answered with an error or cannot be reached",
    503: "Busy, or the audit trail cannot be written; try again shortly",
    504: "The PACS did not answer in time",
    507: "The storage set aside for sessions is full",
}

_BEARER_CHALLENGE = {
    "WWW-Authenticate": {
        "description": "``Bearer`` (RFC 6750)",
        "required": True,
        "schema": {"type": "string"},
    }
}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` of a route's error statuses: ``{"detail": ...}``, a 422 also FastAPI's list."""
    out: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        entry: dict[str, Any] = {
            "model": ValidationErrorRead if status == 422 else ErrorRead,
            "description": _ERROR_DESCRIPTIONS[status],
        }
        if status == 401:
            entry["headers"] = _BEARER_CHALLENGE
        out[status] = entry
    return out


#: With auth on, every route but the log-in routes can answer these (``api/permissions.py``).
AUTH_ERRORS = errors(401, 403)


def file_response(
    *media_types: str, description: str = "The file, as an attachment", etag: bool = True
) -> dict[int | str, dict[str, Any]]:
    """The 200 of a download: its media types, ``Content-Disposition`` (clients take the file name
    and its extension from it) and, where the route sends one, ``ETag``."""
    headers: dict[str, Any] = {
        "Content-Disposition": {
            "description": "``attachment`` with the file name",
            "required": True,
            "schema": {"type": "string"},
        }
    }
    if etag:
        headers["ETag"] = {"description": "The content's entity tag", "schema": {"type": "string"}}
    content = {media_type: {"schema": {"type": "string", "format": "binary"}} for media_type in media_types}
    return {200: {"description": description, "content": content, "headers": headers}}


# ---------------------------------------------------------------- info and datastore


class InferModelRead(BaseModel):
    """A model of ``/info/`` (MONAI Label section 4), plus our ``state`` and ``version``."""

    model_config = ConfigDict(extra="allow")

    type: str
    description: str
    labels: dict[str, int] | list[str]
    dimension: int
    config: dict[str, Any]


class DatastoreStatsRead(BaseModel):
    """``GET /datastore/`` (``output=stats``) and ``info.datastore``."""

    total: int
    completed: int
    label_tags: dict[str, int]


class AutotrainRead(BaseModel):
    """``/info/``'s ``autotrain``: training queues by itself after ``after`` final labels saved by
    people (``new_final_labels`` so far, since ``since_ts``), for ``models`` with their ``options``."""

    after: int
    enabled: bool
    counts: str
    new_final_labels: int
    since_ts: float
    models: list[str]
    options: dict[str, dict[str, Any]]


class InfoRead(BaseModel):
    """``GET /info/``: the app descriptor (MONAI Label section 4); never a top-level ``config``."""

    model_config = ConfigDict(extra="allow")

    name: str
    description: str
    version: str
    labels: list[str]
    lesions: list[str] = Field(
        default_factory=list,
        description="the labels that are lesions (ours): their measurements say lesion: true, and "
        "their component count is a lesion count",
    )
    models: dict[str, InferModelRead]
    trainers: dict[str, dict[str, Any]]
    strategies: dict[str, dict[str, Any]]
    scoring: dict[str, dict[str, Any]]
    train_stats: dict[str, dict[str, Any]]
    autotrain: AutotrainRead
    datastore: DatastoreStatsRead
    pacs: bool = Field(description="whether images come from a PACS (GET /datastore/pacs)")


class _InfoEntry(BaseModel):
    model_config = ConfigDict(extra="allow")

    ext: str
    info: dict[str, Any]


class _DatastoreObject(BaseModel):
    image: _InfoEntry
    labels: dict[str, _InfoEntry]


class DatastoreModelRead(BaseModel):
    """``GET /datastore/?output=all``: MONAI Label's ``datastore_v2.json`` (section 5)."""

    model_config = ConfigDict(extra="allow")

    name: str
    description: str
    images_dir: str
    labels_dir: str
    objects: dict[str, _DatastoreObject]


class TrainPairRead(BaseModel):
    """One entry of ``GET /datastore/?output=train``: server paths of an image and its final label."""

    image: str
    label: str


class ModelFileRead(BaseModel):
    """``GET /model/info/{model}`` and ``PUT /model/{model}``: the active weights (section 2.9)."""

    model_config = ConfigDict(extra="allow")

    checksum: str = Field(description="SHA256:<hex>")
    modified_time: int
    version: int
    train_stats: dict[str, Any] | None = None


# ---------------------------------------------------------------- jobs


class TaskRead(BaseModel):
    """The task object of MONAI Label section 2.14, plus our ``kind``, ``name``, ``progress``, ``result``
    and ``created_by`` (who asked for it; ``autotrain`` for automatic training runs)."""

    id: str
    status: str
    request: dict[str, Any]
    start_ts: str
    kind: str
    name: str
    created_by: str | None = None
    details: list[str] | None = None
    end_ts: str | None = None
    progress: dict[str, Any] | None = None
    result: Any = None
    error: str | None = None


def task(job: Job) -> TaskRead:
    """A job as MONAI Label's task object; ``details`` only once the job left the queue."""
    view: dict[str, Any] = {
        "id": job.id,
        "status": job.status.value,
        "request": job.request,
        "start_ts": format_ts(job.started_at or job.created_at),
        "kind": job.kind.value,
        "name": job.name,
        "created_by": job.created_by,
    }
    if job.status != JobStatus.SUBMITTED:
        # Slicer reads details[-1] of a stopped task: never leave it empty.
        view["details"] = list(job.log_tail) or [
            job.error or f"{job.kind.value} job {job.status.value.lower()}"
        ]
    if job.finished_at is not None:
        view["end_ts"] = format_ts(job.finished_at)
    if job.progress:
        view["progress"] = job.progress
    if job.result is not None:
        view["result"] = job.result
    if job.error:
        view["error"] = job.error
    return TaskRead(**view)


def task_json(job: Job) -> dict[str, Any]:
    """``task(job)`` as the JSON body, for answers that nest task objects in a plain dict."""
    return task(job).model_dump(mode="json", exclude_unset=True)


class EachTaskRead(BaseModel):
    """One trainer's or scoring method's entry of ``POST /train/`` and ``POST /scoring/``."""

    result: TaskRead | dict[str, Any] | None
    detail: str | None


# ---------------------------------------------------------------- models


class ModelVersionRead(BaseModel):
    """One entry of ``GET /model/{model}/versions``."""

    model: str
    version: int
    active: bool
    source: str
    created_by: str
    created_ts: float
    activated_ts: float | None
    retired_ts: float | None
    checksum: str
    size_bytes: int
    metrics: dict[str, Any]
    params: dict[str, Any]
    training_set: list[dict[str, Any]]
    duration_s: float | None


def model_version(v: ModelVersion) -> ModelVersionRead:
    return ModelVersionRead(
        model=v.model,
        version=v.version,
        active=v.active,
        source=v.source,
        created_by=v.created_by,
        created_ts=v.created_at,
        activated_ts=v.activated_at,
        retired_ts=v.retired_at,
        checksum=v.checksum,
        size_bytes=v.size_bytes,
        metrics=v.metrics,
        params=v.params,
        training_set=v.training_set,
        duration_s=v.duration_s,
    )


# ---------------------------------------------------------------- labels


class LabelSavedRead(BaseModel):
    """``PUT /datastore/label``: the new version, plus what the save did to leases and double reading."""

    image: str
    label: str
    tag: str
    version: int
    etag: str
    lease_ended: bool | None = None
    reads: int | None = None
    reads_needed: int | None = None
    agreement: dict[str, Any] | None = None
    final_version: int | None = None
    write_back: dict[str, Any] | None = Field(
        None,
        description="A final label of a PACS image: its DICOM SEG's way to the PACS. `state` stored, or "
        "pending (the PACS did not take it yet: `reason`, and `next_attempt_at` for the next try; "
        "the label is saved either way), or failed (the PACS refused it)",
    )


def _reads(outcome: ReadsOutcome) -> dict[str, Any]:
    out: dict[str, Any] = {"reads": outcome.reads, "reads_needed": outcome.reads_needed}
    if outcome.agreement is not None:
        out["agreement"] = outcome.agreement
    if outcome.final_version is not None:
        out["final_version"] = outcome.final_version
    return out


def label_saved(saved: LabelSaved) -> LabelSavedRead:
    v = saved.version
    fields: dict[str, Any] = {"image": v.image_id, "label": v.image_id, "tag": v.tag}
    fields.update(version=v.version, etag=v.etag)
    if saved.lease_ended is not None:
        fields["lease_ended"] = saved.lease_ended
    if saved.reads is not None:
        fields.update(_reads(saved.reads))
    if saved.write_back is not None:
        wb = saved.write_back
        fields["write_back"] = {
            "state": wb.state,
            "seg_sop_instance_uid": wb.sop_instance_uid,
            "seg_series_uid": wb.series_uid,
            "attempts": wb.attempts,
            "reason": wb.reason,
            "next_attempt_at": wb.next_attempt_at if wb.state == "pending" else None,
        }
    return LabelSavedRead(**fields)


class LabelVersionRead(BaseModel):
    """One entry of a label's history (``GET /datastore/label/versions``), with its provenance."""

    image: str
    tag: str
    version: int
    etag: str
    name: str
    sha256: str
    size_bytes: int
    image_sha256: str
    author: str
    client_id: str | None
    ts: float
    parent_version: int | None
    model: str | None
    model_version: int | None
    source: str
    label_info: Any
    info: dict[str, Any]
    measurements: dict[str, Any] | None = Field(
        description="each label's volume_ml, voxels, components (a lesion count), largest_component_ml, "
        "centroid_ras_mm, centroid_ijk, bbox and lesion flag, as measured when the version was saved: "
        '{"connectivity", "voxel_volume_mm3", "labels": {name: {...}}}; null for versions saved '
        "before the server measured labels",
    )


def label_version(v: LabelVersion) -> LabelVersionRead:
    return LabelVersionRead(
        image=v.image_id,
        tag=v.tag,
        version=v.version,
        etag=v.etag,
        name=v.name,
        sha256=v.sha256,
        size_bytes=v.size_bytes,
        image_sha256=v.image_sha256,
        author=v.author,
        client_id=v.client_id,
        ts=v.created_at,
        parent_version=v.parent_version,
        model=v.model,
        model_version=v.model_version,
        source=v.source,
        label_info=v.params.get("label_info"),
        info=v.public_info(),
        measurements=v.measurements,
    )


# ---------------------------------------------------------------- active learning


class NextSampleRead(BaseModel):
    """``POST /activelearning/{strategy}``: the image's info (MONAI Label: ``id``, ``path``, its info keys),
    plus the lease and why it was chosen; ``{}`` when no image is left."""

    model_config = ConfigDict(extra="allow")

    id: str | None = None
    path: str | None = None
    checksum: str | None = None
    lease: dict[str, Any] | None = None
    reason: str | None = None
    score: float | None = None
    weight: int | None = None
    skipped: list[str] | None = None


def next_sample(strategy: str, handout: Handout | None) -> NextSampleRead:
    """The image's info keys, then MONAI Label's ``id``, ``path`` and our lease, reason and score;
    ``random`` also carries MONAI Label's ``weight`` (when it was served, epoch seconds)."""
    if handout is None:
        return NextSampleRead()
    lease = handout.lease
    answer: dict[str, Any] = {
        **handout.image.public_info(),
        "id": handout.image.id,
        "path": str(handout.path),
        "checksum": handout.image.checksum,
        "lease": {"holder": lease.holder, "expires_ts": lease.expires_at, "renewed": handout.renewed},
        "reason": handout.reason,
    }
    if handout.score is not None:
        answer["score"] = handout.score
    if handout.skipped:
        answer["skipped"] = list(handout.skipped)
    if strategy == "random":
        answer["weight"] = int(time.time())
    return NextSampleRead(**answer)


class SkipRead(BaseModel):
    """An image an annotator skipped (``GET /activelearning/skips``); ``reason`` as they gave it."""

    image: str
    holder: str
    strategy: str
    skipped_ts: float
    reason: str | None


def skip(record: Skip) -> SkipRead:
    return SkipRead(
        image=record.image_id,
        holder=record.holder,
        strategy=record.strategy,
        skipped_ts=record.skipped_at,
        reason=record.reason,
    )


class LeaseRead(BaseModel):
    """An open lease (``GET /activelearning/leases``)."""

    image: str
    holder: str
    strategy: str
    created_ts: float
    expires_ts: float


def lease(lease: Lease) -> LeaseRead:
    return LeaseRead(
        image=lease.image_id,
        holder=lease.holder,
        strategy=lease.strategy,
        created_ts=lease.created_at,
        expires_ts=lease.expires_at,
    )


class RankRead(BaseModel):
    """One place of ``GET /activelearning/{strategy}/ranking``."""

    rank: int
    image: str
    score: float | None
    model_version: int | None
    scores: dict[str, float | None]
    reason: str
    leased: bool


def rank(entry: RankEntry) -> RankRead:
    return RankRead(
        rank=entry.rank,
        image=entry.image_id,
        score=entry.score,
        model_version=entry.model_version,
        scores=entry.scores,
        reason=entry.reason,
        leased=entry.leased,
    )
