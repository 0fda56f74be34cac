"""Geometry for the synthetic cohort: a centred voxel grid and deformed ellipsoids ("blobs")."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = [
    "Box",
    "BoolArray",
    "FloatArray",
    "Grid",
    "Blob",
    "Rng",
    "Vec",
    "blob",
    "ripples",
    "rotation",
    "smooth_field",
]

Rng = np.random.Generator
FloatArray = npt.NDArray[np.float32]
BoolArray = npt.NDArray[np.bool_]
Box = tuple[slice, slice, slice]
Vec = Sequence[float] | npt.NDArray[np.float64]


@dataclass(frozen=True)
class Grid:
    """Voxel-centre coordinates (mm, RAS) of an axis-aligned grid centred on the origin."""

    axes: tuple[FloatArray, FloatArray, FloatArray]
    spacing: tuple[float, float, float]

    @classmethod
    def centred(cls, shape: Sequence[int], spacing: Sequence[float]) -> Grid:
        axes = tuple(
            (np.arange(n, dtype=np.float32) - (n - 1) / 2.0) * np.float32(s)
            for n, s in zip(shape, spacing, strict=True)
        )
        return cls(axes=(axes[0], axes[1], axes[2]), spacing=(spacing[0], spacing[1], spacing[2]))

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.axes[0].size, self.axes[1].size, self.axes[2].size)

    @property
    def affine(self) -> npt.NDArray[np.float64]:
        affine = np.diag([*self.spacing, 1.0]).astype(np.float64)
        affine[:3, 3] = [float(a[0]) if a.size else 0.0 for a in self.axes]
        return affine

    def box(self, centre: Sequence[float], half: Sequence[float]) -> Box:
        """The index box holding the world box ``centre +- half`` (mm), clipped to the grid."""
        slices = []
        for axis, s, c, h in zip(self.axes, self.spacing, centre, half, strict=True):
            start = math.floor((c - h - float(axis[0])) / s)
            stop = math.ceil((c + h - float(axis[0])) / s) + 1
            slices.append(slice(min(max(start, 0), axis.size), min(max(stop, 0), axis.size)))
        return (slices[0], slices[1], slices[2])

    def coords(self, box: Box) -> tuple[FloatArray, FloatArray, FloatArray]:
        """Broadcastable ``(i, 1, 1)``, ``(1, j, 1)``, ``(1, 1, k)`` coordinates (mm) of ``box``."""
        x, y, z = (a[s] for a, s in zip(self.axes, box, strict=True))
        return x[:, None, None], y[None, :, None], z[None, None, :]


@dataclass(frozen=True)
class Blob:
    """A deformed ellipsoid: ``rotation`` maps local axes to world, ``ripples`` bend its surface.

    ``ripples`` rows are ``(amplitude, fu, fv, fw, phase)``: the radius is scaled by
    ``1 + sum(amplitude * cos(pi * (fu*u + fv*v + fw*w) + phase))`` in normalised local coordinates.
    """

    centre: npt.NDArray[np.float64]
    semi_axes: npt.NDArray[np.float64]
    rotation: npt.NDArray[np.float64]
    ripples: npt.NDArray[np.float64]

    def half_extent(self) -> npt.NDArray[np.float64]:
        reach = float(self.semi_axes.max()) * (1.0 + float(np.abs(self.ripples[:, 0]).sum()))
        return np.full(3, reach)

    def box(self, grid: Grid) -> Box:
        return grid.box(self.centre.tolist(), self.half_extent().tolist())

    def radius(self, grid: Grid, box: Box) -> FloatArray:
        """Normalised radius over ``box``: < 1 inside the blob, 1 on its surface."""
        x, y, z = grid.coords(box)
        d = (x - np.float32(self.centre[0]), y - np.float32(self.centre[1]), z - np.float32(self.centre[2]))
        r = self.rotation.astype(np.float32)
        local = [
            (r[0, k] * d[0] + r[1, k] * d[1] + r[2, k] * d[2]) / np.float32(self.semi_axes[k])
            for k in range(3)
        ]
        r2 = local[0] ** 2 + local[1] ** 2 + local[2] ** 2
        bend = np.ones_like(r2)
        for amplitude, fu, fv, fw, phase in self.ripples:
            arg = np.float32(math.pi) * (
                np.float32(fu) * local[0] + np.float32(fv) * local[1] + np.float32(fw) * local[2]
            )
            bend += np.float32(amplitude) * np.cos(arg + np.float32(phase))
        return np.asarray(np.sqrt(r2) / np.maximum(bend, np.float32(0.2)), dtype=np.float32)

    def mask(self, grid: Grid, box: Box) -> BoolArray:
        return np.asarray(self.radius(grid, box) < 1.0)


def rotation(degrees: Vec) -> npt.NDArray[np.float64]:
    """Rotation matrix for rotations about x, then y, then z (degrees)."""
    ax, ay, az = (math.radians(d) for d in degrees)
    rx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
    ry = np.array([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]])
    rz = np.array([[math.cos(az), -math.sin(az), 0], [math.sin(az), math.cos(az), 0], [0, 0, 1]])
    return np.asarray(rz @ ry @ rx, dtype=np.float64)


def ripples(rng: Rng, n: int = 4, amplitude: float = 0.08) -> npt.NDArray[np.float64]:
    rows = [
        [rng.uniform(-amplitude, amplitude), *rng.uniform(-1.2, 1.2, 3), rng.uniform(0.0, 2 * math.pi)]
        for _ in range(n)
    ]
    return np.asarray(rows, dtype=np.float64)


def blob(
    rng: Rng,
    centre: Vec,
    semi_axes: Vec,
    angles: Vec,
    *,
    shift_mm: float = 8.0,
    angle_jitter: float = 8.0,
    ripple: float = 0.08,
) -> Blob:
    """A blob around a nominal ``centre``/``semi_axes`` (mm)/``angles`` (degrees), varied per case."""
    scale = rng.uniform(0.85, 1.15) * rng.uniform(0.95, 1.05, 3)
    shift = np.clip(rng.normal(0.0, shift_mm, 3), -2.5 * shift_mm, 2.5 * shift_mm)
    jitter = rng.normal(0.0, angle_jitter, 3)
    return Blob(
        centre=np.asarray(centre, dtype=np.float64) + shift,
        semi_axes=np.asarray(semi_axes, dtype=np.float64) * scale,
        rotation=rotation(np.asarray(angles) + jitter),
        ripples=ripples(rng, amplitude=ripple),
    )


def smooth_field(rng: Rng, grid: Grid, amplitude: float, wavelength_mm: tuple[float, float]) -> FloatArray:
    """A smooth random ``(I, J, K)`` float32 field, a sum of separable cosines of about ``amplitude``."""
    x, y, z = grid.coords((slice(None), slice(None), slice(None)))
    field = np.zeros(grid.shape, dtype=np.float32)
    terms = 3
    for _ in range(terms):
        k = (2 * math.pi / rng.uniform(*wavelength_mm, 3)).astype(np.float32)
        phase = rng.uniform(0.0, 2 * math.pi, 3).astype(np.float32)
        a = np.float32(rng.normal(0.0, amplitude / math.sqrt(terms)))
        field += a * np.cos(k[0] * x + phase[0]) * np.cos(k[1] * y + phase[1]) * np.cos(k[2] * z + phase[2])
    return field
