"""Data-parallel training: two gloo ranks on the CPU."""

from __future__ import annotations

import importlib
from pathlib import Path

import torch

from apps.radiology import LABELS
from apps.radiology.training import state_digest
from labelloop.tasks import LocalTrainContext, TrainData, load_app, validate_options
from tests.apps.radiology.training.conftest import FAST, SMALL_NETWORK, state
from tests.support.servers import APP_DIR


def test_ddp_ranks_end_with_identical_weights(data: TrainData, tmp_path: Path) -> None:
    """Two gloo ranks on the CPU, the app imported from its folder as the server imports it."""
    load_app(APP_DIR)
    training = importlib.import_module(f"labelloop_app_{APP_DIR.name}.training")
    config = importlib.import_module(f"labelloop_app_{APP_DIR.name}.config")
    small = config.NetworkConfig(**SMALL_NETWORK)
    ctx = LocalTrainContext(tmp_path)
    trainer = training.SegmentationTrainer(LABELS, small)
    options = validate_options(trainer.config_model, {**FAST, "max_epochs": 1})
    job = trainer.job(ctx, data, options, None)
    outcome = training.train_ddp(ctx, job, world_size=2, backend="gloo")
    assert len(outcome.digests) == 2 and outcome.digests[0] == outcome.digests[1]
    assert state_digest(state(outcome.result.weights)) == outcome.digests[0]  # trained: the best is the last
    assert ctx.lines[-1].startswith("epoch 1/1") and ctx.reports[-1]["total_iterations"] == 2
    torch.manual_seed(0)
    untrained = importlib.import_module(f"labelloop_app_{APP_DIR.name}.networks").unet(1, len(LABELS), small)
    assert state_digest(untrained.state_dict()) != outcome.digests[0]
