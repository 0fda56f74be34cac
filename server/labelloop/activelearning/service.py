"""Next sample for an annotator: rank candidates with a strategy, lease the first free one.

Leases keep annotators apart: an image is handed to at most ``reads`` holders at a time
(1 unless double reading is on), and never twice to the same holder. A lease ends when its
holder saves a final label, releases it, or it expires. The same holder asking again gets
its open lease back instead of a second image.
"""

from __future__ import annotations

import logging
import random
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, and_, func, insert, select, update

from labelloop.activelearning.builtin import BUILTIN_STRATEGIES
from labelloop.activelearning.models import leases
from labelloop.activelearning.reading import complete_reads
from labelloop.activelearning.scores import ScoreStore
from labelloop.datastore import DEFAULT_TAG, Datastore
from labelloop.errors import InvalidParamsError, NotFoundError
from labelloop.settings import ActiveLearningSettings
from labelloop.tasks import Candidate, Ranked, Strategy, StrategyContext, config_choices

__all__ = ["ActiveLearning", "Lease", "reader_tag"]

logger = logging.getLogger(__name__)

_TAG_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


READ_PREFIX = "read."


def reader_tag(holder: str) -> str:
    """The tag a double-reading annotator's labels are saved under: ``read.<holder>``."""
    return (READ_PREFIX + _TAG_UNSAFE.sub("_", holder))[:128]


@dataclass(frozen=True)
class Lease:
    image_id: str
    holder: str
    strategy: str
    created_at: float
    expires_at: float


class ActiveLearning:
    """Strategies, leases, rankings and double reading over the datastore."""

    def __init__(
        self,
        datastore: Datastore,
        strategies: Mapping[str, Strategy],
        settings: ActiveLearningSettings,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.datastore = datastore
        self.db = datastore.db
        self.scores = ScoreStore(self.db, clock)
        self.strategies: dict[str, Strategy] = {**BUILTIN_STRATEGIES, **strategies}
        self.settings = settings
        self._clock = clock

    # ------------------------------------------------------------ what exists

    def describe(self) -> dict[str, dict[str, Any]]:
        """``/info/`` ``strategies``: description and config of each."""
        return {
            name: {"description": s.spec.description, "config": dict(s.spec.config)}
            for name, s in self.strategies.items()
        }

    def strategy(self, name: str) -> Strategy:
        found = self.strategies.get(name)
        if found is None:
            raise NotFoundError(f"Strategy '{name}' not found; /info/ lists the strategies")
        return found

    # ------------------------------------------------------------ candidates

    def _expire(self, conn: Connection, now: float) -> None:
        conn.execute(
            update(leases)
            .where(leases.c.ended_at.is_(None), leases.c.expires_at <= now)
            .values(ended_at=now, end_reason="expired")
        )

    def _open_leases(self, conn: Connection) -> list[Lease]:
        rows = conn.execute(select(leases).where(leases.c.ended_at.is_(None))).mappings()
        return [
            Lease(r["image_id"], r["holder"], r["strategy"], float(r["created_at"]), float(r["expires_at"]))
            for r in rows
        ]

    def _unfinished(self, conn: Connection) -> dict[str, dict[str, Any]]:
        return self.datastore.images.unfinished_in(conn)

    def _reads(self, conn: Connection) -> dict[str, set[str]]:
        """image id -> reader tags it has labels under (double reading)."""
        return self.datastore.labels.live_tags_in(conn, READ_PREFIX)

    def _candidates(
        self, conn: Connection, holder: str | None, now: float
    ) -> tuple[list[Candidate], list[Candidate]]:
        """``(free candidates for holder, images busy with others)`` with their stored scores."""
        reads = self.settings.reads
        unfinished = self._unfinished(conn)
        open_leases = self._open_leases(conn)
        done_reads = self._reads(conn) if reads > 1 else {}
        scores = self.scores.all()
        holders: dict[str, set[str]] = {}
        for lease in open_leases:
            holders.setdefault(lease.image_id, set()).add(lease.holder)
        free, busy = [], []
        for image_id, info in unfinished.items():
            candidate = Candidate(image_id=image_id, info=info, scores=scores.get(image_id, {}))
            taken = holders.get(image_id, set())
            readers = done_reads.get(image_id, set())
            already = holder is not None and (holder in taken or reader_tag(holder) in readers)
            if taken:
                busy.append(candidate)
            if already or len(taken) + len(readers) >= reads:
                continue
            free.append(candidate)
        return free, busy

    # ------------------------------------------------------------ next sample

    def next_sample(self, strategy_name: str, params: Mapping[str, Any], user: str) -> dict[str, Any]:
        """Lease the next image to the caller (``client_id``, else the user); ``{}`` when none is left."""
        strategy = self.strategy(strategy_name)
        holder = params.get("client_id") or user
        if not isinstance(holder, str) or not holder or len(holder) > 256:
            raise InvalidParamsError("'client_id' must be a non-empty string of at most 256 characters")
        config = config_choices(strategy.spec.config, params)
        seed = params.get("seed")
        rng = random.Random(seed if isinstance(seed, int) else None)
        now = self._clock()
        chosen: Ranked | None = None
        renewed = False
        with self.db.write() as conn:
            self.db.lock(conn, "leases")
            self._expire(conn, now)
            mine = [lease for lease in self._open_leases(conn) if lease.holder == holder]
            unfinished = self._unfinished(conn)
            mine = [lease for lease in mine if lease.image_id in unfinished]
            if mine:
                lease = mine[0]
                self._extend(conn, lease.image_id, holder, now)
                chosen, renewed = Ranked(lease.image_id, None, "your open lease"), True
            else:
                free, busy = self._candidates(conn, holder, now)
                if free:
                    ranked = strategy.rank(free, StrategyContext(busy=busy, rng=rng), config)
                    if ranked:
                        chosen = ranked[0]
                        conn.execute(
                            insert(leases).values(
                                image_id=chosen.image_id,
                                holder=holder,
                                strategy=strategy_name,
                                created_at=now,
                                expires_at=now + self.settings.lease_s,
                            )
                        )
        if chosen is None:
            return {}
        record = self.datastore.images.get(chosen.image_id)
        before = record.public_info()
        if not renewed:
            served = dict(record.info.get("strategy") or {})
            served[strategy_name] = {"ts": int(now), "client_id": holder}
            self.datastore.images.update_info(chosen.image_id, {"strategy": served}, user)
        logger.info("%s leased %s to %s (%s)", strategy_name, chosen.image_id, holder, chosen.reason)
        answer: dict[str, Any] = {
            **before,
            "id": record.id,
            "path": str(self.datastore.images.file(record)),  # a PACS series is fetched first
            "checksum": record.checksum,
            "lease": {"holder": holder, "expires_ts": now + self.settings.lease_s, "renewed": renewed},
            "reason": chosen.reason,
        }
        if chosen.score is not None:
            answer["score"] = chosen.score
        if strategy_name == "random":
            answer["weight"] = int(now)
        return answer

    def _extend(self, conn: Connection, image_id: str, holder: str, now: float) -> None:
        conn.execute(
            update(leases)
            .where(leases.c.image_id == image_id, leases.c.holder == holder, leases.c.ended_at.is_(None))
            .values(expires_at=now + self.settings.lease_s)
        )

    # ------------------------------------------------------------ ending leases

    def release(self, image_id: str, holder: str) -> None:
        """End ``holder``'s lease on ``image_id`` (``DELETE /activelearning/lease``)."""
        if self._end(image_id, holder, "released") == 0:
            raise NotFoundError(f"'{holder}' holds no lease on image '{image_id}'")

    def _end(self, image_id: str, holder: str, reason: str) -> int:
        now = self._clock()
        with self.db.write() as conn:
            result = conn.execute(
                update(leases)
                .where(leases.c.image_id == image_id, leases.c.holder == holder, leases.c.ended_at.is_(None))
                .values(ended_at=now, end_reason=reason)
            )
            return int(result.rowcount)

    def leases(self) -> list[dict[str, Any]]:
        """Open leases (for curators)."""
        now = self._clock()
        with self.db.write() as conn:
            self._expire(conn, now)
            return [
                {
                    "image": lease.image_id,
                    "holder": lease.holder,
                    "strategy": lease.strategy,
                    "created_ts": lease.created_at,
                    "expires_ts": lease.expires_at,
                }
                for lease in self._open_leases(conn)
            ]

    # ------------------------------------------------------------ label saves

    def tag_for_save(self, image_id: str, tag: str, holder: str) -> str:
        """With double reading, a leased annotator's ``final`` label goes to their reader tag."""
        if self.settings.reads <= 1 or tag != DEFAULT_TAG:
            return tag
        with self.db.read() as conn:
            held = conn.execute(
                select(func.count()).where(
                    and_(
                        leases.c.image_id == image_id, leases.c.holder == holder, leases.c.ended_at.is_(None)
                    )
                )
            ).scalar_one()
        return reader_tag(holder) if held else tag

    def after_save(self, image_id: str, tag: str, holder: str) -> dict[str, Any]:
        """End the holder's lease when their final (or reader) label lands; returns what happened."""
        if tag != DEFAULT_TAG and not tag.startswith("read."):
            return {}
        ended = self._end(image_id, holder, "saved")
        outcome: dict[str, Any] = {"lease_ended": bool(ended)}
        if tag.startswith("read.") and self.settings.reads > 1:
            outcome.update(complete_reads(self.datastore, image_id, self.settings.reads))
        return outcome

    def ranking(self, strategy_name: str, params: Mapping[str, Any], limit: int) -> list[dict[str, Any]]:
        """The strategy's ranking of every unfinished image, with each one's score and why."""
        strategy = self.strategy(strategy_name)
        config = config_choices(strategy.spec.config, params)
        now = self._clock()
        with self.db.read() as conn:
            free, busy = self._candidates(conn, None, now)
        by_id = {c.image_id: c for c in free}
        busy_ids = {c.image_id for c in busy}
        ranked = strategy.rank(free, StrategyContext(busy=busy, rng=random.Random(0)), config)
        out = []
        for rank, item in enumerate(ranked[:limit], start=1):
            stored = by_id[item.image_id].scores
            versions = {m: s.model_version for m, s in stored.items() if m in strategy.spec.scores}
            out.append(
                {
                    "rank": rank,
                    "image": item.image_id,
                    "score": item.score,
                    "model_version": next(iter(versions.values()), None) if versions else None,
                    "scores": {m: stored[m].value for m in strategy.spec.scores if m in stored},
                    "reason": item.reason,
                    "leased": item.image_id in busy_ids,
                }
            )
        return out
