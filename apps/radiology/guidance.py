"""Clicks -> DeepEdit guidance channels, and the click formats clients send (MONAI Label section 6)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from labelloop.errors import InvalidParamsError
from labelloop.imaging import world_to_voxel
from labelloop.tasks import Points, parse_points

__all__ = ["clicks_by_label", "guidance_channels", "GUIDANCE_SIGMA_VOXELS"]

GUIDANCE_SIGMA_VOXELS = 1.5


def clicks_by_label(
    params: Mapping[str, Any], labels: Mapping[str, int], shape: tuple[int, int, int]
) -> dict[str, Points]:
    """The clicks of a request, per label name (``background`` included).

    Accepts every form clients send: one key per label name (Slicer multi-label, OHIF,
    the unit tests), or ``foreground``/``background`` lists (deepgrow style) where the
    foreground goes to ``params["label"]`` (else the first non-background label). Keys
    that name no label are ignored, as in MONAI Label.
    """
    clicks = {name: np.zeros((0, 3), dtype=np.int64) for name in labels}
    for name in labels:
        if name in params:
            clicks[name] = parse_points(params[name], name, shape)
    if "foreground" in params:
        target = params.get("label") or next((n for n in labels if n != "background"), None)
        if target not in labels:
            raise InvalidParamsError(
                f"'label' must name one of the model's labels {list(labels)}, not {target!r}"
            )
        fg = parse_points(params["foreground"], "foreground", shape)
        clicks[str(target)] = np.concatenate([clicks[str(target)], fg])
    if "background" in params and "background" in labels:
        clicks["background"] = parse_points(params["background"], "background", shape)
    return clicks


def guidance_channels(
    clicks: Mapping[str, Points],
    labels: Mapping[str, int],
    image_affine: npt.NDArray[np.float64],
    grid_affine: npt.NDArray[np.float64],
    grid_shape: tuple[int, int, int],
    sigma: float = GUIDANCE_SIGMA_VOXELS,
) -> npt.NDArray[np.float32]:
    """``(len(labels), X, Y, Z)`` float32 maps in ``[0, 1]``: a Gaussian bump per click.

    Channel ``c`` belongs to the label whose value is ``c``. Clicks are voxel indices of the
    original image (``image_affine``); they are moved to the network's grid through world
    coordinates, so orientation and spacing changes are taken into account.
    """
    out = np.zeros((len(labels), *grid_shape), dtype=np.float32)
    axes = [np.arange(n, dtype=np.float32) for n in grid_shape]
    radius = int(np.ceil(3 * sigma))
    for name, points in clicks.items():
        if len(points) == 0:
            continue
        world = (image_affine @ np.c_[points, np.ones(len(points))].T).T[:, :3]
        for centre in world_to_voxel(grid_affine, world):
            box = tuple(
                slice(max(int(np.floor(c)) - radius, 0), min(int(np.ceil(c)) + radius + 1, n))
                for c, n in zip(centre, grid_shape, strict=True)
            )
            if any(s.start >= s.stop for s in box):
                continue
            d2 = sum(
                ((axes[a][box[a]] - np.float32(centre[a])) ** 2).reshape(
                    [-1 if b == a else 1 for b in range(3)]
                )
                for a in range(3)
            )
            bump = np.exp(-d2 / np.float32(2 * sigma * sigma)).astype(np.float32)
            channel = out[labels[name]]
            channel[box] = np.maximum(channel[box], bump)
    return out
