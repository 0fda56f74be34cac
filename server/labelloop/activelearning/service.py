"""Next sample for an annotator: rank candidates with a strategy, lease the first free one.

Leases keep annotators apart: an image is handed to at most ``reads`` holders at a time
(1 unless double reading is on), and never twice to the same holder. A lease ends when its
holder saves a final label, releases it, or it expires. The same holder asking again gets
its open lease back instead of a second image, unless it asks to skip it (``{"skip": true}``):
then that lease ends as ``skipped`` with the reason given, and the image is not handed to that
holder again (others still get it).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Connection

from labelloop.activelearning.builtin import BUILTIN_STRATEGIES
from labelloop.activelearning.leases import Lease, LeaseBook, Skip
from labelloop.activelearning.reading import READ_PREFIX, ReadsOutcome, complete_reads, reader_tag
from labelloop.activelearning.scores import ScoreStore
from labelloop.datastore import DEFAULT_TAG, Datastore, ImageRecord
from labelloop.errors import InvalidParamsError, NotFoundError
from labelloop.settings import ActiveLearningSettings
from labelloop.tasks import Candidate, Ranked, Strategy, StrategyContext, config_choices

__all__ = ["ActiveLearning", "Handout", "RankEntry"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Handout:
    """The next image for an annotator and the lease that keeps it theirs.

    Attributes:
        image: the image as registered (``info`` as it was before this hand-out was noted in it).
        path: its file on the server (a PACS series is fetched first).
        lease: the holder's lease; ``renewed`` when the holder already had it.
        reason: why the strategy chose it; ``score`` its score, if the strategy has one.
        skipped: the images whose lease this request ended as skipped.
    """

    image: ImageRecord
    path: Path
    lease: Lease
    renewed: bool
    reason: str
    score: float | None
    skipped: tuple[str, ...] = ()


@dataclass(frozen=True)
class RankEntry:
    """One place in a strategy's ranking.

    Attributes:
        leased: whether another annotator holds the image now.
        model_version: the model version of the scores the strategy read, if any.
        scores: the stored score of each method the strategy reads.
    """

    rank: int
    image_id: str
    score: float | None
    model_version: int | None
    scores: dict[str, float | None]
    reason: str
    leased: bool


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
        self.leases = LeaseBook(settings.lease_s, clock)
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

    def _unfinished(self, conn: Connection) -> dict[str, dict[str, Any]]:
        return self.datastore.images.unfinished_in(conn)

    def _reads(self, conn: Connection) -> dict[str, set[str]]:
        """image id -> reader tags it has labels under (double reading)."""
        return self.datastore.labels.live_tags_in(conn, READ_PREFIX)

    def _candidates(
        self,
        conn: Connection,
        holder: str | None,
        now: float,
        unfinished: dict[str, dict[str, Any]] | None = None,
        leases: list[Lease] | None = None,
    ) -> tuple[list[Candidate], list[Candidate]]:
        """``(free candidates for holder, images busy with others)`` with their stored scores.

        An image the holder skipped is never free for them. ``unfinished`` and ``leases`` (the open
        ones) are what the caller already read in ``conn``'s transaction, else read here.
        """
        reads = self.settings.reads
        unfinished = self._unfinished(conn) if unfinished is None else unfinished
        # Leases past their time count as ended even where nothing has marked them yet (a read).
        leases = self.leases.open_in(conn) if leases is None else leases
        open_leases = [lease for lease in leases if lease.expires_at > now]
        done_reads = self._reads(conn) if reads > 1 else {}
        scores = self.scores.all()
        holders: dict[str, set[str]] = {}
        for lease in open_leases:
            holders.setdefault(lease.image_id, set()).add(lease.holder)
        skipped = self.leases.skipped_in(conn, holder) if holder is not None else set()
        free, busy = [], []
        for image_id, info in unfinished.items():
            candidate = Candidate(image_id=image_id, info=info, scores=scores.get(image_id, {}))
            taken = holders.get(image_id, set())
            readers = done_reads.get(image_id, set())
            already = holder is not None and (holder in taken or reader_tag(holder) in readers)
            if taken:
                busy.append(candidate)
            if already or image_id in skipped or len(taken) + len(readers) >= reads:
                continue
            free.append(candidate)
        return free, busy

    # ------------------------------------------------------------ next sample

    def next_sample(
        self,
        strategy_name: str,
        params: Mapping[str, Any],
        user: str,
        *,
        in_transaction: Callable[[Connection], object] | None = None,
    ) -> Handout | None:
        """Lease the next image to the caller (``client_id``, else the user); ``None`` when none is left.

        ``params["skip"]`` true ends the caller's open lease as skipped (``skip_reason``, up to
        1024 characters, is recorded with it) and hands out the next image instead of renewing it.
        ``in_transaction`` runs last in the hand-out's write transaction (the request's audit event).
        """
        strategy = self.strategy(strategy_name)
        holder = params.get("client_id") or user
        if not isinstance(holder, str) or not holder or len(holder) > 256:
            raise InvalidParamsError("'client_id' must be a non-empty string of at most 256 characters")
        skip = params.get("skip", False)
        if not isinstance(skip, bool):
            raise InvalidParamsError(f"'skip' must be true or false, not {skip!r}")
        note = params.get("skip_reason")
        if note is not None and (not isinstance(note, str) or len(note) > 1024):
            raise InvalidParamsError("'skip_reason' must be a string of at most 1024 characters")
        if note is not None and not skip:
            raise InvalidParamsError("'skip_reason' goes with 'skip': true")
        config = config_choices(strategy.spec.config, params)
        seed = params.get("seed")
        rng = random.Random(seed if isinstance(seed, int) else None)
        images = self.datastore.images
        with self.db.write() as conn:
            self.db.lock(conn, "leases")
            # Under the lock: a lease starts when it is granted, not when it was asked for.
            now = self._clock()
            skipped = self._skip_in(conn, holder, note) if skip else ()
            chosen = self._lease_in(conn, strategy_name, strategy, config, holder, rng, now)
            if chosen is not None:
                lease, renewed, ranked = chosen
                record = images.get_in(conn, lease.image_id)
                if not renewed:  # the image info says who got it by which strategy, with the lease
                    served = dict(record.info.get("strategy") or {})
                    served[strategy_name] = {"ts": int(now), "client_id": holder}
                    record = images.update_info_in(conn, lease.image_id, {"strategy": served}, user)
            if in_transaction is not None:
                in_transaction(conn)
        for image_id in skipped:
            logger.info("%s skipped %s (%s)", holder, image_id, note or "no reason given")
        if chosen is None:
            return None
        logger.info("%s leased %s to %s (%s)", strategy_name, lease.image_id, holder, ranked.reason)
        path = self.datastore.images.file(record)
        return Handout(record, path, lease, renewed, ranked.reason, ranked.score, skipped)

    def _skip_in(self, conn: Connection, holder: str, note: str | None) -> tuple[str, ...]:
        """End ``holder``'s open leases as skipped; the images they were on."""
        self.leases.expire_in(conn, self._clock())
        mine = sorted(lease.image_id for lease in self.leases.open_in(conn) if lease.holder == holder)
        for image_id in mine:
            self.leases.end_in(conn, image_id, holder, "skipped", note)
        return tuple(mine)

    def _lease_in(
        self,
        conn: Connection,
        strategy_name: str,
        strategy: Strategy,
        config: Mapping[str, Any],
        holder: str,
        rng: random.Random,
        now: float,
    ) -> tuple[Lease, bool, Ranked] | None:
        """The holder's open lease renewed, else a new lease on the strategy's first free image."""
        self.leases.expire_in(conn, now)
        unfinished = self._unfinished(conn)
        leases = self.leases.open_in(conn)
        mine = [lease for lease in leases if lease.holder == holder and lease.image_id in unfinished]
        if mine:
            return (
                self.leases.extend_in(conn, mine[0], now),
                True,
                Ranked(mine[0].image_id, None, "your open lease"),
            )
        free, busy = self._candidates(conn, holder, now, unfinished, leases)
        ranked = strategy.rank(free, StrategyContext(busy=busy, rng=rng), config) if free else []
        if not ranked:
            return None
        return self.leases.grant_in(conn, ranked[0].image_id, holder, strategy_name, now), False, ranked[0]

    # ------------------------------------------------------------ ending leases

    def release(self, image_id: str, holder: str) -> None:
        """End ``holder``'s lease on ``image_id`` (``DELETE /activelearning/lease``)."""
        with self.db.write() as conn:
            if not self.leases.end_in(conn, image_id, holder, "released"):
                raise NotFoundError(f"'{holder}' holds no lease on image '{image_id}'")

    def skips(self, since: float | None = None, limit: int = 100) -> list[Skip]:
        """Images annotators skipped and their reasons, newest first (for curators)."""
        with self.db.read() as conn:
            return self.leases.skips_in(conn, since, limit)

    def open_leases(self) -> list[Lease]:
        """Open leases (for curators)."""
        with self.db.write() as conn:
            self.leases.expire_in(conn, self._clock())
            return self.leases.open_in(conn)

    def open_lease_counts(self) -> dict[str, int]:
        """Leases open now by strategy, read without ending the expired ones (``GET /metrics``)."""
        with self.db.read() as conn:
            return self.leases.count_open_in(conn, self._clock())

    # ------------------------------------------------------------ label saves (the label-save workflow)

    def save_tag(self, image_id: str, tag: str, holder: str) -> str:
        """The tag a label save goes under; see ``save_tag_in``."""
        if self.settings.reads <= 1 or tag != DEFAULT_TAG:
            return tag  # no lease can change it: spare the transaction
        with self.db.read() as conn:
            return self.save_tag_in(conn, image_id, tag, holder)

    def save_tag_in(self, conn: Connection, image_id: str, tag: str, holder: str) -> str:
        """Double reading's rule: while ``reads`` > 1, a ``final`` label from an annotator who holds a
        lease on the image is one read, saved under their reader tag (``read.<holder>``); the
        image's ``final`` label is then the readers' consensus (``complete_reads``). Any other save
        keeps its tag."""
        if self.settings.reads <= 1 or tag != DEFAULT_TAG:
            return tag
        return reader_tag(holder) if self.leases.holds_in(conn, image_id, holder) else tag

    @staticmethod
    def ends_lease(tag: str) -> bool:
        """Whether saving under ``tag`` finishes the holder's work on the image (a final label or a read)."""
        return tag == DEFAULT_TAG or ActiveLearning.is_read(tag)

    @staticmethod
    def is_read(tag: str) -> bool:
        """Whether ``tag`` holds one reader's label of double reading."""
        return tag.startswith(READ_PREFIX)

    def end_lease_in(self, conn: Connection, image_id: str, holder: str) -> bool:
        """End ``holder``'s open lease on ``image_id`` because they saved, in ``conn``'s transaction;
        False if they held none."""
        return self.leases.end_in(conn, image_id, holder, "saved")

    def complete_reads(self, image_id: str) -> ReadsOutcome | None:
        """Store the readers' consensus as the image's final label once all reads are in (double reading);
        ``None`` when double reading is off."""
        if self.settings.reads <= 1:
            return None
        return complete_reads(self.datastore, image_id, self.settings.reads)

    def complete_pending_reads(self) -> list[str]:
        """Complete every image whose reads are all in but whose consensus is missing (a crash between a
        read's save and its consensus leaves one); returns their ids. Housekeeping calls it."""
        if self.settings.reads <= 1:
            return []
        with self.db.read() as conn:
            unfinished = self._unfinished(conn)
            reads = self._reads(conn)
        pending = [i for i, tags in reads.items() if i in unfinished and len(tags) >= self.settings.reads]
        for image_id in pending:
            complete_reads(self.datastore, image_id, self.settings.reads)
        return pending

    def ranking(self, strategy_name: str, params: Mapping[str, Any], limit: int) -> list[RankEntry]:
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
            versions = [s.model_version for m, s in stored.items() if m in strategy.spec.scores]
            out.append(
                RankEntry(
                    rank=rank,
                    image_id=item.image_id,
                    score=item.score,
                    model_version=versions[0] if versions else None,
                    scores={m: stored[m].value for m in strategy.spec.scores if m in stored},
                    reason=item.reason,
                    leased=item.image_id in busy_ids,
                )
            )
        return out
