"""The radiology app: CT/MR segmentation of the sample cohort's abdominal structures.

Pure ML code: it imports ``labelloop.tasks``, ``labelloop.imaging`` and ``labelloop.errors``, and
nothing else from the server.
"""

from __future__ import annotations

from labelloop.tasks import App

from .deepedit import DeepEditTask
from .randomwalk import RandomWalkTask
from .segmentation import SegmentationTask
from .strategies import DiverseStrategy, EpistemicStrategy, TTAStrategy
from .training import DeepEditTrainer, SegmentationTrainer
from .uncertainty import EpistemicScoring, TTAScoring

__version__ = "0.1.0"

#: Label values of the synthetic CT cohort (``labelloop sample-data``); 0 is background.
LABELS = {
    "background": 0,
    "liver": 1,
    "spleen": 2,
    "left kidney": 3,
    "right kidney": 4,
    "lesion": 5,
}

#: The labels that are lesions: their connected components are counted as lesions.
LESIONS = frozenset({"lesion"})


def build_app() -> App:
    """The app the server hosts."""
    return App(
        name=f"labelloop - Radiology ({__version__})",
        description="Active-learning segmentation of abdominal CT structures",
        version=__version__,
        labels=LABELS,
        lesions=LESIONS,
        infer_tasks={
            "segmentation": SegmentationTask(LABELS),
            "deepedit": DeepEditTask(LABELS),
            "random_walker": RandomWalkTask(),
        },
        train_tasks={
            "segmentation": SegmentationTrainer(LABELS),
            "deepedit": DeepEditTrainer(LABELS),
        },
        strategies={
            "epistemic": EpistemicStrategy(),
            "tta": TTAStrategy(),
            "diverse": DiverseStrategy(),
        },
        scoring={
            "epistemic": EpistemicScoring(LABELS),
            "tta": TTAScoring(LABELS),
        },
    )
