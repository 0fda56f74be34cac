"""The contracts an app implements: ``App``, ``InferTask``, ``TrainTask``, ``Strategy``, ``ScoringMethod``."""

from labelloop.tasks.app import App, AppLoadError, load_app
from labelloop.tasks.bundle import BundleError, BundleTask
from labelloop.tasks.infer import (
    InferOutput,
    InferRequest,
    InferSpec,
    InferTask,
    InferType,
    Points,
    config_choices,
    parse_points,
)
from labelloop.tasks.strategy import (
    Candidate,
    Ranked,
    Score,
    ScoreOutput,
    ScoringMethod,
    ScoringSpec,
    Strategy,
    StrategyContext,
    StrategySpec,
)
from labelloop.tasks.train import (
    LocalTrainContext,
    TrainContext,
    TrainData,
    TrainItem,
    TrainResult,
    TrainSpec,
    TrainTask,
    split_items,
)

__all__ = [
    "App",
    "Candidate",
    "Ranked",
    "Score",
    "ScoreOutput",
    "ScoringMethod",
    "ScoringSpec",
    "Strategy",
    "StrategyContext",
    "StrategySpec",
    "AppLoadError",
    "BundleError",
    "BundleTask",
    "InferOutput",
    "InferRequest",
    "InferSpec",
    "InferTask",
    "InferType",
    "LocalTrainContext",
    "Points",
    "TrainContext",
    "TrainData",
    "TrainItem",
    "TrainResult",
    "TrainSpec",
    "TrainTask",
    "config_choices",
    "load_app",
    "parse_points",
    "split_items",
]
