"""Preprocessing shared by the radiology networks, and the way back to the original grid."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from labelloop.imaging import Volume, resample_nearest

from .config import PREPROCESS, PreprocessConfig

__all__ = ["Prepared", "normalise", "to_original_grid"]

_RAS_LABELS = (("L", "R"), ("P", "A"), ("I", "S"))


@dataclass(frozen=True)
class Prepared:
    """A normalised image.

    Attributes:
        tensor: ``(1, X, Y, Z)`` float32 torch tensor, RAS-oriented, ``spacing_mm`` voxels,
            intensities windowed to ``[0, 1]``.
        affine: ``(4, 4)`` float64, voxel index of ``tensor`` -> RAS millimetres.
    """

    tensor: Any
    affine: npt.NDArray[np.float64]

    @property
    def shape(self) -> tuple[int, int, int]:
        s = self.tensor.shape[1:]
        return (int(s[0]), int(s[1]), int(s[2]))


def normalise(image: Volume, device: Any, config: PreprocessConfig = PREPROCESS) -> Prepared:
    """Orient to RAS, resample to ``config.spacing_mm`` (bilinear) and window the intensities."""
    import torch
    from monai.data import MetaTensor
    from monai.transforms import Orientation, Spacing

    affine = torch.as_tensor(image.geometry.affine, dtype=torch.float64)
    data: Any = MetaTensor(torch.as_tensor(np.asarray(image.array, dtype=np.float32))[None], affine=affine)
    data = Orientation(axcodes="RAS", labels=_RAS_LABELS)(data)
    data = Spacing(pixdim=config.spacing_mm, mode="bilinear", padding_mode="border")(data)
    low, high = config.window_hu
    tensor = torch.clamp((data.as_tensor() - low) / (high - low), 0.0, 1.0).contiguous()
    return Prepared(tensor=tensor.to(device), affine=np.asarray(data.affine, dtype=np.float64))


def to_original_grid(label: npt.NDArray[Any], prepared: Prepared, image: Volume) -> npt.NDArray[np.uint8]:
    """A ``(X, Y, Z)`` label map on the prepared grid -> ``(I, J, K)`` uint8 on the image's grid."""
    return resample_nearest(
        np.asarray(label, dtype=np.uint8), prepared.affine, image.geometry.shape, image.geometry.affine
    )
