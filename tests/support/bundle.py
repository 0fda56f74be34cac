"""A tiny MONAI bundle folder, as ``labelloop serve --bundles`` expects one.

``configs/inference.json`` (``network_def``, ``preprocessing``, ``inferer``, ``postprocessing``),
``configs/metadata.json`` (``channel_def``) and ``models/model.pt`` (a state dict).

Two networks:

- ``"basicunet"``: a small MONAI ``BasicUNet`` whose last 1x1x1 convolution makes ``winner``
  win on every voxel;
- ``"threshold"``: a single 1x1x1 ``Conv3d`` whose output is class 1 exactly where the scaled
  intensity is above 0.5, i.e. where the image is above 0 HU (``ScaleIntensityRanged``
  maps [-1000, 1000] to [0, 1]). The result is then known voxel by voxel.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["make_bundle", "CHANNEL_DEF"]

CHANNEL_DEF = {"0": "background", "1": "spleen"}

_NETWORKS: dict[str, dict[str, Any]] = {
    "basicunet": {
        "_target_": "BasicUNet",
        "spatial_dims": 3,
        "in_channels": 1,
        "out_channels": 2,
        "features": [4, 4, 8, 8, 16, 4],
    },
    "threshold": {
        "_target_": "torch.nn.Conv3d",
        "in_channels": 1,
        "out_channels": 2,
        "kernel_size": 1,
    },
}


def _config(network: str, orientation: bool, sliding_window: bool) -> dict[str, Any]:
    pre: list[dict[str, Any]] = [
        {"_target_": "LoadImaged", "keys": "image"},
        {"_target_": "EnsureChannelFirstd", "keys": "image"},
    ]
    if orientation:
        pre.append(
            {
                "_target_": "Orientationd",
                "keys": "image",
                "axcodes": "RAS",
                "labels": [["L", "R"], ["P", "A"], ["I", "S"]],
            }
        )
    pre.append(
        {
            "_target_": "ScaleIntensityRanged",
            "keys": "image",
            "a_min": -1000,
            "a_max": 1000,
            "b_min": 0.0,
            "b_max": 1.0,
            "clip": True,
        }
    )
    post: list[dict[str, Any]] = [
        {"_target_": "Activationsd", "keys": "pred", "softmax": True},
    ]
    if orientation:
        post.append(
            {
                "_target_": "Invertd",
                "keys": "pred",
                "transform": "@preprocessing",
                "orig_keys": "image",
                "nearest_interp": False,
                "to_tensor": True,
            }
        )
    post.append({"_target_": "AsDiscreted", "keys": "pred", "argmax": True})
    post.append({"_target_": "SaveImaged", "keys": "pred", "output_dir": "$@bundle_root + '/eval'"})
    inferer: dict[str, Any] = (
        {"_target_": "SlidingWindowInferer", "roi_size": [32, 32, 32], "sw_batch_size": 1, "overlap": 0.25}
        if sliding_window
        else {"_target_": "SimpleInferer"}
    )
    return {
        "imports": ["$import torch"],
        "bundle_root": ".",
        "device": "$torch.device('cpu')",
        "network_def": _NETWORKS[network],
        "network": "$@network_def.to(@device)",
        "preprocessing": {"_target_": "Compose", "transforms": pre},
        "inferer": inferer,
        "postprocessing": {"_target_": "Compose", "transforms": post},
    }


def _metadata(name: str) -> dict[str, Any]:
    return {
        "version": "0.0.1",
        "description": f"Test bundle {name}",
        "task": "spleen segmentation (test)",
        "network_data_format": {
            "inputs": {"image": {"type": "image", "num_channels": 1}},
            "outputs": {"pred": {"type": "image", "num_channels": 2, "channel_def": CHANNEL_DEF}},
        },
    }


def _state_dict(network: str, winner: int) -> dict[str, Any]:
    import torch
    from monai.networks.nets import BasicUNet

    torch.manual_seed(0)
    if network == "threshold":
        net: Any = torch.nn.Conv3d(1, 2, kernel_size=1)
        with torch.no_grad():
            net.weight.copy_(torch.tensor([-1.0, 1.0]).reshape(2, 1, 1, 1, 1))
            net.bias.copy_(torch.tensor([0.5, -0.5]))
        return dict(net.state_dict())
    spec = {k: v for k, v in _NETWORKS["basicunet"].items() if k != "_target_"}
    net = BasicUNet(**spec)
    with torch.no_grad():
        net.final_conv.bias.zero_()
        net.final_conv.bias[winner] = 1000.0
    return dict(net.state_dict())


def make_bundle(
    folder: Path,
    *,
    network: str = "basicunet",
    winner: int = 1,
    orientation: bool = False,
    sliding_window: bool = True,
) -> Path:
    """Write a bundle into ``folder`` (its name becomes the model name); returns ``folder``.

    Args:
        network: ``"basicunet"`` or ``"threshold"`` (see the module docstring).
        winner: the class a ``basicunet`` bundle predicts everywhere.
        orientation: add ``Orientationd(RAS)`` to the preprocessing and ``Invertd`` to the
            postprocessing (the result must still land on the image's own grid).
        sliding_window: ``SlidingWindowInferer`` (32^3 patches), else ``SimpleInferer``.
    """
    import torch

    (folder / "configs").mkdir(parents=True, exist_ok=True)
    (folder / "models").mkdir(parents=True, exist_ok=True)
    config = _config(network, orientation, sliding_window)
    (folder / "configs" / "inference.json").write_text(json.dumps(config, indent=2))
    (folder / "configs" / "metadata.json").write_text(json.dumps(_metadata(folder.name), indent=2))
    torch.save(_state_dict(network, winner), str(folder / "models" / "model.pt"))
    return folder
