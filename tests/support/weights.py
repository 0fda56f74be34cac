"""Weights files for the radiology app's networks, so tests can publish them with ``PUT /model/{m}``.

``write_weights(path, model, winner=c)`` makes a network whose output is class ``c`` on every
voxel (a large bias on that class of the last convolution), so tests can assert on the values
of a result, not only on its shape.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

from labelloop.tasks import load_app
from tests.support.servers import APP_DIR

__all__ = ["app_labels", "network", "write_weights", "write_garbage", "WINNER_BIAS"]

#: Added to the winning class's logit: far above anything the rest of the network produces.
WINNER_BIAS = 1000.0


def _app_module(name: str) -> ModuleType:
    load_app(APP_DIR)  # imports the app as ``labelloop_app_radiology``
    import importlib

    return importlib.import_module(f"labelloop_app_{APP_DIR.name}.{name}")


def app_labels() -> dict[str, int]:
    """The radiology app's label name -> value map."""
    return dict(load_app(APP_DIR).labels)


def network(model: str, labels: Mapping[str, int] | None = None, seed: int = 0) -> Any:
    """The app's network for ``model`` (``segmentation`` or ``deepedit``), randomly initialised."""
    import torch

    labels = dict(labels or app_labels())
    unet = _app_module("networks").unet
    torch.manual_seed(seed)
    if model == "segmentation":
        return unet(1, len(labels))
    if model == "deepedit":
        return unet(1 + len(labels), len(labels))
    raise ValueError(f"no weights recipe for model {model!r}")


def _last_conv(net: Any) -> Any:
    import torch

    convs = [m for m in net.modules() if isinstance(m, (torch.nn.Conv3d, torch.nn.ConvTranspose3d))]
    return convs[-1]


def write_weights(
    path: Path,
    model: str = "segmentation",
    *,
    winner: int | None = None,
    seed: int = 0,
    wrong_shape: bool = False,
) -> Path:
    """Save a ``state_dict`` of the app's ``model`` network to ``path``.

    Args:
        winner: when given, this class wins on every voxel (its output bias is ``WINNER_BIAS``).
        seed: seeds the random initialisation (different seeds give different weights).
        wrong_shape: save a network with one output class too many (does not load).
    """
    import torch

    labels = app_labels()
    if wrong_shape:
        labels = {**labels, "extra": max(labels.values()) + 1}
    net = network(model, labels, seed=seed)
    if winner is not None:
        conv = _last_conv(net)
        with torch.no_grad():
            conv.bias.zero_()
            conv.bias[winner] = WINNER_BIAS
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), str(path))
    return path


def write_garbage(path: Path) -> Path:
    """Bytes that are not a PyTorch file at all."""
    path.write_bytes(b"this is not a state dict\x00\x01\x02" * 100)
    return path
