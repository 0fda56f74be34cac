"""Click-guided 3D segmentation that needs no training: a random walker in a box around the clicks.

Typed ``deepgrow`` so that 3D Slicer and OHIF offer it as an interactive tool from the first
minute of a project, before any network has been trained. It works on the original voxel grid:

1. the region is the bounding box of the foreground clicks grown by ``margin_mm`` on every side
   (in voxels per axis from the image spacing, so anisotropic CT works), cut by the client's
   ``roi`` box when it sends one, and clipped to the image;
2. the region is averaged down by integer factors per axis to voxels of at least 1.5 mm and at
   most ``max_voxels`` voxels, as close to isotropic as the factors allow;
3. intensities become levels: 1 for the tissue under the foreground clicks, falling to 0 for
   darker and rising to 2 for brighter tissue within a few noise standard deviations of the
   clicked tissue's own noise, so one ``beta`` suits CT and MR alike;
4. scikit-image's random walker runs on the levels with seeds: foreground clicks (grown a little
   over their own tissue) = 1; background clicks (grown the same way), the region's faces
   (except on the image border, where a structure may leave the field of view, and where the
   clicked tissue crosses them) and the inside of the areas of other tissue that touch those = 2;
5. the foreground probability goes back to the region's grid (linear), is cut at 0.5, the clicks
   are applied, and only the connected components that hold a foreground click are kept.

Every foreground click voxel is 1 in the result and every background click voxel is 0.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from labelloop.errors import InvalidParamsError
from labelloop.imaging import Volume
from labelloop.tasks import (
    InferOutput,
    InferRequest,
    InferSpec,
    InferTask,
    Points,
    config_choices,
    parse_points,
)

from .walker import MIN_SPACING_MM, block_mean, common_rows, factors, keep_clicked, upsample, walk

__all__ = ["RandomWalkTask", "MAX_VOXELS"]

#: Regions with more voxels than this are averaged down to at most this many before the walk;
#: the solver's time grows with the voxels left undecided by the seeds (0.1 to 0.5 s at 64^3 on
#: 2 CPU cores, for regions that are mostly undecided or mostly seeded).
MAX_VOXELS = 64**3

# Bounds of the user-tunable options.
_MARGIN_MM = (0.0, 500.0)
_BETA = (1.0, 10_000.0)

Box = tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]
FloatArray = npt.NDArray[np.float32]


class RandomWalkTask(InferTask):
    """Segments what the user clicks on, with no trained weights: a 3D random walker around the clicks.

    Params it reads (MONAI Label section 6, ``deepgrow``):

    - ``foreground``: ``[[i, j, k], ...]`` voxel indices inside the structure; at least one;
    - ``background``: ``[[i, j, k], ...]`` voxel indices outside it; optional;
    - ``roi``: ``[xmin, xmax, ymin, ymax, zmin, zmax]`` voxel indices (inclusive, in either
      order per axis, as Slicer computes them from a RAS box); optional, ``[]`` means none;
    - ``label``: the name of the structure, echoed in ``label_names``; optional;
    - ``margin_mm`` (config, default 30): how far around the foreground clicks it looks, in mm;
    - ``beta`` (config, default 130): edge sensitivity; higher stops at fainter edges.
    """

    def __init__(self, max_voxels: int = MAX_VOXELS) -> None:
        if max_voxels < 8:
            raise ValueError("max_voxels must be at least 8")
        self.max_voxels = max_voxels
        self.spec = InferSpec(
            type="deepgrow",
            labels={},
            dimension=3,
            description="Random walker: segments the clicked structure in 3D with no training (CPU, ~1 s)",
            config={"margin_mm": 30.0, "beta": 130.0},
            needs_weights=False,
        )

    def load(self, weights: Path | None, device: Any) -> None:
        """Nothing to load: the method has no network."""
        return None

    def preprocess(self, image: Volume, device: Any) -> None:
        """Nothing worth caching: a request reads only its region of ``image.array``, and casting
        that region is cheaper than holding a float32 copy of the whole image in the cache."""
        return None

    def infer(self, model: Any, prepared: Any, request: InferRequest) -> InferOutput:
        """Segment the structure under the foreground clicks.

        Returns:
            ``label``: ``(I, J, K)`` uint8 on ``request.image``'s grid, 1 = the structure;
            ``result``: ``{"label_names": {name: 1}, "region": [imin, imax, jmin, jmax, kmin, kmax]}``
            (the box it worked in, inclusive voxel indices); ``latencies`` in seconds.

        Raises:
            InvalidParamsError: no foreground click, clicks outside the image or the ``roi``, a
                voxel clicked as both foreground and background, options out of range.
        """
        started = time.perf_counter()
        options = config_choices(self.spec.config, request.params)
        margin_mm = _bounded(options["margin_mm"], "margin_mm", _MARGIN_MM)
        beta = _bounded(options["beta"], "beta", _BETA)
        image = request.image
        shape = image.geometry.shape
        spacing = np.asarray(image.geometry.spacing, dtype=np.float64)
        foreground = parse_points(request.params.get("foreground"), "foreground", shape)
        background = parse_points(request.params.get("background"), "background", shape)
        if len(foreground) == 0:
            raise InvalidParamsError("'foreground' needs at least one [i, j, k] click inside the structure")
        both = common_rows(foreground, background)
        if len(both):
            raise InvalidParamsError(f"Voxels clicked as both foreground and background: {both.tolist()}")
        roi = _parse_roi(request.params.get("roi"), shape)
        if roi is not None and not np.all((foreground >= roi[0]) & (foreground < roi[1])):
            raise InvalidParamsError("Every foreground click must lie inside 'roi'")
        lo, hi = _region(foreground, shape, spacing, margin_mm, roi)
        inside = np.all((background >= lo) & (background < hi), axis=1)
        fg_local = foreground - lo
        bg_local = background[inside] - lo

        crop = np.asarray(image.array[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]], dtype=np.float32)
        steps = factors(crop.shape, spacing, self.max_voxels, MIN_SPACING_MM)
        coarse = block_mean(crop, steps)
        coarse_spacing = spacing * np.asarray(steps)
        on_border = (lo == 0, hi == np.asarray(shape))
        probability = walk(coarse, coarse_spacing, fg_local // steps, bg_local // steps, on_border, beta)
        infer_s = time.perf_counter() - started

        started = time.perf_counter()
        inside_mask = upsample(probability, steps, crop.shape) >= 0.5
        mask = keep_clicked(inside_mask, fg_local, bg_local)
        label = np.zeros(shape, dtype=np.uint8)
        label[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = mask
        # A background click outside the region cannot be 1 (the label is 0 there) and one
        # inside was cleared by keep_clicked; foreground clicks all lie in the region.
        name = str(request.params.get("label") or "foreground")
        region = [int(v) for pair in zip(lo, hi - 1, strict=True) for v in pair]
        post_s = time.perf_counter() - started
        return InferOutput(
            label=label,
            result={"label_names": {name: 1}, "region": region},
            latencies={"infer": infer_s, "invert": 0.0, "post": post_s},
        )


# ---------------------------------------------------------------- params


def _bounded(value: Any, name: str, bounds: tuple[float, float]) -> float:
    number = float(value)
    if not bounds[0] <= number <= bounds[1]:
        raise InvalidParamsError(f"'{name}' must be between {bounds[0]:g} and {bounds[1]:g}, not {value!r}")
    return number


def _parse_roi(value: Any, shape: tuple[int, int, int]) -> Box | None:
    """``[xmin, xmax, ymin, ymax, zmin, zmax]`` inclusive voxel indices -> ``(lo, hi)`` clipped to
    the image (``hi`` exclusive), or ``None`` when there is no roi."""
    if value is None or (isinstance(value, (list, tuple)) and len(value) == 0):
        return None
    try:
        box = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidParamsError("'roi' must be [xmin, xmax, ymin, ymax, zmin, zmax] voxel indices") from exc
    if box.shape != (6,) or not np.all(np.isfinite(box)):
        raise InvalidParamsError(
            f"'roi' must be [xmin, xmax, ymin, ymax, zmin, zmax] voxel indices, got {value!r}"
        )
    pairs = np.rint(box).astype(np.int64).reshape(3, 2)
    lo = np.maximum(pairs.min(axis=1), 0)
    hi = np.minimum(pairs.max(axis=1) + 1, np.asarray(shape))
    if np.any(lo >= hi):
        raise InvalidParamsError(f"'roi' {value!r} does not overlap the image {tuple(shape)}")
    return lo, hi


def _region(
    foreground: Points,
    shape: tuple[int, int, int],
    spacing: npt.NDArray[np.float64],
    margin_mm: float,
    roi: Box | None,
) -> Box:
    """The box ``[lo, hi)`` around the foreground clicks, grown by ``margin_mm``, cut by ``roi``."""
    margin = np.ceil(margin_mm / spacing).astype(np.int64)
    lo = np.maximum(foreground.min(axis=0) - margin, 0)
    hi = np.minimum(foreground.max(axis=0) + margin + 1, np.asarray(shape))
    if roi is not None:  # it holds every foreground click, so the boxes overlap
        lo, hi = np.maximum(lo, roi[0]), np.minimum(hi, roi[1])
    return lo.astype(np.int64), hi.astype(np.int64)
