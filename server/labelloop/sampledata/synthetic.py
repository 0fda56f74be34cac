"""A synthetic CT-like abdominal cohort with organ labels, deterministic by seed.

Every case is drawn from its own generator, ``np.random.default_rng([seed, i])``, so case ``i``
is the same whatever the cohort size. The anatomy is defined in RAS millimetres around the
world origin (x towards the patient's left-to-right, i.e. the patient's **right is +x**,
y posterior-to-anterior, z inferior-to-superior); the default grid of 128 x 128 x 64 voxels of
3 x 3 x 4 mm (a 384 x 384 x 256 mm field of view) covers it. Each case varies in organ size
(+-15 %), position (up to about 2 cm), rotation and smooth shape deformation, in the HU of each
tissue, in blur and in noise.

The data is synthetic: it is made here, from nothing, and resembles CT only loosely.
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from labelloop.imaging import write_volume
from labelloop.sampledata._errors import SampleDataError
from labelloop.sampledata._shapes import (
    Blob,
    BoolArray,
    Box,
    FloatArray,
    Grid,
    Rng,
    blob,
    ripples,
    rotation,
    smooth_field,
)

__all__ = [
    "DEFAULT_SHAPE",
    "DEFAULT_SPACING",
    "SYNTHETIC_LABELS",
    "TISSUES",
    "SyntheticCase",
    "case_id",
    "generate_case",
    "generate_synthetic",
    "render_case",
]

logger = logging.getLogger(__name__)

Progress = Callable[[int, int, str], None]

#: Label values of the cohort; they match ``apps/radiology``'s ``LABELS``. 0 is background.
SYNTHETIC_LABELS: dict[str, int] = {
    "background": 0,
    "liver": 1,
    "spleen": 2,
    "left kidney": 3,
    "right kidney": 4,
    "lesion": 5,
}

#: Tissue classes of ``SyntheticCase.tissue`` (finer than the labels; for checks, not training).
TISSUES: dict[str, int] = {
    "air": 0,
    "fat": 1,
    "soft tissue": 2,
    "bone": 3,
    "liver": 4,
    "spleen": 5,
    "kidney cortex": 6,
    "kidney centre": 7,
    "lesion": 8,
    "vessel": 9,
    "fluid": 10,
    "gas": 11,
}

DEFAULT_SHAPE: tuple[int, int, int] = (128, 128, 64)
DEFAULT_SPACING: tuple[float, float, float] = (3.0, 3.0, 4.0)

_HU_MIN, _HU_MAX = -1024, 3071
_LIVER, _SPLEEN, _LEFT_KIDNEY, _RIGHT_KIDNEY, _LESION = (
    SYNTHETIC_LABELS[k] for k in ("liver", "spleen", "left kidney", "right kidney", "lesion")
)


@dataclass(frozen=True)
class SyntheticCase:
    """One synthetic case; all arrays are ``(I, J, K)`` on the grid of ``affine``.

    Attributes:
        image: int16 CT-like intensities in Hounsfield units.
        label: uint8 label map, values of ``SYNTHETIC_LABELS``.
        tissue: uint8 tissue map, values of ``TISSUES`` (before blur and noise).
        affine: ``(4, 4)`` float64, voxel index -> RAS millimetres, the grid centred on the origin.
    """

    image: npt.NDArray[np.int16]
    label: npt.NDArray[np.uint8]
    tissue: npt.NDArray[np.uint8]
    affine: npt.NDArray[np.float64]


# ---------------------------------------------------------------- painting


@dataclass
class _Canvas:
    """The case under construction: HU (float32), tissue and label maps, all ``(I, J, K)``."""

    grid: Grid
    hu: FloatArray
    tissue: npt.NDArray[np.uint8]
    label: npt.NDArray[np.uint8]
    interior: BoolArray

    def paint(self, box: Box, mask: BoolArray, hu: float, tissue: str, label: int = 0) -> None:
        """Set ``mask`` (shaped like ``box``) to a tissue; unlabelled tissue clears labels under it."""
        self.hu[box][mask] = hu
        self.tissue[box][mask] = TISSUES[tissue]
        self.label[box][mask] = label

    def paintblob(self, blob: Blob, hu: float, tissue: str, label: int = 0) -> BoolArray:
        """Paint ``blob`` where it lies inside the body wall; return its mask over the whole grid."""
        box = blob.box(self.grid)
        mask = blob.mask(self.grid, box) & self.interior[box]
        self.paint(box, mask, hu, tissue, label)
        full = np.zeros(self.grid.shape, dtype=bool)
        full[box] = mask
        return full


@dataclass(frozen=True)
class _Body:
    """Where the body and the spine lie in this case (mm)."""

    cx: float
    cy: float
    semi_x: float
    semi_y: float
    fat: float
    spine_x: float
    spine_y: float


def _paint_body(rng: Rng, grid: Grid) -> tuple[_Canvas, _Body]:
    """Air outside an elliptic body, a subcutaneous fat rim, soft tissue inside."""
    cx, cy = float(rng.normal(0.0, 4.0)), float(rng.normal(0.0, 4.0))
    semi_x, semi_y = 160.0 * rng.uniform(0.9, 1.08), 118.0 * rng.uniform(0.9, 1.08)
    body = _Body(
        cx=cx,
        cy=cy,
        semi_x=semi_x,
        semi_y=semi_y,
        fat=rng.uniform(12.0, 28.0),
        spine_x=cx + rng.normal(0.0, 3.0),
        spine_y=cy - semi_y + 72.0,
    )
    x, y, z = grid.coords((slice(None), slice(None), slice(None)))
    waist = 1.0 + 0.04 * np.cos(z / np.float32(90.0) + np.float32(rng.uniform(0, 2 * math.pi)))
    u, v = (x - np.float32(body.cx)) / waist, (y - np.float32(body.cy)) / waist
    outer = (u / np.float32(body.semi_x)) ** 2 + (v / np.float32(body.semi_y)) ** 2 < 1.0
    inner = (u / np.float32(body.semi_x - body.fat)) ** 2 + (
        v / np.float32(body.semi_y - body.fat)
    ) ** 2 < 1.0
    hu = np.full(grid.shape, -1000.0, dtype=np.float32)
    tissue = np.full(grid.shape, TISSUES["air"], dtype=np.uint8)
    canvas = _Canvas(grid, hu, tissue, np.zeros(grid.shape, dtype=np.uint8), np.asarray(inner))
    everything: Box = (slice(None), slice(None), slice(None))
    canvas.paint(everything, np.asarray(outer & ~inner), rng.normal(-100.0, 8.0), "fat")
    canvas.paint(everything, canvas.interior, rng.normal(40.0, 4.0), "soft tissue")
    return canvas, body


def _paint_bowel(rng: Rng, canvas: _Canvas, body: _Body) -> None:
    """Distractors: a stomach (gas over fluid) and bowel loops of gas, fluid or mesenteric fat."""
    stomach = blob(rng, (body.cx - 55.0, body.cy + 35.0, 65.0), (38.0, 30.0, 35.0), (0.0, 0.0, 20.0))
    full = canvas.paintblob(stomach, rng.normal(20.0, 6.0), "fluid")
    gas = full & (canvas.grid.axes[1][None, :, None] > np.float32(stomach.centre[1] + 10.0))
    canvas.paint((slice(None), slice(None), slice(None)), gas, rng.normal(-900.0, 30.0), "gas")
    for _ in range(int(rng.integers(8, 15))):
        centre = (
            body.cx + rng.uniform(-110.0, 80.0),
            body.cy + rng.uniform(-5.0, 85.0),
            rng.uniform(-125.0, 30.0),
        )
        loop = blob(rng, centre, rng.uniform(12.0, 28.0, 3), rng.uniform(0.0, 180.0, 3), ripple=0.12)
        kind = rng.choice(3, p=[0.3, 0.4, 0.3])
        if kind == 0:
            canvas.paintblob(loop, rng.normal(-850.0, 50.0), "gas")
        elif kind == 1:
            canvas.paintblob(loop, rng.normal(15.0, 8.0), "fluid")
        else:
            canvas.paintblob(loop, rng.normal(-90.0, 8.0), "fat")


def _paint_organs(rng: Rng, canvas: _Canvas, body: _Body) -> None:
    """Liver (patient's right, +x), spleen (left posterior), both kidneys; later ones win overlaps."""
    right_lobe = blob(rng, (body.cx + 78.0, body.cy + 5.0, 52.0), (70.0, 78.0, 70.0), (0.0, 0.0, 0.0))
    left_lobe = blob(rng, (body.cx + 5.0, body.cy + 45.0, 68.0), (55.0, 32.0, 38.0), (0.0, 10.0, -10.0))
    liver_hu = float(np.clip(rng.normal(60.0, 5.0), 48.0, 72.0))
    canvas.paintblob(right_lobe, liver_hu, "liver", _LIVER)
    canvas.paintblob(left_lobe, liver_hu, "liver", _LIVER)

    spleen = blob(rng, (body.cx - 88.0, body.spine_y + 8.0, 52.0), (24.0, 52.0, 42.0), (0.0, 0.0, -35.0))
    spleen_mask = canvas.paintblob(
        spleen, float(np.clip(rng.normal(50.0, 5.0), 38.0, 62.0)), "spleen", _SPLEEN
    )
    hollow = Blob(
        spleen.centre + spleen.rotation @ np.array([26.0, 0.0, 0.0]),
        spleen.semi_axes * [0.8, 0.7, 0.8],
        spleen.rotation,
        spleen.ripples,
    )
    box = hollow.box(canvas.grid)
    carve = hollow.mask(canvas.grid, box) & spleen_mask[box]
    canvas.paint(box, carve, rng.normal(40.0, 4.0), "soft tissue")

    cortex_hu, centre_hu = rng.normal(150.0, 15.0), rng.normal(30.0, 5.0)
    for side, label, z in ((-1.0, _LEFT_KIDNEY, -5.0), (1.0, _RIGHT_KIDNEY, -20.0)):
        centre = (body.spine_x + side * 65.0, body.spine_y + 5.0, z)
        kidney = blob(rng, centre, (24.0, 20.0, 50.0), (0.0, -side * 12.0, side * 20.0), shift_mm=6.0)
        canvas.paintblob(kidney, cortex_hu, "kidney cortex", label)
        sinus = Blob(
            kidney.centre + kidney.rotation @ np.array([-side * 7.0, 3.0, 0.0]),
            kidney.semi_axes * 0.5,
            kidney.rotation,
            kidney.ripples,
        )
        canvas.paintblob(sinus, centre_hu, "kidney centre", label)


def _paint_spine(rng: Rng, canvas: _Canvas, body: _Body) -> None:
    """Aorta and IVC in front of the spine, the vertebral column (body, discs, arch) behind."""
    grid = canvas.grid
    box = grid.box((body.spine_x, body.spine_y - 10.0, 0.0), (70.0, 70.0, 1e4))
    x, y, z = grid.coords(box)
    sway = np.float32(5.0) * np.sin(z / np.float32(70.0) + np.float32(rng.uniform(0, 2 * math.pi)))
    u, v = x - np.float32(body.spine_x), y - np.float32(body.spine_y) - sway

    def ellipse(cu: float, cv: float, au: float, av: float) -> BoolArray:
        return np.asarray(
            ((u - np.float32(cu)) / np.float32(au)) ** 2 + ((v - np.float32(cv)) / np.float32(av)) ** 2 < 1
        )

    def paint(mask: BoolArray, hu: float, tissue: str) -> None:
        canvas.paint(box, np.broadcast_to(mask, canvas.hu[box].shape) & canvas.interior[box], hu, tissue)

    paint(ellipse(-18.0, 32.0, 11.0, 11.0), rng.normal(170.0, 20.0), "vessel")  # aorta
    paint(ellipse(24.0, 30.0, 14.0, 9.0), rng.normal(115.0, 12.0), "vessel")  # inferior vena cava
    w, h = rng.uniform(19.0, 24.0), rng.uniform(15.0, 19.0)
    period, offset = rng.uniform(28.0, 34.0), rng.uniform(0.0, 30.0)
    disc = np.abs(np.mod(z - np.float32(offset), np.float32(period)) - np.float32(period / 2)) < 3.0
    shell = ellipse(0.0, 0.0, w, h)
    core = ellipse(0.0, 0.0, w - 3.0, h - 3.0)
    paint(shell, rng.normal(850.0, 40.0), "bone")
    paint(core, rng.normal(450.0, 40.0), "bone")
    paint(shell & disc, rng.normal(85.0, 8.0), "soft tissue")
    arch = ellipse(0.0, -h - 10.0, 16.0, 15.0) | ellipse(0.0, -h - 40.0, 6.0, 18.0)
    paint(arch, rng.normal(650.0, 40.0), "bone")
    paint(ellipse(0.0, -h - 10.0, 9.0, 8.0), rng.normal(15.0, 4.0), "fluid")  # spinal canal


def _paint_lesions(rng: Rng, canvas: _Canvas) -> None:
    """0-2 hypodense liver lesions (10-20 HU); the lesion label replaces the liver's."""
    count = int(rng.choice(3, p=[0.25, 0.45, 0.30]))
    liver = np.flatnonzero(canvas.label == _LIVER)
    for _ in range(count):
        for _attempt in range(20):
            centre = np.asarray(np.unravel_index(int(rng.choice(liver)), canvas.grid.shape))
            world = [float(canvas.grid.axes[k][centre[k]]) for k in range(3)]
            r = rng.uniform(10.0, 20.0)
            lesion = Blob(
                np.asarray(world),
                np.full(3, r) * rng.uniform(0.85, 1.15, 3),
                rotation(rng.uniform(0.0, 180.0, 3)),
                ripples(rng, amplitude=0.1),
            )
            box = lesion.box(canvas.grid)
            blob = lesion.mask(canvas.grid, box)
            mask = blob & (canvas.label[box] == _LIVER)
            if blob.any() and mask.sum() >= 0.8 * blob.sum():
                canvas.paint(box, mask, rng.uniform(10.0, 20.0), "lesion", _LESION)
                break


def _finish(rng: Rng, canvas: _Canvas) -> npt.NDArray[np.int16]:
    """Smooth inhomogeneity, blur (1.5-2.5 mm), Gaussian noise (10-20 HU), rounded to int16 HU."""
    hu = canvas.hu
    body = canvas.tissue != TISSUES["air"]
    hu += np.where(body, smooth_field(rng, canvas.grid, 6.0, (120.0, 300.0)), np.float32(0.0))
    sigma_mm = rng.uniform(1.5, 2.5)
    hu = ndimage.gaussian_filter(hu, sigma=[sigma_mm / s for s in canvas.grid.spacing], mode="nearest")
    hu += np.float32(rng.uniform(10.0, 20.0)) * rng.standard_normal(canvas.grid.shape, dtype=np.float32)
    return np.asarray(np.clip(np.rint(hu), _HU_MIN, _HU_MAX), dtype=np.int16)


# ---------------------------------------------------------------- public


def render_case(
    rng: Rng,
    shape: Sequence[int] = DEFAULT_SHAPE,
    spacing: Sequence[float] = DEFAULT_SPACING,
) -> SyntheticCase:
    """Draw one synthetic abdominal CT case from ``rng`` on a grid of ``shape`` voxels of ``spacing`` mm.

    The anatomy lives in millimetres around the origin, so a smaller field of view crops it.
    """
    if len(shape) != 3 or min(shape) < 1 or len(spacing) != 3 or min(spacing) <= 0:
        raise ValueError(f"need three positive sizes and spacings, got shape={shape} spacing={spacing}")
    grid = Grid.centred([int(n) for n in shape], [float(s) for s in spacing])
    canvas, body = _paint_body(rng, grid)
    _paint_bowel(rng, canvas, body)
    _paint_organs(rng, canvas, body)
    _paint_spine(rng, canvas, body)
    _paint_lesions(rng, canvas)
    image = _finish(rng, canvas)
    return SyntheticCase(image=image, label=canvas.label, tissue=canvas.tissue, affine=grid.affine)


def generate_case(
    rng: Rng,
    shape: Sequence[int] = DEFAULT_SHAPE,
    spacing: Sequence[float] = DEFAULT_SPACING,
) -> tuple[npt.NDArray[np.int16], npt.NDArray[np.uint8], npt.NDArray[np.float64]]:
    """One case as ``(image, label, affine)``.

    Returns:
        image: ``(I, J, K)`` int16 Hounsfield units; label: ``(I, J, K)`` uint8 values of
        ``SYNTHETIC_LABELS`` on the same grid; affine: ``(4, 4)`` float64 voxel -> RAS mm.
    """
    case = render_case(rng, shape, spacing)
    return case.image, case.label, case.affine


def case_id(index: int) -> str:
    """The image id of synthetic case ``index``: ``synth_000``, ``synth_001``, ..."""
    return f"synth_{index:03d}"


def generate_synthetic(
    out: Path,
    n: int,
    seed: int,
    labelled: int,
    progress: Progress | None = None,
    shape: Sequence[int] = DEFAULT_SHAPE,
    spacing: Sequence[float] = DEFAULT_SPACING,
) -> list[str]:
    """Write ``n`` synthetic cases into the studies folder ``out`` and return their ids.

    Layout: ``out/synth_000.nii.gz`` ... (int16 HU), ``out/groundtruth/<id>.nii.gz`` (uint8 labels,
    every case) and ``out/labels/final/<id>.nii.gz`` for the first ``labelled`` cases (all of them
    when ``labelled >= n``). Case ``i`` comes from ``np.random.default_rng([seed, i])``.

    Raises:
        SampleDataError: a negative ``n``, ``seed`` or ``labelled``.
    """
    if n < 0 or labelled < 0 or seed < 0:
        raise SampleDataError(f"n, seed and labelled must not be negative (got {n}, {seed}, {labelled})")
    truth_dir, final_dir = out / "groundtruth", out / "labels" / "final"
    for folder in (out, truth_dir, final_dir):
        folder.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    ids = []
    for i in range(n):
        image_id = case_id(i)
        image, label, affine = generate_case(np.random.default_rng([seed, i]), shape, spacing)
        write_volume(out / f"{image_id}.nii.gz", image, affine)
        write_volume(truth_dir / f"{image_id}.nii.gz", label, affine)
        if i < labelled:
            shutil.copyfile(truth_dir / f"{image_id}.nii.gz", final_dir / f"{image_id}.nii.gz")
        ids.append(image_id)
        if progress is not None:
            progress(i + 1, n, image_id)
    logger.info(
        "wrote %d synthetic cases (%d labelled) in %.1f s",
        n,
        min(labelled, n),
        time.perf_counter() - started,
        extra={"action": "synthetic_written", "cases": n},
    )
    return ids
