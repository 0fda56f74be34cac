"""How far the labelling has come, for curators: counts per tag, per author, and final labels per day.

Every figure is one aggregate query (no file is read, no row is walked in Python), so the answer
costs about the same with 100 or 100,000 images. Times are epoch seconds (UTC).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import BigInteger, ColumnElement, Connection, case, cast, func, select

from labelloop.datastore.counters import IMAGES, read_counters
from labelloop.datastore.ids import DEFAULT_TAG, ORIGINAL_TAG
from labelloop.datastore.models import images, label_versions, labels
from labelloop.db import Database

__all__ = ["DAY_S", "AuthorWork", "DayCount", "LabelProgress", "label_progress"]

#: The width of a bucket of ``LabelProgress.finals_by_day``, in seconds (UTC days).
DAY_S = 86400


@dataclass(frozen=True)
class AuthorWork:
    """What one annotator saved: ``labels`` versions (clients' saves, any tag), ``finals`` of them final."""

    annotator: str
    labels: int
    finals: int


@dataclass(frozen=True)
class DayCount:
    """Images whose first final label was saved on the UTC day starting at ``day_ts``; ``total`` up to it."""

    day_ts: int
    new: int
    total: int


@dataclass(frozen=True)
class LabelProgress:
    """The catalogue's progress.

    Attributes:
        images: live images.
        labelled: live images with at least one live label other than a model's ``original``.
        finals: live images with a ``final`` label (MONAI Label's ``completed``).
        tags: live labels per tag (MONAI Label's ``label_tags``).
        authors: per annotator, most label versions first; imported labels are nobody's work and left out.
        finals_by_day: the days on which images got their first final label, oldest first; the last
            ``total`` is ``finals``.
    """

    images: int
    labelled: int
    finals: int
    tags: dict[str, int]
    authors: list[AuthorWork]
    finals_by_day: list[DayCount]


def label_progress(db: Database, *, by_client_id: bool = False) -> LabelProgress:
    """The catalogue's progress, read in one transaction.

    ``by_client_id`` tells annotators apart by the ``client_id`` their client sent, else by the
    user the server acted for (the author): with auth off every save has the same author, and the
    client's id is all that tells annotators apart (as it is for leases, ``Provenance.holder``).
    """
    with db.read() as conn:
        totals = read_counters(conn)
        tags = {
            name.split(":", 1)[1]: value
            for name, value in sorted(totals.items())
            if name.startswith("labels:") and value > 0
        }
        return LabelProgress(
            images=totals.get(IMAGES, 0),
            labelled=_labelled(conn),
            finals=tags.get(DEFAULT_TAG, 0),
            tags=tags,
            authors=_authors(conn, by_client_id),
            finals_by_day=_finals_by_day(conn),
        )


def _live_labels() -> tuple[ColumnElement[bool], ...]:
    """Conditions for a live label of a live image (what the running totals count)."""
    return (labels.c.deleted_at.is_(None), labels.c.head_version > 0, images.c.deleted_at.is_(None))


def _labelled(conn: Connection) -> int:
    query = (
        select(func.count(func.distinct(labels.c.image_id)))
        .join(images, images.c.id == labels.c.image_id)
        .where(*_live_labels(), labels.c.tag != ORIGINAL_TAG)
    )
    return int(conn.execute(query).scalar_one())


def _authors(conn: Connection, by_client_id: bool) -> list[AuthorWork]:
    who: ColumnElement[str] = label_versions.c.author
    if by_client_id:
        who = func.coalesce(func.nullif(label_versions.c.client_id, ""), label_versions.c.author)
    who = who.label("annotator")
    finals = func.sum(case((label_versions.c.tag == DEFAULT_TAG, 1), else_=0))
    query = (
        select(who, func.count().label("labels"), finals.label("finals"))
        .where(label_versions.c.source == "upload")
        .group_by(who)
        .order_by(func.count().desc(), who)
    )
    return [AuthorWork(str(r.annotator), int(r.labels), int(r.finals or 0)) for r in conn.execute(query)]


def _finals_by_day(conn: Connection) -> list[DayCount]:
    first = (
        select(func.min(label_versions.c.created_at).label("ts"))
        .join(
            labels,
            (labels.c.image_id == label_versions.c.image_id) & (labels.c.tag == label_versions.c.tag),
        )
        .join(images, images.c.id == label_versions.c.image_id)
        .where(label_versions.c.tag == DEFAULT_TAG, *_live_labels())
        .group_by(label_versions.c.image_id)
        .subquery()
    )
    # Integer division of integers on both SQLite and PostgreSQL; the cast rounds to the second first.
    day = (cast(first.c.ts, BigInteger) // DAY_S).label("day")
    rows = conn.execute(select(day, func.count().label("new")).group_by(day).order_by(day))
    out: list[DayCount] = []
    total = 0
    for row in rows:
        total += int(row.new)
        out.append(DayCount(int(row.day) * DAY_S, int(row.new), total))
    return out
