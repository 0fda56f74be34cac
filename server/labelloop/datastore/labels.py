"""Labels: immutable versions per (image, tag), with provenance and optimistic concurrency."""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import Connection, RowMapping, and_, bindparam, desc, func, insert, or_, select, update

from labelloop.datastore.counters import bump, label_counter
from labelloop.datastore.ids import DEFAULT_TAG, ORIGINAL_TAG, validate_id, validate_tag
from labelloop.datastore.images import ImageStore
from labelloop.datastore.intake import accept_label
from labelloop.datastore.measured import Measurer
from labelloop.datastore.models import label_versions, labels
from labelloop.datastore.records import (
    Context,
    ImageRecord,
    LabelFile,
    LabelSource,
    LabelVersion,
    Provenance,
    check_info_size,
)
from labelloop.datastore.segs import PacsSegs, StagedSeg
from labelloop.errors import ConflictError, InvalidParamsError, LabelConflictError, LabelNotFoundError
from labelloop.imaging import read_volume
from labelloop.imaging.dicomseg import SegAuthor

__all__ = ["HistoryPage", "LabelStore", "parse_if_match"]

#: The most versions one page of the history holds (``LabelStore.history``).
MAX_HISTORY_PAGE = 1000


def parse_if_match(header: str | None) -> list[str] | None:
    """The entity tags of an ``If-Match`` header (``["*"]`` for a wildcard); ``None`` when absent."""
    if header is None or not header.strip():
        return None
    return [part.strip() for part in header.split(",") if part.strip()]


@dataclass(frozen=True)
class _Staged:
    """A label file accepted and stored as a blob, waiting for its row."""

    key: str
    name: str
    ext: str
    sha256: str
    size: int
    provenance: Provenance
    params: dict[str, Any]
    seg: StagedSeg | None = None
    measurements: dict[str, Any] | None = None


@dataclass(frozen=True)
class HistoryPage:
    """One page of the label history, newest first.

    Attributes:
        versions: at most the page's ``limit`` versions.
        next_cursor: pass it as ``cursor`` for the next (older) page; ``None`` on the last page.
    """

    versions: list[LabelVersion]
    next_cursor: str | None


# Built once (hot reads: /info/'s autotrain counts); the values are bound per call.
_SAVES = select(func.count()).where(
    label_versions.c.tag == bindparam("tag"), label_versions.c.created_at > bindparam("since")
)
_SAVES_OF = _SAVES.where(label_versions.c.source.in_(bindparam("sources", expanding=True)))
# ... and those of every save.
_HEAD_LOCKED = (
    select(labels)
    .where(labels.c.image_id == bindparam("image_id"), labels.c.tag == bindparam("tag"))
    .with_for_update()
)
_LIVE_HEAD = select(labels.c.head_version).where(
    labels.c.image_id == bindparam("image_id"),
    labels.c.tag == bindparam("tag"),
    labels.c.deleted_at.is_(None),
    labels.c.head_version > 0,
)
_LIVE_HEAD_LOCKED = _LIVE_HEAD.with_for_update()
_VERSION = select(label_versions).where(
    label_versions.c.image_id == bindparam("image_id"),
    label_versions.c.tag == bindparam("tag"),
    label_versions.c.version == bindparam("version"),
)
_INSERT_VERSION = insert(label_versions)
_MOVE_HEAD = (
    update(labels)
    .where(labels.c.image_id == bindparam("b_image_id"), labels.c.tag == bindparam("b_tag"))
    .values(head_version=bindparam("b_version"), deleted_at=None, updated_at=bindparam("b_now"))
)

_BAD_CURSOR = "'cursor' is not one this server gave out; take it from the previous page's Link header"


def _encode_cursor(created_at: float, row_id: int) -> str:
    raw = json.dumps([created_at, row_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[float, int]:
    """The ``(created_at, id)`` a cursor of ``_encode_cursor`` holds; 422 for anything else."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_at, row_id = json.loads(raw)
        if isinstance(row_id, bool) or not isinstance(row_id, int) or not 0 <= row_id < 2**63:
            raise ValueError(cursor)
        if isinstance(created_at, bool):
            raise ValueError(cursor)
        position = float(created_at)
    except (binascii.Error, ValueError, TypeError):
        raise InvalidParamsError(_BAD_CURSOR) from None
    if not math.isfinite(position):
        raise InvalidParamsError(_BAD_CURSOR)
    return position, row_id


class LabelStore:
    """Save, read, annotate and retire label versions; each saved version is measured
    (``measurer``: the app's label names and lesions) and keeps its measurements."""

    def __init__(
        self, ctx: Context, images: ImageStore, segs: PacsSegs, measurer: Measurer | None = None
    ) -> None:
        self._ctx = ctx
        self._images = images
        self._segs = segs
        self._measurer = measurer or Measurer()

    def _record(self, row: RowMapping) -> LabelVersion:
        return LabelVersion(
            image_id=row["image_id"],
            tag=row["tag"],
            version=int(row["version"]),
            name=row["name"],
            ext=row["ext"],
            sha256=row["sha256"],
            size_bytes=int(row["size_bytes"]),
            image_sha256=row["image_sha256"],
            params=dict(row["params"] or {}),
            info=dict(row["info"] or {}),
            author=row["author"],
            client_id=row["client_id"],
            created_at=float(row["created_at"]),
            parent_version=row["parent_version"],
            model=row["model"],
            model_version=row["model_version"],
            source=row["source"],
            path=self._ctx.blobs.path(row["location"]),
            measurements=row["measurements"],
        )

    # ------------------------------------------------------------ writing

    def save(
        self,
        image_id: str,
        tag: str | None,
        file: LabelFile,
        provenance: Provenance,
        *,
        if_match: list[str] | None = None,
        create_only: bool = False,
        write_back: bool = True,
        in_transaction: Callable[[Connection, LabelVersion], object] | None = None,
    ) -> LabelVersion:
        """Store ``file`` as the next version of ``(image_id, tag)``.

        The label must lie on the image's grid. With ``if_match`` (ETags, or ``["*"]``) the save
        succeeds only if the current version is one of them; otherwise ``LabelConflictError``
        and nothing is stored; with ``create_only`` it succeeds only if the tag has no live label
        (``If-None-Match: *``). A final label of a PACS image is written back as a DICOM SEG first
        (``write_back``); if the PACS refuses it, nothing is saved. ``in_transaction`` runs in the
        transaction that inserts the version, so a caller's own writes (ending a lease) commit with
        it or not at all; if it raises, nothing is saved.
        """
        validate_id(image_id)
        tag = validate_tag(tag)
        image = self._images.get(image_id)
        staged = self._stage(image, tag, file, provenance, write_back)
        try:
            with self._ctx.db.write() as conn:
                version = self._insert_in(conn, image, tag, staged, if_match, create_only)
                if staged.seg is not None:
                    self._segs.add_in(conn, staged.seg, image.id, tag, version.version)
                if in_transaction is not None:
                    in_transaction(conn, version)
        except BaseException:
            self._ctx.blobs.delete(staged.key)
            if staged.seg is not None:
                self._ctx.blobs.delete(staged.seg.key)
            raise
        if staged.seg is not None and self._ctx.remote is not None:
            # Committed: now the PACS gets the SEG (else the periodic write-back retries it).
            self._segs.push(staged.seg.sop_instance_uid, self._ctx.remote.push_seg)
        return version

    def _stage(
        self, image: ImageRecord, tag: str, file: LabelFile, provenance: Provenance, write_back: bool
    ) -> _Staged:
        """Check and measure the file against the image, write a PACS image's final label back, store
        the blob."""
        params = dict(provenance.params)
        affine = image.geometry.affine
        with accept_label(
            file.path,
            file.filename,
            image.geometry,
            self._ctx.blobs,
            self._ctx.decoder,
            measure=lambda volume: self._measurer.json_of(volume.array, affine),
        ) as accepted:
            seg = None
            if image.remote and tag == DEFAULT_TAG and write_back and self._ctx.remote is not None:
                author = SegAuthor(
                    creator=provenance.holder, model=provenance.model, model_version=provenance.model_version
                )
                label_array = np.asarray(read_volume(accepted.file).array)
                uid, series_uid, raw = self._ctx.remote.prepare_seg(image.location, label_array, author)
                seg = StagedSeg(uid, series_uid, self._ctx.blobs.new_key("segs", f"{uid}.dcm"))
                self._ctx.blobs.put_bytes(seg.key, raw)
                params.update(seg_series_uid=series_uid, seg_sop_instance_uid=uid)
            name = f"{image.id}{accepted.ext}"
            key = self._ctx.blobs.new_key("labels", name)
            try:
                sha256, size = self._ctx.blobs.put(
                    key, accepted.file, move=file.disposable or accepted.converted
                )
            except BaseException:
                if seg is not None:
                    self._ctx.blobs.delete(seg.key)
                raise
        return _Staged(key, name, accepted.ext, sha256, size, provenance, params, seg, accepted.measurements)

    def _insert_in(
        self,
        conn: Connection,
        image: ImageRecord,
        tag: str,
        staged: _Staged,
        if_match: list[str] | None,
        create_only: bool,
    ) -> LabelVersion:
        """Insert the staged file as the next version and move the head to it."""
        current = self._images.get_in(conn, image.id)
        if current.sha256 != image.sha256:
            raise ConflictError(f"Image '{image.id}' was replaced while the label was being saved")
        provenance = staged.provenance
        model_version = provenance.model_version
        if provenance.model and model_version is None and tag != ORIGINAL_TAG:
            model_version = self._started_from(conn, image.id, provenance.model)
        now = self._ctx.clock()
        conn.execute(
            self._ctx.db.insert_ignore(labels, image_id=image.id, tag=tag, head_version=0, updated_at=now)
        )
        head = conn.execute(_HEAD_LOCKED, {"image_id": image.id, "tag": tag}).mappings().one()
        head_version = int(head["head_version"])
        live = head_version > 0 and head["deleted_at"] is None
        if if_match is not None:
            self._check_if_match(conn, image.id, tag, head_version if live else 0, if_match)
        if create_only and live:
            raise LabelConflictError(
                f"Image '{image.id}' already has a '{tag}' label (version {head_version})"
            )
        version = head_version + 1
        conn.execute(
            _INSERT_VERSION,
            dict(
                image_id=image.id,
                tag=tag,
                version=version,
                location=staged.key,
                name=staged.name,
                ext=staged.ext,
                sha256=staged.sha256,
                size_bytes=staged.size,
                image_sha256=image.sha256,
                params=staged.params,
                info={"model_link": dict(provenance.model_link)} if provenance.model_link else {},
                author=provenance.author,
                client_id=provenance.client_id,
                created_at=now,
                parent_version=head_version if head_version > 0 else None,
                model=provenance.model,
                model_version=model_version,
                source=provenance.source,
                measurements=staged.measurements,
            ),
        )
        conn.execute(_MOVE_HEAD, {"b_image_id": image.id, "b_tag": tag, "b_version": version, "b_now": now})
        if not live:
            bump(self._ctx.db, conn, label_counter(tag), +1)
        return self._get_in(conn, image.id, tag, version)

    def _check_if_match(
        self, conn: Connection, image_id: str, tag: str, head_version: int, tags: list[str]
    ) -> None:
        if head_version == 0:
            raise LabelConflictError(
                f"If-Match was given but image '{image_id}' has no '{tag}' label; save without If-Match"
            )
        if "*" in tags:
            return
        current = self._get_in(conn, image_id, tag, head_version)
        if current.etag not in tags:
            raise LabelConflictError(
                f"The '{tag}' label of image '{image_id}' changed: it is now version {current.version} "
                f"(ETag {current.etag}) by {current.author}; reload it before saving"
            )

    @staticmethod
    def _started_from(conn: Connection, image_id: str, model: str) -> int | None:
        """The model version of the newest model output for this image by ``model``, if any."""
        row = conn.execute(
            select(label_versions.c.model_version)
            .where(
                label_versions.c.image_id == image_id,
                label_versions.c.model == model,
                label_versions.c.model_version.is_not(None),
            )
            .order_by(desc(label_versions.c.created_at))
            .limit(1)
        ).first()
        return int(row.model_version) if row is not None else None

    def update_info(
        self, image_id: str, tag: str | None, info: dict[str, Any], user: str, *, max_bytes: int | None = None
    ) -> LabelVersion:
        """Merge ``info`` (plus ``user``) into the current version's info; the file stays as it is.
        With ``max_bytes``, the merged info may take at most that many bytes (413)."""
        validate_id(image_id)
        tag = validate_tag(tag)
        with self._ctx.db.write() as conn:
            head = self._head(conn, image_id, tag, lock=True)
            current = self._get_in(conn, image_id, tag, head)
            merged = {
                **current.info,
                **{k: v for k, v in info.items() if k not in ("ts", "name")},
                "user": user,
            }
            check_info_size(merged, max_bytes)
            conn.execute(
                update(label_versions)
                .where(
                    label_versions.c.image_id == image_id,
                    label_versions.c.tag == tag,
                    label_versions.c.version == head,
                )
                .values(info=merged)
            )
            return self._get_in(conn, image_id, tag, head)

    def delete(self, image_id: str, tag: str | None) -> bool:
        """Retire ``(image_id, tag)``; its versions stay in the history. False if there was none.

        Raises ``ImageNotFoundError`` for an unknown image (a missing tag is not an error, as in
        MONAI Label).
        """
        validate_id(image_id)
        tag = validate_tag(tag)
        now = self._ctx.clock()
        with self._ctx.db.write() as conn:
            self._images.get_in(conn, image_id)
            result = conn.execute(
                update(labels)
                .where(labels.c.image_id == image_id, labels.c.tag == tag, labels.c.deleted_at.is_(None))
                .values(deleted_at=now, updated_at=now)
            )
            if result.rowcount:
                bump(self._ctx.db, conn, label_counter(tag), -1)
            return bool(result.rowcount)

    # ------------------------------------------------------------ reading

    def _head(self, conn: Connection, image_id: str, tag: str, *, lock: bool = False) -> int:
        row = conn.execute(
            _LIVE_HEAD_LOCKED if lock else _LIVE_HEAD, {"image_id": image_id, "tag": tag}
        ).first()
        if row is None:
            raise LabelNotFoundError(f"Label '{tag}' of image '{image_id}' not found")
        return int(row.head_version)

    def _get_in(self, conn: Connection, image_id: str, tag: str, version: int) -> LabelVersion:
        values = {"image_id": image_id, "tag": tag, "version": version}
        row = conn.execute(_VERSION, values).mappings().first()
        if row is None:
            raise LabelNotFoundError(f"Version {version} of label '{tag}' of image '{image_id}' not found")
        return self._record(row)

    def get(self, image_id: str, tag: str | None, version: int | None = None) -> LabelVersion:
        """The current version of ``(image_id, tag)``, or the given ``version`` from its history."""
        validate_id(image_id)
        tag = validate_tag(tag)
        with self._ctx.db.read() as conn:
            if version is None:
                version = self._head(conn, image_id, tag)
            return self._get_in(conn, image_id, tag, version)

    def versions(self, image_id: str, tag: str | None = None) -> list[LabelVersion]:
        """The history of an image's labels (one tag, or all), newest first."""
        validate_id(image_id)
        query = select(label_versions).where(label_versions.c.image_id == image_id)
        if tag is not None:
            query = query.where(label_versions.c.tag == validate_tag(tag))
        with self._ctx.db.read() as conn:
            rows = conn.execute(
                query.order_by(desc(label_versions.c.created_at), desc(label_versions.c.version))
            ).mappings()
            return [self._record(r) for r in rows]

    def history(
        self,
        *,
        image_id: str | None = None,
        tag: str | None = None,
        author: str | None = None,
        client_id: str | None = None,
        since: float | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> HistoryPage:
        """Label versions of one image or of all (deleted images' included), newest first, a page at a time.

        Each filter given must match exactly: ``tag``, ``author`` (the user the server acted for),
        ``client_id`` (the client's name for the annotator); ``since`` (epoch seconds) keeps versions
        saved then or later. At most ``limit`` (1 to ``MAX_HISTORY_PAGE``) versions are read; the page
        says where the next one starts (a keyset position, so saves made meanwhile shift nothing).

        Raises:
            InvalidParamsError: a ``cursor`` this store did not make, or ``limit`` out of range.
        """
        if not 1 <= limit <= MAX_HISTORY_PAGE:
            raise InvalidParamsError(f"'limit' must be 1 to {MAX_HISTORY_PAGE}, not {limit}")
        c = label_versions.c
        query = select(label_versions)
        if image_id is not None:
            query = query.where(c.image_id == validate_id(image_id))
        if tag is not None:
            query = query.where(c.tag == validate_tag(tag))
        if author is not None:
            query = query.where(c.author == author)
        if client_id is not None:
            query = query.where(c.client_id == client_id)
        if since is not None:
            query = query.where(c.created_at >= since)
        if cursor is not None:
            created_at, row_id = _decode_cursor(cursor)
            query = query.where(
                or_(c.created_at < created_at, and_(c.created_at == created_at, c.id < row_id))
            )
        query = query.order_by(desc(c.created_at), desc(c.id)).limit(limit + 1)
        with self._ctx.db.read() as conn:
            rows = list(conn.execute(query).mappings())
        more = len(rows) > limit
        rows = rows[:limit]
        last = rows[-1] if more else None
        return HistoryPage(
            versions=[self._record(r) for r in rows],
            next_cursor=_encode_cursor(float(last["created_at"]), int(last["id"])) if last else None,
        )

    @staticmethod
    def live_tags_in(conn: Connection, prefix: str) -> dict[str, set[str]]:
        """image id -> its live tags that start with ``prefix`` (in ``conn``'s transaction)."""
        rows = conn.execute(
            select(labels.c.image_id, labels.c.tag).where(
                labels.c.tag.like(prefix.replace("%", r"\%").replace("_", r"\_") + "%", escape="\\"),
                labels.c.deleted_at.is_(None),
                labels.c.head_version > 0,
            )
        ).all()
        out: dict[str, set[str]] = {}
        for r in rows:
            out.setdefault(r.image_id, set()).add(r.tag)
        return out

    def count_saves(self, tag: str, since: float, sources: Sequence[LabelSource] | None = None) -> int:
        """How many versions of ``tag`` were saved after ``since`` (epoch seconds), of ``sources`` only
        when given (``upload``: by people; ``import``; ``infer``)."""
        values: dict[str, Any] = {"tag": tag, "since": since}
        if sources is not None:
            values["sources"] = list(sources)
        with self._ctx.db.read() as conn:
            return int(conn.execute(_SAVES if sources is None else _SAVES_OF, values).scalar_one())

    def current(self, tag: str | None = None) -> list[LabelVersion]:
        """The current version of every live label (of one tag, or all) of live images."""
        query = (
            select(label_versions)
            .join(
                labels,
                (labels.c.image_id == label_versions.c.image_id)
                & (labels.c.tag == label_versions.c.tag)
                & (labels.c.head_version == label_versions.c.version),
            )
            .where(labels.c.deleted_at.is_(None))
        )
        if tag is not None:
            query = query.where(labels.c.tag == tag)
        with self._ctx.db.read() as conn:
            return [
                self._record(r) for r in conn.execute(query.order_by(label_versions.c.image_id)).mappings()
            ]
