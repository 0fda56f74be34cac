"""Typed settings of the radiology app's networks and preprocessing."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["NetworkConfig", "PreprocessConfig", "NETWORK", "PREPROCESS"]


@dataclass(frozen=True)
class PreprocessConfig:
    """How an image is normalised before a network sees it.

    Attributes:
        spacing_mm: target voxel size (RAS axes), millimetres.
        window_hu: intensity window ``(low, high)`` in Hounsfield units, mapped to ``[0, 1]``.
    """

    spacing_mm: tuple[float, float, float] = (3.0, 3.0, 4.0)
    window_hu: tuple[float, float] = (-250.0, 350.0)


@dataclass(frozen=True)
class NetworkConfig:
    """The 3D UNet shared by the segmentation and DeepEdit models.

    Attributes:
        channels: features per level; ``strides`` halve the resolution between levels.
        roi_size: sliding-window patch, voxels (multiples of 16 for four stride-2 levels).
        sw_batch_size: patches per forward pass.
        overlap: sliding-window overlap fraction.
        dropout: dropout probability (Monte Carlo dropout for uncertainty reuses it).
    """

    channels: tuple[int, ...] = (16, 32, 64, 128, 256)
    strides: tuple[int, ...] = (2, 2, 2, 2)
    num_res_units: int = 2
    roi_size: tuple[int, int, int] = (96, 96, 64)
    sw_batch_size: int = 2
    overlap: float = 0.25
    dropout: float = 0.1


PREPROCESS = PreprocessConfig()
NETWORK = NetworkConfig()
