"""A patient's label volumes over time: the change of each label since the previous study."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from labelloop.errors import InvalidInputError

__all__ = ["StudyChange", "StudyVolumes", "VolumeChange", "volume_changes"]


@dataclass(frozen=True)
class StudyVolumes:
    """One study's label volumes.

    Attributes:
        study_id: the study (or image) it was measured on.
        volumes_ml: label name -> volume in mL; a label not in it was not measured on this study.
        acquired: when the study was acquired, if known; used only to check the order.
    """

    study_id: str
    volumes_ml: Mapping[str, float]
    acquired: date | None = None


@dataclass(frozen=True)
class VolumeChange:
    """One label on one study, against the study before it.

    Attributes:
        label: the label's name.
        volume_ml: its volume on this study (``None``: not measured on it).
        previous_ml: its volume on the previous study (``None``: the first study, or not measured).
        change_ml: ``volume_ml - previous_ml``; ``None`` when either is.
        change_pct: ``100 * change_ml / previous_ml``; ``None`` when ``change_ml`` is or when the
            previous volume is 0 (a new finding has no relative growth).
    """

    label: str
    volume_ml: float | None
    previous_ml: float | None
    change_ml: float | None
    change_pct: float | None

    def to_json(self) -> dict[str, Any]:
        return {
            "volume_ml": self.volume_ml,
            "previous_ml": self.previous_ml,
            "change_ml": self.change_ml,
            "change_pct": self.change_pct,
        }


@dataclass(frozen=True)
class StudyChange:
    """One study of the series with each label's change since the previous study.

    Attributes:
        study_id: as given.
        acquired: as given.
        labels: label name -> its change, for every label of any study of the series (in the order
            they first appear).
    """

    study_id: str
    acquired: date | None
    labels: Mapping[str, VolumeChange]

    def to_json(self) -> dict[str, Any]:
        return {
            "study_id": self.study_id,
            "acquired": None if self.acquired is None else self.acquired.isoformat(),
            "labels": {name: change.to_json() for name, change in self.labels.items()},
        }


def _change(label: str, volume: float | None, previous: float | None) -> VolumeChange:
    if volume is None or previous is None:
        return VolumeChange(label, volume, previous, None, None)
    delta = volume - previous
    return VolumeChange(label, volume, previous, delta, None if previous == 0 else 100.0 * delta / previous)


def volume_changes(studies: Sequence[StudyVolumes]) -> list[StudyChange]:
    """Each study's label volumes against the study just before it (mL and %).

    Args:
        studies: one patient's studies, oldest first.

    Returns:
        One ``StudyChange`` per study, in the same order; the first study's changes are ``None``.

    Raises:
        InvalidInputError: the studies are not in time order (where they say when they were
            acquired), or a volume is negative or not finite.
    """
    dated = [s.acquired for s in studies if s.acquired is not None]
    if any(later < earlier for earlier, later in zip(dated, dated[1:], strict=False)):
        raise InvalidInputError("The studies must be given oldest first")
    labels: dict[str, None] = {}
    for study in studies:
        for name, volume in study.volumes_ml.items():
            if not (math.isfinite(volume) and volume >= 0):
                raise InvalidInputError(
                    f"Study {study.study_id!r} has an invalid volume for {name!r}: {volume}"
                )
            labels.setdefault(name, None)
    changes: list[StudyChange] = []
    previous: Mapping[str, float] | None = None
    for study in studies:
        current = study.volumes_ml
        changes.append(
            StudyChange(
                study.study_id,
                study.acquired,
                {
                    name: _change(name, current.get(name), None if previous is None else previous.get(name))
                    for name in labels
                },
            )
        )
        previous = current
    return changes
