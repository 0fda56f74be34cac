"""Images: uploaded (owned blobs) or registered in place from a studies folder."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, RowMapping, and_, bindparam, func, select, update

from labelloop.datastore.blobs import sha256_file
from labelloop.datastore.counters import IMAGES, bump, label_counter
from labelloop.datastore.ids import DEFAULT_TAG, validate_id
from labelloop.datastore.intake import accept_image
from labelloop.datastore.models import images, labels
from labelloop.datastore.records import Context, ImageRecord, check_info_size
from labelloop.errors import ConflictError, ImageNotFoundError, InvalidInputError, InvalidParamsError
from labelloop.imaging import Geometry, read_geometry, strip_extensions

__all__ = ["ImageStore"]

logger = logging.getLogger(__name__)

#: Info keys computed by the server; client values for them are not stored.
_RESERVED_INFO = frozenset({"ts", "name", "path"})


def _clean_info(info: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in info.items() if k not in _RESERVED_INFO}


# Built once: read by every label save, inference and download (the id bound per call).
_LIVE = select(images).where(images.c.id == bindparam("id"), images.c.deleted_at.is_(None))
_LIVE_LOCKED = _LIVE.with_for_update()


class ImageStore:
    """Create, read, update and (soft-)delete images."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx

    # ------------------------------------------------------------ reading

    def _record(self, row: RowMapping) -> ImageRecord:
        return ImageRecord(
            id=row["id"],
            name=row["name"],
            ext=row["ext"],
            format=row["format"],
            geometry=Geometry.from_json(row["geometry"]),
            sha256=row["sha256"],
            size_bytes=int(row["size_bytes"]),
            info=dict(row["info"] or {}),
            created_by=row["created_by"],
            created_at=float(row["created_at"]),
            updated_at=float(row["updated_at"]),
            path=self._ctx.resolve(row["location"], bool(row["owned"])),
            owned=bool(row["owned"]),
            location=row["location"],
        )

    def _live_row(self, conn: Connection, image_id: str, *, lock: bool = False) -> RowMapping | None:
        return conn.execute(_LIVE_LOCKED if lock else _LIVE, {"id": image_id}).mappings().first()

    def get(self, image_id: str) -> ImageRecord:
        """The live image ``image_id``; raises ``ImageNotFoundError``."""
        validate_id(image_id)
        with self._ctx.db.read() as conn:
            row = self._live_row(conn, image_id)
        if row is None:
            raise ImageNotFoundError(f"Image '{image_id}' not found")
        return self._record(row)

    def get_in(self, conn: Connection, image_id: str, *, lock: bool = False) -> ImageRecord:
        """Like ``get``, inside the caller's transaction."""
        row = self._live_row(conn, image_id, lock=lock)
        if row is None:
            raise ImageNotFoundError(f"Image '{image_id}' not found")
        return self._record(row)

    def file(self, record: ImageRecord) -> Path:
        """The image's file on this server; a PACS series is retrieved and cached on first use."""
        return self._ctx.materialize(record.location, record.owned)

    def register_remote(
        self, image_id: str, location: str, geometry: Geometry, identity: str, info: dict[str, Any], user: str
    ) -> tuple[ImageRecord, bool]:
        """Register a PACS series (no pixels fetched); returns ``(record, changed)``."""
        validate_id(image_id)
        with self._ctx.db.read() as conn:
            row = conn.execute(select(images).where(images.c.id == image_id)).mappings().first()
        if row is not None and row["deleted_at"] is not None and row["deleted_reason"] != "missing":
            raise ConflictError(f"Image '{image_id}' was deleted; it is not registered again")
        if row is not None and row["deleted_at"] is None and row["sha256"] == identity:
            return self._record(row), False
        values = {
            "location": location,
            "owned": False,
            "name": f"{image_id}.nii.gz",
            "ext": ".nii.gz",
            "format": "dicom",
            "geometry": geometry.to_json(),
            "sha256": identity,
            "size_bytes": 0,
            "mtime_ns": None,
        }
        record, _ = self._upsert(image_id, values, _clean_info(info), user, replace_labelled=True)
        return record, True

    def exists(self, image_id: str, checksum: str | None = None) -> bool:
        """Whether the image exists and, when ``checksum`` (``[SHA256:]hex``) is given, has that content."""
        try:
            record = self.get(image_id)
        except ImageNotFoundError:
            return False
        if not checksum:
            return True
        algo, _, value = checksum.rpartition(":")
        if algo and algo.upper() not in ("SHA256", "SHA-256"):
            raise InvalidParamsError(f"Unsupported checksum algorithm {algo!r}; use SHA256:<hex>")
        return value.strip().lower() == record.sha256

    def known(self, image_id: str) -> bool:
        """Whether ``image_id`` was ever registered (deleted images included: their history remains)."""
        validate_id(image_id)
        with self._ctx.db.read() as conn:
            return conn.execute(select(images.c.id).where(images.c.id == image_id)).first() is not None

    def all(self) -> list[ImageRecord]:
        """Every live image, ordered by id."""
        with self._ctx.db.read() as conn:
            rows = conn.execute(
                select(images).where(images.c.deleted_at.is_(None)).order_by(images.c.id)
            ).mappings()
            return [self._record(r) for r in rows]

    def unfinished_in(self, conn: Connection) -> dict[str, dict[str, Any]]:
        """Live images without a live ``final`` label, by id: id -> info (in ``conn``'s transaction)."""
        final = (
            select(labels.c.image_id)
            .where(
                labels.c.image_id == images.c.id,
                labels.c.tag == DEFAULT_TAG,
                labels.c.deleted_at.is_(None),
                labels.c.head_version > 0,
            )
            .exists()
        )
        rows = conn.execute(
            select(images.c.id, images.c.info)
            .where(images.c.deleted_at.is_(None), ~final)
            .order_by(images.c.id)
        ).all()
        return {r.id: dict(r.info or {}) for r in rows}

    def count(self) -> int:
        with self._ctx.db.read() as conn:
            return int(conn.execute(select(func.count()).where(images.c.deleted_at.is_(None))).scalar_one())

    # ------------------------------------------------------------ writing

    def add(
        self,
        source: Path,
        *,
        filename: str | None,
        image_id: str | None,
        info: dict[str, Any],
        user: str,
        disposable: bool = False,
    ) -> ImageRecord:
        """Store an uploaded image under ``image_id`` (default: ``filename`` without its extensions).

        ``disposable``: ``source`` is a scratch file the caller no longer needs (it may be moved).

        Uploading the same content again only merges ``info``. New content replaces an image
        that has no labels; an image with labels is never silently replaced (``ConflictError``).
        """
        if image_id is None:
            if not filename:
                raise InvalidInputError("Give an image id or upload a file with a name")
            image_id = strip_extensions(filename)
        validate_id(image_id)
        with accept_image(source, filename, self._ctx.blobs, self._ctx.decoder) as accepted:
            name = f"{image_id}{accepted.ext}"
            key = self._ctx.blobs.new_key("images", name)
            sha256, size = self._ctx.blobs.put(key, accepted.file, move=disposable or accepted.converted)
        values = {
            "location": key,
            "owned": True,
            "name": name,
            "ext": accepted.ext,
            "format": accepted.format,
            "geometry": accepted.geometry.to_json(),
            "sha256": sha256,
            "size_bytes": size,
            "mtime_ns": None,
        }
        try:
            record, stale = self._upsert(image_id, values, _clean_info(info), user, replace_labelled=False)
        except BaseException:
            self._ctx.blobs.delete(key)
            raise
        if stale is not None:
            self._ctx.blobs.delete(stale)
        return record

    def register(self, path: Path, image_id: str, user: str) -> tuple[ImageRecord, bool]:
        """Register a file in place (no copy). Returns ``(record, changed)``.

        Re-registering an unchanged file (same size and mtime) reads nothing but the stat.
        """
        validate_id(image_id)
        path = path.resolve()
        stat = path.stat()
        with self._ctx.db.read() as conn:
            row = conn.execute(select(images).where(images.c.id == image_id)).mappings().first()
        if row is not None and row["deleted_at"] is not None and row["deleted_reason"] != "missing":
            raise ConflictError(f"Image '{image_id}' was deleted; it is not registered again")
        if (
            row is not None
            and row["deleted_at"] is None
            and row["location"] == str(path)
            and row["mtime_ns"] == stat.st_mtime_ns
            and row["size_bytes"] == stat.st_size
        ):
            return self._record(row), False
        if row is not None and row["owned"] and row["deleted_at"] is None:
            raise ConflictError(f"Image '{image_id}' was uploaded; the studies file {path.name} is ignored")
        geometry, fmt = read_geometry(path)
        values = {
            "location": str(path),
            "owned": False,
            "name": path.name,
            "ext": path.name[len(image_id) :] if path.name.startswith(image_id) else "".join(path.suffixes),
            "format": fmt,
            "geometry": geometry.to_json(),
            "sha256": sha256_file(path),
            "size_bytes": stat.st_size,
            "mtime_ns": stat.st_mtime_ns,
        }
        record, _ = self._upsert(image_id, values, {}, user, replace_labelled=True)
        return record, True

    def _upsert(
        self,
        image_id: str,
        values: dict[str, Any],
        info: dict[str, Any],
        user: str,
        *,
        replace_labelled: bool,
    ) -> tuple[ImageRecord, str | None]:
        """Insert or update the row; returns the record and an owned blob key that is now unused."""
        now = self._ctx.clock()
        locked = select(images).where(images.c.id == image_id).with_for_update()
        with self._ctx.db.write() as conn:
            row = conn.execute(locked).mappings().first()
            if row is None:
                # ON CONFLICT DO NOTHING: a writer that inserted the same new id meanwhile (another
                # server uploading it, or registering the same studies folder) wins, and this one
                # goes on as an update of that row instead of failing on the primary key.
                inserted = conn.execute(
                    self._ctx.db.insert_ignore(
                        images,
                        id=image_id,
                        info={**info, "user": user},
                        created_by=user,
                        created_at=now,
                        updated_at=now,
                        **values,
                    ).returning(images.c.id)
                ).first()
                if inserted is not None:
                    bump(self._ctx.db, conn, IMAGES, +1)
                    return self.get_in(conn, image_id), None
                row = conn.execute(locked).mappings().one()
            live = row["deleted_at"] is None
            if live and row["sha256"] == values["sha256"] and row["owned"] == values["owned"]:
                # The same content again: keep the stored file, merge the info.
                merged = {**(row["info"] or {}), **info, "user": user}
                conn.execute(
                    update(images)
                    .where(images.c.id == image_id)
                    .values(
                        info=merged,
                        updated_at=now,
                        mtime_ns=values["mtime_ns"],
                        location=row["location"] if row["owned"] else values["location"],
                    )
                )
                return self.get_in(conn, image_id), values["location"] if values["owned"] else None
            if live and not replace_labelled and self._has_labels(conn, image_id):
                raise ConflictError(
                    f"Image '{image_id}' already exists with other content and has labels; "
                    "delete it first or upload under another id"
                )
            stale = row["location"] if row["owned"] else None
            base_info = (row["info"] or {}) if live else {}
            if not live:
                bump(self._ctx.db, conn, IMAGES, +1)
            conn.execute(
                update(images)
                .where(images.c.id == image_id)
                .values(
                    info={**base_info, **info, "user": user},
                    updated_at=now,
                    deleted_at=None,
                    deleted_reason=None,
                    **({"created_at": now, "created_by": user} if not live else {}),
                    **values,
                )
            )
            return self.get_in(conn, image_id), stale

    @staticmethod
    def _has_labels(conn: Connection, image_id: str) -> bool:
        found = conn.execute(
            select(labels.c.tag)
            .where(and_(labels.c.image_id == image_id, labels.c.deleted_at.is_(None)))
            .limit(1)
        ).first()
        return found is not None

    def update_info(
        self, image_id: str, info: dict[str, Any], user: str, *, max_bytes: int | None = None
    ) -> ImageRecord:
        """Merge ``info`` (plus ``user``) into the image's info; with ``max_bytes``, the merged info
        may take at most that many bytes (a client's update; the server's own notes are not capped)."""
        validate_id(image_id)
        with self._ctx.db.write() as conn:
            return self.update_info_in(conn, image_id, info, user, max_bytes=max_bytes)

    def update_info_in(
        self,
        conn: Connection,
        image_id: str,
        info: dict[str, Any],
        user: str,
        *,
        max_bytes: int | None = None,
    ) -> ImageRecord:
        """``update_info`` in ``conn``'s write transaction."""
        record = self.get_in(conn, image_id, lock=True)
        merged = {**record.info, **_clean_info(info), "user": user}
        check_info_size(merged, max_bytes)
        conn.execute(
            update(images).where(images.c.id == image_id).values(info=merged, updated_at=self._ctx.clock())
        )
        return self.get_in(conn, image_id)

    def delete(self, image_id: str, *, reason: str = "deleted") -> None:
        """Retire an image and its labels. Label versions and files stay for the history."""
        validate_id(image_id)
        now = self._ctx.clock()
        with self._ctx.db.write() as conn:
            self.get_in(conn, image_id, lock=True)
            conn.execute(
                update(images).where(images.c.id == image_id).values(deleted_at=now, deleted_reason=reason)
            )
            bump(self._ctx.db, conn, IMAGES, -1)
            live_tags = conn.execute(
                select(labels.c.tag).where(
                    labels.c.image_id == image_id, labels.c.deleted_at.is_(None), labels.c.head_version > 0
                )
            ).scalars()
            for tag in live_tags:
                bump(self._ctx.db, conn, label_counter(tag), -1)
            conn.execute(
                update(labels)
                .where(labels.c.image_id == image_id, labels.c.deleted_at.is_(None))
                .values(deleted_at=now, updated_at=now)
            )

    def registered_in(self, folder: Path) -> list[tuple[str, Path]]:
        """Live images registered in place whose file lies directly in ``folder``."""
        folder = folder.resolve()
        with self._ctx.db.read() as conn:
            rows = conn.execute(
                select(images.c.id, images.c.location).where(
                    images.c.owned.is_(False), images.c.deleted_at.is_(None)
                )
            ).all()
        return [(r.id, Path(r.location)) for r in rows if Path(r.location).parent == folder]
