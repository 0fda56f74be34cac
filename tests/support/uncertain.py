"""Networks and images built by hand so that we know which image a model is unsure of.

``known_images()`` are four int16 HU volumes on the app's grid; ``constructed_network(readout)``
is the app's ``unet(1, 6)`` with weights set by hand:

* ``"dropout"``: the image passes unchanged to the last block of the UNet, where two channels
  both carry the voxel's contrast ``z`` (its intensity z-score in the window: InstanceNorm)
  through ReLU, each behind its own dropout mask. The liver-minus-background logit is
  ``K * (h0 - h1) - B``. In eval mode the copies cancel and every voxel is background with a
  margin ``B``. A dropout pass that drops exactly one copy moves the logit by ``K * z / 0.9``,
  which overturns the margin only where ``z > 0.9 * B / K = 9``. So MC dropout changes decisions
  only on a small very bright focus (``z`` about 34) and never on a large bright slab or block
  (``z`` about 2 and 6) or on air (``z = 0``): the focus image is the uncertain one.
* ``"edge"``: the same contrast channel, no dropout effect (eval mode), read out as
  ``K * (h0(v) - h0(v + x)) - B``: liver where the contrast falls by more than ``B / K = 3`` within
  one voxel going +x. The rule depends on the direction of x, so a left-right flipped view
  marks the opposite edges: views disagree on images with sharp x-edges (block, focus) and
  agree (all background) on air and on a slab whose only edges run along z.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from apps.radiology import LABELS
from apps.radiology.networks import unet
from labelloop.imaging import write_volume

__all__ = [
    "AFFINE",
    "SHAPE",
    "known_images",
    "write_known_images",
    "constructed_network",
    "constructed_weights",
]

#: 64 x 64 x 32 voxels of 3 x 3 x 4 mm: the app's grid, so ``normalise`` leaves them as they are.
AFFINE = np.diag([3.0, 3.0, 4.0, 1.0])
SHAPE = (64, 64, 32)


# ---------------------------------------------------------------- known-answer construction


def known_images() -> dict[str, np.ndarray]:
    """int16 HU ``(64, 64, 32)`` images: air, a large slab, a sharp block and a small bright focus."""
    air = np.full(SHAPE, -1000, dtype=np.int16)
    slab, block, focus = air.copy(), air.copy(), air.copy()
    slab[:, :, 4:28] = 400  # bright across all of x and y: its edges run along z only
    block[16:48, 16:48, 8:24] = 400
    focus[28:36, 28:36, 12:20] = 400
    return {"air": air, "slab": slab, "block": block, "focus": focus}


def write_known_images(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, array in known_images().items():
        paths[name] = folder / f"{name}.nii.gz"
        write_volume(paths[name], array, AFFINE)
    return paths


def constructed_network(readout: str, k: float = 10.0) -> Any:
    """``unet(1, 6)`` of the app, built by hand (see the module docstring); ``readout``: dropout | edge."""
    net = unet(1, len(LABELS))
    liver = LABELS["liver"]
    margin = 10.0 * k if readout == "dropout" else 3.0 * k
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()  # every other path outputs exactly 0 (InstanceNorm of 0 is 0)
        net.model[0].residual.weight[0, 0, 1, 1, 1] = 1.0  # the image, every second voxel
        up = net.model[2][0]  # ConvTranspose3d(32 -> 6) -> InstanceNorm -> Dropout -> PReLU
        taps = torch.tensor([0.5, 1.0, 0.5])
        kernel = taps[:, None, None] * taps[None, :, None] * taps[None, None, :]  # trilinear upsampling
        up.conv.weight[0, 0] = kernel
        up.conv.weight[0, 1] = kernel
        up.adn.A.weight.zero_()  # PReLU slope 0: ReLU
        final = net.model[2][1].conv.unit0.conv  # logits = h + final(h)
        for c in range(len(LABELS)):
            final.weight[c, c, 1, 1, 1] = -1.0  # cancel the identity
        if readout == "dropout":
            final.weight[liver, 0, 1, 1, 1], final.weight[liver, 1, 1, 1, 1] = k, -k
        else:
            final.weight[liver, 0, 1, 1, 1], final.weight[liver, 0, 2, 1, 1] = k, -k
        final.bias[LABELS["background"]] = margin
        for c in range(len(LABELS)):
            if c not in (LABELS["background"], liver):
                final.bias[c] = -100.0
    return net


def constructed_weights(path: Path, readout: str, k: float = 10.0) -> Path:
    """Save ``constructed_network(readout, k)``'s state dict (loads into the app's segmentation model)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(constructed_network(readout, k).state_dict(), str(path))
    return path
