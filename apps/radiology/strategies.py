"""Active-learning strategies over the stored uncertainty scores: ``epistemic``, ``tta`` and ``diverse``.

Each reads the scores one scoring method stored (``EpistemicScoring`` -> ``"epistemic"``,
``TTAScoring`` -> ``"tta"``), each made by some version of the segmentation model. Scores made by
different versions are not comparable (a better model is surer of everything); the server hands
the strategies the active version's scores only (``ScoreStore.all``), so after a rollback nothing
a retired version scored ranks. Should scores of several versions arrive (a model the registry
keeps no versions of), the newest version's rank first, then older ones' (newest first), then
the images with no score at all, in random order. Every ``Ranked.reason`` says which of these an
image is, its value, the model version, and what decided its place.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from labelloop.errors import InvalidParamsError
from labelloop.tasks import Candidate, Ranked, Score, Strategy, StrategyContext, StrategySpec

__all__ = ["EpistemicStrategy", "TTAStrategy", "DiverseStrategy"]


@dataclass(frozen=True)
class _Scored:
    """A candidate with a usable stored score of the strategy's method."""

    candidate: Candidate
    score: Score

    @property
    def value(self) -> float:
        return float(self.score.value if self.score.value is not None else float("nan"))

    @property
    def image_id(self) -> str:
        return self.candidate.image_id

    @property
    def version(self) -> str:
        v = self.score.model_version
        return f"{self.score.model} v{v}" if v is not None else f"{self.score.model} (unversioned)"


def _partition(candidates: Sequence[Candidate], method: str) -> tuple[list[list[_Scored]], list[Candidate]]:
    """Scored candidates grouped by model version (newest first), and the unscored ones."""
    groups: dict[int, list[_Scored]] = {}
    unscored = []
    for c in candidates:
        score = c.scores.get(method)
        if score is None or score.value is None or not np.isfinite(score.value):
            unscored.append(c)
            continue
        version = score.model_version if score.model_version is not None else -1
        groups.setdefault(version, []).append(_Scored(c, score))
    return [groups[v] for v in sorted(groups, reverse=True)], unscored


def _images(n: int) -> str:
    return f"{n} image" if n == 1 else f"{n} images"


def _where(group: list[_Scored], newest: list[_Scored]) -> str:
    """Which group an image is ranked in, and why that group sits where it does."""
    if group is newest:
        return f"{_images(len(group))} scored by the active version"
    return (
        f"{_images(len(group))} scored by {group[0].version}, an older version: they come after the "
        f"{_images(len(newest))} scored by {newest[0].version} until rescoring reaches them"
    )


def _unscored(
    unscored: list[Candidate], candidates: Sequence[Candidate], context: StrategyContext, method: str
) -> list[Ranked]:
    """Unscored candidates in random order, after the scored ones."""
    order = list(unscored)
    context.rng.shuffle(order)
    anyone = any(method in c.scores for c in [*candidates, *context.busy])
    why = (
        f"not scored yet: new since the last '{method}' scoring run; random order after the scored images"
        if anyone
        else f"not scored yet: no image has a '{method}' score (no trained model yet, or "
        f"/scoring/{method} has not run); random order"
    )
    return [Ranked(c.image_id, None, why) for c in order]


class _MostUncertain(Strategy):
    """Most uncertain first by one method's scores (see the module docstring for the groups)."""

    method: str
    measure: str

    def rank(
        self, candidates: Sequence[Candidate], context: StrategyContext, config: Mapping[str, Any]
    ) -> list[Ranked]:
        groups, unscored = _partition(candidates, self.method)
        out = []
        for group in groups:
            ordered = sorted(group, key=lambda s: (-s.value, s.image_id))
            where = _where(group, groups[0])
            for k, s in enumerate(ordered, start=1):
                reason = f"{self.measure} {s.value:.4g} by {s.version}; most uncertain first: #{k} of {where}"
                out.append(Ranked(s.image_id, s.value, reason))
        return out + _unscored(unscored, candidates, context, self.method)


class EpistemicStrategy(_MostUncertain):
    """The image the model is least sure of under Monte Carlo dropout (``epistemic`` scores)."""

    method = "epistemic"
    measure = "MC-dropout mutual information"
    spec = StrategySpec(
        description=(
            "Most uncertain first: mutual information under Monte Carlo dropout of the active "
            "segmentation model (run /scoring/epistemic; unscored images come last)"
        ),
        scores=("epistemic",),
    )


class TTAStrategy(_MostUncertain):
    """The image whose prediction changes most under test-time augmentation (``tta`` scores)."""

    method = "tta"
    measure = "test-time-augmentation divergence"
    spec = StrategySpec(
        description=(
            "Most unstable first: divergence between the active segmentation model's predictions "
            "on augmented copies (run /scoring/tta; unscored images come last)"
        ),
        scores=("tta",),
    )


# ---------------------------------------------------------------- diversity

Vector = npt.NDArray[np.float64]


def _embeddings(items: Sequence[Candidate], method: str) -> dict[str, Vector]:
    """image id -> unit embedding, centred on the mean of all of them (the cohort's common look
    removed, so that cosine similarity compares what differs between images)."""
    raw: dict[str, Vector] = {}
    for c in items:
        score = c.scores.get(method)
        vector = score.details.get("embedding") if score is not None else None
        if isinstance(vector, list) and vector and all(isinstance(v, (int, float)) for v in vector):
            raw[c.image_id] = np.asarray(vector, dtype=np.float64)
    if not raw:
        return {}
    size = Counter(len(v) for v in raw.values()).most_common(1)[0][0]
    raw = {k: v for k, v in raw.items() if len(v) == size and np.all(np.isfinite(v))}
    if not raw:
        return {}
    centre = np.mean(list(raw.values()), axis=0)
    out = {}
    for key, v in raw.items():
        norm = float(np.linalg.norm(v - centre))
        out[key] = (v - centre) / norm if norm > 1e-9 else np.zeros_like(v)
    return out


def _diversity(config: Mapping[str, Any], default: float) -> float:
    value = config.get("diversity", default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
        raise InvalidParamsError(f"'diversity' must be a number from 0 to 1, not {value!r}")
    return float(value)


class DiverseStrategy(Strategy):
    """Uncertain and unlike the rest: greedy maximal marginal relevance over ``epistemic`` scores.

    Images are picked one at a time; each pick maximises

        ``(1 - diversity) * u  -  diversity * max(0, s)``

    where ``u`` is the image's uncertainty rescaled to ``[0, 1]`` within its version group and ``s``
    its highest cosine similarity (of centred embeddings, ``EpistemicScoring``'s ``embedding``) to
    an image leased to another annotator or picked before it. So ten annotators asking at once
    get uncertain images that differ from each other, not ten near-copies of one hard case.
    ``diversity`` 0 is ``epistemic``; 1 orders by novelty alone.
    """

    method = "epistemic"
    spec = StrategySpec(
        description=(
            "Uncertain and diverse: MC-dropout uncertainty minus a penalty for looking like images "
            "leased to others or ranked above (maximal marginal relevance; 'diversity' from 0 to 1)"
        ),
        config={"diversity": 0.5},
        scores=("epistemic",),
    )

    def rank(
        self, candidates: Sequence[Candidate], context: StrategyContext, config: Mapping[str, Any]
    ) -> list[Ranked]:
        weight = _diversity(config, float(self.spec.config["diversity"]))
        groups, unscored = _partition(candidates, self.method)
        vectors = _embeddings([*candidates, *context.busy], self.method)
        busy_ids = {c.image_id for c in context.busy}
        # Reference set: (image id, how it relates, unit vector); grows as images are picked.
        reference = [
            (c.image_id, "leased to another annotator", vectors[c.image_id])
            for c in context.busy
            if c.image_id in vectors
        ]
        out: list[Ranked] = []
        for group in groups:
            out += self._pick(group, groups[0], weight, vectors, reference, busy_ids)
        return out + _unscored(unscored, candidates, context, self.method)

    def _pick(
        self,
        group: list[_Scored],
        newest: list[_Scored],
        weight: float,
        vectors: dict[str, Vector],
        reference: list[tuple[str, str, Vector]],
        busy_ids: set[str],
    ) -> list[Ranked]:
        """Greedy MMR within one version group; appends each pick to ``reference``.

        ``best[i]`` holds candidate ``i``'s highest similarity to the reference so far (``-inf``:
        nothing to compare with) and ``like[i]`` the index in ``reference`` that gave it; each
        pick updates them with one matrix-vector product, so ``n`` candidates cost ``O(n^2)``
        array operations.
        """
        n = len(group)
        values = np.asarray([s.value for s in group])
        spread = float(values.max() - values.min())
        relevance = (values - values.min()) / spread if spread > 0 else np.ones_like(values)
        ties = np.empty(n, dtype=np.int64)  # ties go to the more uncertain, then the smaller id
        ties[sorted(range(n), key=lambda i: (-values[i], group[i].image_id))] = np.arange(n)
        size = len(next(iter(vectors.values()))) if vectors else 0
        has = np.asarray([s.image_id in vectors for s in group])
        ids = np.asarray([s.image_id for s in group])
        matrix = np.stack([vectors.get(s.image_id, np.zeros(size)) for s in group]) if size else None
        best = np.full(n, -np.inf)
        like = np.full(n, -1, dtype=np.int64)

        def compare(index: int) -> None:
            other, _, vector = reference[index]
            if matrix is None:
                return
            sims = np.where(has & (ids != other), matrix @ vector, -np.inf)  # not itself (double reads)
            closer = sims > best
            best[closer], like[closer] = sims[closer], index

        for index in range(len(reference)):
            compare(index)
        alive = np.ones(n, dtype=bool)
        where = _where(group, newest)
        out: list[Ranked] = []
        while alive.any():
            gains = np.where(alive, (1.0 - weight) * relevance - weight * np.maximum(best, 0.0), -np.inf)
            top = np.flatnonzero(gains == gains.max())
            chosen = int(top[np.argmin(ties[top])])
            alive[chosen] = False
            s = group[chosen]
            if not has[chosen]:
                novelty = "no embedding stored, so no diversity penalty"
            elif like[chosen] < 0:
                novelty = "nothing leased or ranked above to compare with"
            else:
                other, how, _ = reference[int(like[chosen])]
                sim = float(best[chosen])
                novelty = f"most like {other} ({how}), cosine {sim:.2f}, penalty {weight * max(0.0, sim):.2f}"
            reason = (
                f"MC-dropout mutual information {s.value:.4g} by {s.version} "
                f"({relevance[chosen]:.2f} of its group's range); {novelty}; "
                f"gain {gains[chosen]:.3f} at diversity {weight:g} (#{len(out) + 1} of {where})"
            )
            out.append(Ranked(s.image_id, s.value, reason))
            if has[chosen] and s.image_id not in busy_ids:
                reference.append((s.image_id, "ranked above it", vectors[s.image_id]))
                compare(len(reference) - 1)
        return out
