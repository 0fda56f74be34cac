"""Sessions: temporary server-side images that are not part of the datastore (``/session/``)."""

from __future__ import annotations

import logging
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import RowMapping, delete, insert, select, update

from labelloop.datastore.ids import ID_PATTERN, validate_id
from labelloop.datastore.intake import accept_image
from labelloop.datastore.models import sessions
from labelloop.datastore.records import Context, SessionRecord
from labelloop.errors import InvalidInputError, QuotaExceededError, SessionNotFoundError, StorageFullError
from labelloop.imaging import strip_extensions, write_volume
from labelloop.settings import SessionSettings

__all__ = ["SessionStore"]

logger = logging.getLogger(__name__)


class SessionStore:
    """Create, read, touch and expire sessions; their files live under ``<data>/sessions/<id>/``."""

    def __init__(self, ctx: Context, settings: SessionSettings) -> None:
        self._ctx = ctx
        self._settings = settings
        self.root = ctx.blobs.path("sessions")

    def _record(self, row: RowMapping) -> SessionRecord:
        return SessionRecord(
            id=row["id"],
            directory=self.root / row["id"],
            image_name=row["image_name"],
            meta=dict(row["meta"] or {}),
            client_id=row["client_id"],
            created_at=float(row["created_at"]),
            last_access_at=float(row["last_access_at"]),
            expiry_s=int(row["expiry_s"]),
            created_by=row["created_by"],
        )

    def _expiry(self, requested: int) -> int:
        if requested < 0:
            raise InvalidInputError("expiry must be >= 0 seconds (0 means the server maximum)")
        if requested == 0:
            return self._settings.max_expiry_s
        return min(requested, self._settings.max_expiry_s)

    def create(
        self,
        files: Sequence[tuple[str | None, Path]],
        *,
        uncompress: bool = False,
        expiry: int = 0,
        client_id: str | None = None,
        meta: dict[str, Any] | None = None,
        user: str = "",
    ) -> SessionRecord:
        """Validate the uploaded files as one image and keep it for ``expiry`` seconds.

        One file: a NIfTI or NRRD volume, or a zipped DICOM series. Several files: the
        slices of one DICOM series. A DICOM series is stored converted to NIfTI.
        """
        if not files:
            raise InvalidInputError("Upload at least one file as 'files'")
        self._check_quota(sum(path.stat().st_size for _, path in files))
        expiry_s = self._expiry(expiry)
        session_id = str(uuid.uuid1())
        blobs = self._ctx.blobs
        key_prefix = f"sessions/{session_id}"
        try:
            if len(files) == 1:
                filename, path = files[0]
                stem = strip_extensions(filename or "")
                stem = stem if ID_PATTERN.fullmatch(stem) else "image"
                # A zip is always read as a DICOM series, so ``uncompress`` changes nothing here.
                with accept_image(path, filename, blobs, self._ctx.decoder) as accepted:
                    image_name = f"{stem}{accepted.ext}"
                    blobs.put(f"{key_prefix}/{image_name}", accepted.file, move=True)
            else:
                image_name = "image.nii.gz"
                with self._ctx.decoder.dicom_files(files) as volume, blobs.scratch(".nii.gz") as converted:
                    write_volume(converted, volume.array, volume.geometry.affine)
                    blobs.put(f"{key_prefix}/{image_name}", converted, move=True)
            now = self._ctx.clock()
            with self._ctx.db.write() as conn:
                conn.execute(
                    insert(sessions).values(
                        id=session_id,
                        image_name=image_name,
                        meta=meta or {},
                        client_id=client_id,
                        created_by=user,
                        created_at=now,
                        last_access_at=now,
                        expiry_s=expiry_s,
                    )
                )
        except BaseException:
            shutil.rmtree(self.root / session_id, ignore_errors=True)
            raise
        return self.get(session_id)

    def _check_quota(self, incoming: int) -> None:
        """``QuotaExceededError`` (429) at ``max_sessions`` live sessions; ``StorageFullError`` (507)
        when the sessions' files and this upload would take more than ``max_total_bytes``."""
        now = self._ctx.clock()
        with self._ctx.db.read() as conn:
            live = [self._record(row) for row in conn.execute(select(sessions)).mappings()]
        live = [r for r in live if not r.expired(now)]
        if len(live) >= self._settings.max_sessions:
            raise QuotaExceededError(
                f"{len(live)} sessions are open, the most allowed (setting sessions.max_sessions); "
                "delete one or wait for one to expire"
            )
        used = sum(p.stat().st_size for p in self.root.rglob("*") if p.is_file()) if self.root.is_dir() else 0
        if used + incoming > self._settings.max_total_bytes:
            raise StorageFullError(
                f"Sessions take {used:,} bytes; this upload's {incoming:,} would pass the quota of "
                f"{self._settings.max_total_bytes:,} (setting sessions.max_total_bytes)"
            )

    def get(self, session_id: str, *, touch: bool = False) -> SessionRecord:
        """A live session; ``touch`` refreshes its last access time. Expired ones are not found."""
        validate_id(session_id, "session id")
        now = self._ctx.clock()
        with self._ctx.db.write() if touch else self._ctx.db.read() as conn:
            row = conn.execute(select(sessions).where(sessions.c.id == session_id)).mappings().first()
            if row is None or self._record(row).expired(now):
                raise SessionNotFoundError(f"Session ({session_id}) Not Found")
            if touch:
                conn.execute(update(sessions).where(sessions.c.id == session_id).values(last_access_at=now))
                row = conn.execute(select(sessions).where(sessions.c.id == session_id)).mappings().one()
        return self._record(row)

    def delete(self, session_id: str) -> SessionRecord:
        """Remove a session and its files."""
        validate_id(session_id, "session id")
        with self._ctx.db.write() as conn:
            row = conn.execute(select(sessions).where(sessions.c.id == session_id)).mappings().first()
            if row is None:
                raise SessionNotFoundError("Session Not Found")
            conn.execute(delete(sessions).where(sessions.c.id == session_id))
        record = self._record(row)
        shutil.rmtree(record.directory, ignore_errors=True)
        return record

    def remove_expired(self) -> int:
        """Delete expired sessions and session folders without a row; returns how many sessions went."""
        now = self._ctx.clock()
        with self._ctx.db.write() as conn:
            rows = [self._record(r) for r in conn.execute(select(sessions)).mappings()]
            expired = [r for r in rows if r.expired(now)]
            if expired:
                conn.execute(delete(sessions).where(sessions.c.id.in_([r.id for r in expired])))
        for record in expired:
            shutil.rmtree(record.directory, ignore_errors=True)
        known = {r.id for r in rows} - {r.id for r in expired}
        if self.root.is_dir():
            grace = self._settings.max_expiry_s
            for folder in self.root.iterdir():
                # A folder without a row is a create that crashed; leave fresh ones to finish.
                if folder.name not in known and folder.stat().st_mtime + grace < now:
                    shutil.rmtree(folder, ignore_errors=True)
        if expired:
            logger.info("removed %d expired sessions", len(expired))
        return len(expired)

    def info(self, record: SessionRecord) -> dict[str, Any]:
        """MONAI Label's ``session_info`` (``image`` is the file name, never a server path)."""
        return {
            "name": record.id,
            "path": str(record.directory),
            "image": record.image_name,
            "meta": record.meta,
            "create_ts": int(record.created_at),
            "last_access_ts": int(record.last_access_at),
            "expiry": record.expiry_s,
            "created_by": record.created_by,
        }
