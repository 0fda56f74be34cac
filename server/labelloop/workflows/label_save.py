"""Saving a label: the lease check, the save, the lease release and double reading, in one place.

An annotator's save crosses two services: the datastore stores the version, active learning
decides its tag (double reading) and ends the annotator's lease. The version and the end of the
lease are one transaction, so a crash never leaves a lease on a finished case nor a finished
lease without its label. Double reading's consensus is derived from the reads and follows in a
second transaction of its own (reading every reader's file under the write lock would stall
every other writer); it is idempotent, and housekeeping completes any image whose consensus a
crash left missing (``ActiveLearning.complete_pending_reads``).

A save that does not say which model's output it corrected (the MONAI Label client never does)
is linked to the same annotator's last inference on that image since the label was last saved,
and the version records that link (``model_link``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from sqlalchemy import Connection

from labelloop.activelearning import ActiveLearning, ReadsOutcome
from labelloop.datastore import (
    ORIGINAL_TAG,
    Datastore,
    LabelFile,
    LabelVersion,
    Provenance,
    SegRecord,
    validate_id,
    validate_tag,
)
from labelloop.errors import ConflictError, LabelNotFoundError

__all__ = ["LabelSave", "LabelSaved", "linked_to_last_inference", "save_label"]


@dataclass(frozen=True)
class LabelSave:
    """A client's label save.

    Attributes:
        image_id: the image the label belongs to.
        tag: the tag asked for (``""`` or ``None``: ``final``); double reading may change it.
        file: the label file, on the image's voxel grid.
        provenance: who saves it and from which model output it started.
        if_match: the ``If-Match`` ETags (``["*"]``: any version), or ``None`` to save unconditionally.
        create_only: ``If-None-Match: *``: save only if the tag has no label yet.
        pacs_seg: ``(SOPInstanceUID, SeriesInstanceUID)`` of the DICOM SEG in the PACS that the
            label is (stored there by the client): it is not written back again, and is recorded
            as imported with the version.
        audit: writes the request's audit event in the save's own transaction (the API's
            ``PendingAudit.record_in``), so the two commit together, in one commit.
    """

    image_id: str
    tag: str | None
    file: LabelFile
    provenance: Provenance
    if_match: list[str] | None = None
    create_only: bool = False
    pacs_seg: tuple[str, str] | None = None
    audit: Callable[[Connection], None] | None = None


@dataclass(frozen=True)
class LabelSaved:
    """What a save did.

    Attributes:
        version: the new label version (its ``tag`` is the one it was saved under).
        lease_ended: whether the save ended the holder's lease; ``None`` when the tag ends none.
        reads: double reading's state after a read, else ``None``.
        write_back: for a final label of a PACS image, its SEG's way to the PACS (stored, or
            pending with the reason and the next try), else ``None``.
    """

    version: LabelVersion
    lease_ended: bool | None = None
    reads: ReadsOutcome | None = None
    write_back: SegRecord | None = None


def save_label(datastore: Datastore, activelearning: ActiveLearning, request: LabelSave) -> LabelSaved:
    """Save ``request`` as a new label version, end the holder's lease with it, complete double reading.

    Raises what the save raises (``LabelConflictError`` for a stale ``If-Match`` or a label that
    ``If-None-Match: *`` did not expect, ``GeometryMismatchError``
    for a label off the image's grid ...), and ``ConflictError`` when the holder's lease ended or began
    while the file was being checked, which would change the tag it belongs under.
    """
    image_id = validate_id(request.image_id)
    # The reads before the write share one transaction (the write ends it: see Database.snapshot).
    with datastore.db.snapshot():
        return _save_label(datastore, activelearning, request, image_id)


def _save_label(
    datastore: Datastore, activelearning: ActiveLearning, request: LabelSave, image_id: str
) -> LabelSaved:
    holder = request.provenance.holder
    tag = activelearning.save_tag(image_id, validate_tag(request.tag), holder)
    provenance = linked_to_last_inference(datastore, image_id, tag, request.provenance)
    ended: list[bool] = []

    def in_transaction(conn: Connection, version: LabelVersion) -> None:
        if activelearning.save_tag_in(conn, image_id, validate_tag(request.tag), holder) != tag:
            raise ConflictError(
                f"The lease of '{holder}' on image '{image_id}' changed during the save; save again"
            )
        if activelearning.ends_lease(tag):
            ended.append(activelearning.end_lease_in(conn, image_id, holder))
        if request.pacs_seg is not None:
            uid, series = request.pacs_seg
            datastore.segs.record_import(
                conn, uid, series, image_id=image_id, tag=version.tag, version=version.version
            )
        if request.audit is not None:  # last: on PostgreSQL it holds the trail's lock until the commit
            request.audit(conn)

    version = datastore.labels.save(
        image_id,
        tag,
        request.file,
        provenance,
        if_match=request.if_match,
        create_only=request.create_only,
        write_back=request.pacs_seg is None,
        in_transaction=in_transaction,
    )
    reads = activelearning.complete_reads(image_id) if activelearning.is_read(tag) else None
    # Only a version whose SEG the save wrote for the PACS has a write-back (LabelStore._stage).
    written = "seg_sop_instance_uid" in version.params
    write_back = (
        datastore.segs.for_version(version.image_id, version.tag, version.version) if written else None
    )
    return LabelSaved(version, ended[0] if ended else None, reads, write_back)


def linked_to_last_inference(
    datastore: Datastore, image_id: str, tag: str, provenance: Provenance
) -> Provenance:
    """``provenance`` with the model of the holder's last inference on the image, if it names none.

    Only a person's upload is linked, to a run later than the label's current version (an older
    run was the starting point of an earlier save, not of this one).
    """
    if provenance.model is not None or provenance.source != "upload" or tag == ORIGINAL_TAG:
        return provenance
    try:
        after: float | None = datastore.labels.get(image_id, tag).created_at
    except LabelNotFoundError:
        after = None
    run = datastore.runs.last(image_id, provenance.holder, after=after)
    if run is None:
        return provenance
    return replace(
        provenance,
        model=run.model,
        model_version=run.model_version,
        model_link={"source": "last_inference", "holder": run.holder, "ts": run.created_at},
    )
