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
    """Load a state dict (or a checkpoint holding one under ``model``/``state_dict``) in eval mode."""
    import torch

    state = torch.load(str(weights), map_location="cpu", weights_only=True)
    if isinstance(state, dict):
        for key in ("model", "state_dict", "network"):
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    network.load_state_dict(state)
    return network.to(device).eval()
