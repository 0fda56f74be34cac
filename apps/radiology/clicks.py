"""Simulated clicks for training DeepEdit, and the network inputs they make.

A user of DeepEdit either runs it with no clicks (automatic mode) or clicks inside the
structures it got wrong. Training imitates both, in the manner of MONAI's DeepEdit
transforms (``AddInitialSeedPointMissingLabelsd``, ``FindDiscrepancyRegionsDeepEditd``,
``AddRandomGuidanceDeepEditd``): some patches get no clicks, the others get clicks drawn
from the interior of each label present, then optionally one more click per label in the
largest region the current network misses. The clicks become guidance channels through
``guidance_channels``, the very function inference uses, so training and inference agree.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from labelloop.tasks import Points

from .guidance import guidance_channels

__all__ = ["ClickConfig", "GuidanceInputs", "ImageInputs", "error_clicks", "interior_points", "sample_clicks"]

_NO_POINTS: Points = np.zeros((0, 3), dtype=np.int64)

#: Patch voxel indices are the guidance grid: the same identity affine on both sides.
_GRID_AFFINE = np.eye(4, dtype=np.float64)


@dataclass(frozen=True)
class ClickConfig:
    """How clicks are simulated while DeepEdit trains.

    Attributes:
        click_probability: chance that a training patch gets clicks; the others train the
            automatic mode (all guidance channels zero).
        max_clicks: a patch with clicks gets 1 to ``max_clicks`` clicks per label present in it
            (``background`` included).
        error_clicks: add one round of clicks where the current network is wrong: per label,
            one click in the largest connected region of that label it misses.
    """

    click_probability: float = 0.5
    max_clicks: int = 3
    error_clicks: bool = True


def interior_points(mask: npt.NDArray[np.bool_], count: int, rng: np.random.Generator) -> Points:
    """``(count, 3)`` int64 voxel indices inside ``mask`` (``(X, Y, Z)`` bool), away from its edges.

    Each voxel is drawn with probability proportional to its Euclidean distance (in voxels) to
    the nearest voxel outside ``mask``, so clicks land in the interior as a user's would.
    Returns an empty ``(0, 3)`` array when ``mask`` is empty.
    """
    if count <= 0 or not mask.any():
        return _NO_POINTS
    found = ndimage.find_objects(mask.astype(np.uint8))[0]
    assert found is not None
    # one voxel of margin, so the distance sees the background around the structure
    box = tuple(
        slice(max(s.start - 1, 0), min(s.stop + 1, n)) for s, n in zip(found, mask.shape, strict=True)
    )
    distance = np.asarray(ndimage.distance_transform_edt(mask[box]), dtype=np.float64).ravel()
    total = float(distance.sum())
    picked = rng.choice(distance.size, size=count, replace=True, p=distance / total)
    local = np.stack(np.unravel_index(picked, mask[box].shape), axis=1)
    origin = np.asarray([s.start for s in box], dtype=np.int64)
    return np.asarray(local + origin, dtype=np.int64)


def sample_clicks(
    label: npt.NDArray[Any], labels: Mapping[str, int], rng: np.random.Generator, max_clicks: int
) -> dict[str, Points]:
    """Initial clicks for a ``(X, Y, Z)`` integer label patch: 1 to ``max_clicks`` per label present.

    Returns label name -> ``(N, 3)`` int64 voxel indices of the patch (``N = 0`` for absent labels).
    """
    clicks: dict[str, Points] = {}
    for name, value in labels.items():
        mask = np.asarray(label == value)
        count = int(rng.integers(1, max_clicks + 1)) if mask.any() else 0
        clicks[name] = interior_points(mask, count, rng)
    return clicks


def error_clicks(
    prediction: npt.NDArray[Any], label: npt.NDArray[Any], labels: Mapping[str, int], rng: np.random.Generator
) -> dict[str, Points]:
    """One click per label in the largest connected region where ``prediction`` misses it.

    ``prediction`` and ``label`` are ``(X, Y, Z)`` integer maps of one patch. A voxel predicted
    as label ``a`` but truly ``b`` is a miss of ``b``, so the false positives of one label are
    corrected by clicks for the label underneath them (``background`` included).
    """
    clicks: dict[str, Points] = {}
    for name, value in labels.items():
        missed = np.asarray((label == value) & (prediction != value))
        regions, count = ndimage.label(missed)
        if count == 0:
            clicks[name] = _NO_POINTS
            continue
        largest = int(np.argmax(np.bincount(regions.ravel())[1:])) + 1
        clicks[name] = interior_points(regions == largest, 1, rng)
    return clicks


def _merge(a: Mapping[str, Points], b: Mapping[str, Points]) -> dict[str, Points]:
    return {name: np.concatenate([a.get(name, _NO_POINTS), b.get(name, _NO_POINTS)]) for name in {*a, *b}}


class ImageInputs:
    """The segmentation network's inputs: the image channel alone, ``(B, 1, X, Y, Z)``."""

    def for_validation(self, images: Any) -> Any:
        return images

    def for_training(self, images: Any, labels: Any, network: Any) -> Any:
        return images


class GuidanceInputs:
    """Builds DeepEdit's network inputs: the image channel then one guidance channel per label.

    Args:
        labels: label name -> value; channel ``1 + value`` of the inputs guides label ``value``.
        config: how clicks are simulated.
        rng: the generator clicks are drawn from (seed it per rank for reproducible runs).
    """

    def __init__(self, labels: Mapping[str, int], config: ClickConfig, rng: np.random.Generator) -> None:
        self.labels = dict(labels)
        self.config = config
        self.rng = rng

    @property
    def channels(self) -> int:
        """Input channels of the network: the image and one per label."""
        return 1 + len(self.labels)

    def guidance(self, clicks: Mapping[str, Points], shape: tuple[int, int, int]) -> npt.NDArray[np.float32]:
        """``(len(labels), X, Y, Z)`` float32 guidance of patch-voxel ``clicks``, as inference builds it."""
        return guidance_channels(clicks, self.labels, _GRID_AFFINE, _GRID_AFFINE, shape)

    def for_validation(self, images: Any) -> Any:
        """``(B, 1, X, Y, Z)`` -> ``(B, 1 + L, X, Y, Z)``: automatic mode, all guidance zero."""
        import torch

        zeros = images.new_zeros((images.shape[0], len(self.labels), *images.shape[2:]))
        return torch.cat([images, zeros], dim=1)

    def for_training(self, images: Any, labels: Any, network: Any) -> Any:
        """``(B, 1, X, Y, Z)`` float32 images and integer labels -> ``(B, 1 + L, X, Y, Z)`` inputs.

        ``network`` (the bare module, on the images' device) predicts the patches once, without
        gradients, when ``error_clicks`` is on and some patch has clicks.
        """
        import torch

        truth = labels[:, 0].cpu().numpy()
        shape = (int(images.shape[2]), int(images.shape[3]), int(images.shape[4]))
        clicks: list[dict[str, Points] | None] = [
            sample_clicks(truth[b], self.labels, self.rng, self.config.max_clicks)
            if self.rng.random() < self.config.click_probability
            else None
            for b in range(truth.shape[0])
        ]
        guidance = self._stack(clicks, shape, images)
        if self.config.error_clicks and any(c is not None for c in clicks):
            prediction = _predict(network, torch.cat([images, guidance], dim=1))
            clicks = [
                None if c is None else _merge(c, error_clicks(prediction[b], truth[b], self.labels, self.rng))
                for b, c in enumerate(clicks)
            ]
            guidance = self._stack(clicks, shape, images)
        return torch.cat([images, guidance], dim=1)

    def _stack(self, clicks: list[dict[str, Points] | None], shape: tuple[int, int, int], images: Any) -> Any:
        import torch

        maps = [
            np.zeros((len(self.labels), *shape), dtype=np.float32) if c is None else self.guidance(c, shape)
            for c in clicks
        ]
        return torch.from_numpy(np.stack(maps)).to(device=images.device, dtype=images.dtype)


def _predict(network: Any, inputs: Any) -> npt.NDArray[np.int64]:
    """``(B, C, X, Y, Z)`` inputs -> ``(B, X, Y, Z)`` int64 argmax labels, dropout off, no gradients."""
    import torch

    was_training = bool(network.training)
    network.eval()
    try:
        with (
            torch.no_grad(),
            torch.autocast(device_type=inputs.device.type, enabled=inputs.device.type == "cuda"),
        ):
            logits = network(inputs)
    finally:
        network.train(was_training)
    return np.asarray(logits.argmax(dim=1).cpu().numpy(), dtype=np.int64)
