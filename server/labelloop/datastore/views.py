"""Read-only views over the catalogue: stats, the MONAI Label datastore model, the training list."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from labelloop.datastore.counters import IMAGES, read_counters
from labelloop.datastore.ids import DEFAULT_TAG
from labelloop.datastore.models import images, label_versions, labels
from labelloop.datastore.records import Context

__all__ = ["Views"]


class Views:
    """Aggregates computed by the database, not by walking files."""

    def __init__(self, ctx: Context, name: str, description: str) -> None:
        self._ctx = ctx
        self._name = name
        self._description = description

    def stats(self) -> dict[str, Any]:
        """``{"total", "completed", "label_tags"}`` as MONAI Label reports them, from running totals."""
        with self._ctx.db.read() as conn:
            totals = read_counters(conn)
        tags = {
            name.split(":", 1)[1]: value
            for name, value in sorted(totals.items())
            if name.startswith("labels:") and value > 0
        }
        return {"total": totals.get(IMAGES, 0), "completed": tags.get(DEFAULT_TAG, 0), "label_tags": tags}

    def model(self) -> dict[str, Any]:
        """The whole datastore in MONAI Label's ``datastore_v2.json`` shape (``?output=all``)."""
        objects: dict[str, Any] = {}
        with self._ctx.db.read() as conn:
            for row in conn.execute(
                select(images.c.id, images.c.ext, images.c.name, images.c.info, images.c.created_at)
                .where(images.c.deleted_at.is_(None))
                .order_by(images.c.id)
            ):
                info = {**(row.info or {}), "ts": int(row.created_at), "name": row.name}
                objects[row.id] = {"image": {"ext": row.ext, "info": info}, "labels": {}}
            for lrow in conn.execute(
                select(
                    label_versions.c.image_id,
                    label_versions.c.tag,
                    label_versions.c.ext,
                    label_versions.c.name,
                    label_versions.c.params,
                    label_versions.c.info,
                    label_versions.c.created_at,
                )
                .join(
                    labels,
                    (labels.c.image_id == label_versions.c.image_id)
                    & (labels.c.tag == label_versions.c.tag)
                    & (labels.c.head_version == label_versions.c.version),
                )
                .where(labels.c.deleted_at.is_(None))
            ):
                entry = objects.get(lrow.image_id)
                if entry is None:
                    continue
                info = {**(lrow.params or {}), **(lrow.info or {})}
                info.update(ts=int(lrow.created_at), name=lrow.name)
                entry["labels"][lrow.tag] = {"ext": lrow.ext, "info": info}
        return {
            "name": self._name,
            "description": self._description,
            "images_dir": ".",
            "labels_dir": "labels",
            "objects": objects,
        }

    def train_list(self) -> list[dict[str, str]]:
        """``[{"image": path, "label": path}]`` for every image with a ``final`` label."""
        with self._ctx.db.read() as conn:
            rows = conn.execute(
                select(images.c.location, images.c.owned, label_versions.c.location.label("label_location"))
                .join(labels, labels.c.image_id == images.c.id)
                .join(
                    label_versions,
                    (label_versions.c.image_id == labels.c.image_id)
                    & (label_versions.c.tag == labels.c.tag)
                    & (label_versions.c.version == labels.c.head_version),
                )
                .where(
                    images.c.deleted_at.is_(None),
                    labels.c.deleted_at.is_(None),
                    labels.c.tag == DEFAULT_TAG,
                )
                .order_by(images.c.id)
            ).all()
        return [
            {
                "image": str(self._ctx.resolve(r.location, bool(r.owned))),
                "label": str(self._ctx.blobs.path(r.label_location)),
            }
            for r in rows
        ]
