"""The networks of the radiology app."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .config import NETWORK, NetworkConfig

__all__ = ["unet", "load_weights"]


def unet(in_channels: int, out_channels: int, config: NetworkConfig = NETWORK) -> Any:
    """A MONAI 3D UNet: ``(B, in_channels, X, Y, Z)`` -> ``(B, out_channels, X, Y, Z)`` logits."""
    from monai.networks.layers import Norm
    from monai.networks.nets import UNet

    return UNet(
        spatial_dims=3,
        in_channels=in_channels,
        out_channels=out_channels,
        channels=config.channels,
        strides=config.strides,
        num_res_units=config.num_res_units,
        norm=Norm.INSTANCE,
        dropout=config.dropout,
    )


def load_weights(network: Any, weights: Path, device: Any) -> Any:
    """Load a state dict (or a checkpoint holding one under ``model``/``state_dict``) in eval mode.

    Raises ``ValueError`` saying what was expected: a file ``torch.save`` wrote, holding a state dict
    of this network, and naming the first missing, unexpected or mismatched key.
    """
    import torch

    try:
        state = torch.load(str(weights), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(
            f"the file is not PyTorch weights: expected a state dict of {type(network).__name__} saved with "
            f"torch.save (torch.load failed with {type(exc).__name__})"
        ) from None
    if isinstance(state, dict):
        for key in ("model", "state_dict", "network"):
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(
            f"the file holds a {type(state).__name__}, not a state dict (parameter name -> tensor) of "
            f"{type(network).__name__}"
        )
    _check_state(network, state)
    network.load_state_dict(state)
    return network.to(device).eval()


def _check_state(network: Any, state: dict[str, Any]) -> None:
    """``ValueError`` naming the first key where ``state`` and ``network``'s own state dict differ."""
    own = network.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if not (missing or unexpected or mismatched):
        return
    parts = [f"expected the {len(own)} tensors of {type(network).__name__}"]
    if missing:
        parts.append(f"{len(missing)} missing, the first '{missing[0]}'")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected, the first '{unexpected[0]}'")
    if mismatched:
        k = mismatched[0]
        parts.append(
            f"{len(mismatched)} of another shape, the first '{k}' {tuple(state[k].shape)} "
            f"where the network has {tuple(own[k].shape)}"
        )
    raise ValueError("; ".join(parts))
