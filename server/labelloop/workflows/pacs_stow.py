"""A DICOM SEG stored in the PACS through the proxy (OHIF's "save segmentation") becomes a label
version at once, attributed to the person who stored it.

OHIF stores a SEG with STOW-RS through ``/proxy/dicom/``; once the PACS has accepted it, each SEG
instance of the request that segments a series of the catalogue is decoded onto its image's grid
(``imaging.dicomseg.read_seg``) and saved as the image's next final label version by the
person's own save (``save_label``: their lease ends, double reading counts it), marked as the
SEG it came from, so it is not written back to the PACS again nor imported a second time by the
next refresh. A SEG that cannot become a label is recorded with the reason (``GET
/datastore/pacs``); the PACS keeps it either way.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

from labelloop.activelearning import ActiveLearning
from labelloop.datastore import DEFAULT_TAG, Datastore, LabelFile, PacsLink, Provenance, stow_datasets
from labelloop.errors import LabelloopError
from labelloop.imaging import write_volume
from labelloop.workflows.label_save import LabelSave, save_label

__all__ = ["StowedSeg", "save_stowed_segs"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StowedSeg:
    """What became of one SEG instance of a STOW-RS request: the label version it became
    (``version``), or why not (``reason``)."""

    sop_instance_uid: str
    image_id: str | None = None
    version: int | None = None
    reason: str | None = None


def save_stowed_segs(
    datastore: Datastore,
    activelearning: ActiveLearning,
    pacs: PacsLink,
    body: bytes,
    content_type: str,
    provenance: Provenance,
) -> list[StowedSeg]:
    """Save the SEGs of a STOW-RS request body (``multipart/related``) that the PACS accepted."""
    out = []
    for seg in stow_datasets(body, content_type):
        if not pacs.is_seg(seg):
            continue
        uid = str(getattr(seg, "SOPInstanceUID", "") or "")
        series = str(getattr(seg, "SeriesInstanceUID", "") or "")
        if not uid or datastore.segs.known([uid]):
            continue
        try:
            if not pacs.has_instance(seg):  # a PACS may answer 200 and still drop an instance
                logger.warning("SEG %s stored through the proxy is not in the PACS; not saved", uid)
                out.append(StowedSeg(uid, reason="the PACS did not keep it"))
                continue
            image, read, params = pacs.decode_seg(seg, datastore.images)
            with datastore.blobs.scratch(".nii.gz") as path:
                write_volume(path, read.label, image.geometry.affine)
                saved = save_label(
                    datastore,
                    activelearning,
                    LabelSave(
                        image.id,
                        DEFAULT_TAG,
                        LabelFile(path, disposable=True),
                        replace(provenance, params={**provenance.params, **params, "stored_via": "proxy"}),
                        pacs_seg=(uid, series),
                    ),
                )
        except LabelloopError as exc:
            reason = f"not imported: {exc.message}"
            datastore.segs.record_import(None, uid, series, reason=reason)
            logger.warning("SEG %s stored through the proxy by %s %s", uid, provenance.author, reason)
            out.append(StowedSeg(uid, reason=reason))
            continue
        logger.info(
            "SEG %s stored through the proxy by %s is version %d of image %s",
            uid,
            provenance.author,
            saved.version.version,
            image.id,
        )
        out.append(StowedSeg(uid, image.id, saved.version.version))
    return out
