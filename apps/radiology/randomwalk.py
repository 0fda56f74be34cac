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
5. while the clicked tissue in the structure found (the coarse foreground, probability >= 0.5,
   connected to a foreground click, at the first click's level) touches a face of the region
   that can move (not on the image border, nor on the ``roi``'s), the region grows on those
   sides and the walk runs again on it, at most ``max_rounds`` walks in all: each side moves
   by ``max(margin_mm, 10 mm, half the region's size)``, up to ``max_size_mm`` per axis and
   ``max_region_voxels`` voxels in all (the steps shrink to fit; nothing fits: it stops).
   Where the clicked tissue covered at least half of the first box's faces (a structure larger
   than the box, or one that the levels of step 3 cannot tell from a neighbour a few HU away),
   the grown walks run on other levels: the intensities smoothed by a 3 mm Gaussian over the
   clicked tissue, against the range of them that a walk in the first click's own box (of at
   least 20 mm) found near that click; elsewhere (edges found, the box merely too small) on
   those of step 3. So one click in a liver reaches the whole liver, not a 60 mm box of it;
   ``max_rounds=1`` is the fixed box of before;
6. the last walk's foreground probability goes back to the region's grid (linear), is cut at
   0.5, the clicks are applied, and only the connected components that hold a foreground click
   are kept.

Every foreground click voxel is 1 in the result and every background click voxel is 0.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
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

from .walker import (
    MIN_SPACING_MM,
    Tissue,
    block_mean,
    common_rows,
    face_coverage,
    factors,
    keep_clicked,
    levels_of,
    tissue_range,
    touched_faces,
    upsample,
    walk,
)

__all__ = ["RandomWalkTask", "MAX_VOXELS", "MAX_REGION_VOXELS"]

#: Regions with more voxels than this are averaged down to at most this many before the walk;
#: the solver's time grows with the voxels left undecided by the seeds (0.1 to 0.5 s at 64^3 on
#: 2 CPU cores, for regions that are mostly undecided or mostly seeded).
MAX_VOXELS = 64**3

#: The region never grows past this many voxels of the original grid (2^25, a 322^3 box: a liver
#: at 0.7 mm). A request holds about 18 bytes per region voxel at its peak (measured: the float32
#: crop, its padded copy, the upsampled probability), so about 0.6 GB at the cap, besides the
#: uint8 label of the whole image. The box the client asks for with ``margin_mm`` or ``roi`` is
#: not cut to it; only the growth stops there.
MAX_REGION_VOXELS = 2**25

# Bounds of the user-tunable options.
_MARGIN_MM = (0.0, 500.0)
_BETA = (1.0, 10_000.0)
_MAX_ROUNDS = (1, 10)
_MAX_SIZE_MM = (10.0, 2000.0)

#: A side of the region that the structure touches moves out by at least this much per round (mm) ...
_MIN_STEP_MM = 10.0
#: ... and at least this fraction of the region's size along that axis.
_STEP_FRACTION = 0.5
#: The walk that the clicked tissue is learnt from (see ``_tissue``) looks at least this far
#: around the first click (mm); ``tissue_range`` reads the 20 mm around it.
_PROBE_MARGIN_MM = 20.0
#: The walks in a grown region use the smoothed-intensity levels of ``tissue_range`` when the
#: clicked tissue covered at least this fraction of the first region's faces (see ``_tissue``).
_COVERED_FACES = 0.5
#: When the grown region would hold more than ``max_region_voxels``, the steps are scaled by
#: these factors in turn until it fits (none fits: the growth stops).
_STEP_SCALES = (1.0, 0.5, 0.25, 0.125)

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
    - ``margin_mm`` (config, default 30): how far around the foreground clicks it looks first, in mm;
    - ``beta`` (config, default 130): edge sensitivity; higher stops at fainter edges;
    - ``max_rounds`` (config, default 6, 1 to 10): walks at most; the region grows between them
      while the structure touches its faces; 1 = the fixed ``margin_mm`` box, no growth;
    - ``max_size_mm`` (config, default 300, 10 to 2000): the growth stops at this size per axis,
      in mm (a larger box asked for with ``margin_mm`` stays as large, and does not grow).

    Args:
        max_voxels: the walk runs on at most this many (averaged) voxels, at least 8.
        max_region_voxels: the region grows to at most this many voxels of the image's grid, at
            least 8; it bounds the memory and time of the growth (not of the first box).
    """

    def __init__(self, max_voxels: int = MAX_VOXELS, max_region_voxels: int = MAX_REGION_VOXELS) -> None:
        if max_voxels < 8:
            raise ValueError("max_voxels must be at least 8")
        if max_region_voxels < 8:
            raise ValueError("max_region_voxels must be at least 8")
        self.max_voxels = max_voxels
        self.max_region_voxels = max_region_voxels
        self.spec = InferSpec(
            type="deepgrow",
            labels={},
            dimension=3,
            description="Random walker: segments the clicked structure in 3D with no training (CPU, ~1 s)",
            config={"margin_mm": 30.0, "beta": 130.0, "max_rounds": 6, "max_size_mm": 300.0},
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
            ``result``: ``{"label_names": {name: 1}, "region": [imin, imax, jmin, jmax, kmin, kmax],
            "rounds": n}`` (the box of the last walk, inclusive voxel indices, and how many walks
            ran); ``latencies`` in seconds (``infer``: all the walks).

        Raises:
            InvalidParamsError: no foreground click, clicks outside the image or the ``roi``, a
                voxel clicked as both foreground and background, options out of range.
        """
        started = time.perf_counter()
        options = config_choices(self.spec.config, request.params)
        margin_mm = _bounded(options["margin_mm"], "margin_mm", _MARGIN_MM)
        beta = _bounded(options["beta"], "beta", _BETA)
        max_rounds = _whole(options["max_rounds"], "max_rounds", _MAX_ROUNDS)
        max_size_mm = _bounded(options["max_size_mm"], "max_size_mm", _MAX_SIZE_MM)
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
        box = _region(foreground, shape, spacing, margin_mm, roi)
        limit: Box = roi if roi is not None else (np.zeros(3, dtype=np.int64), np.asarray(shape, np.int64))
        array = image.array
        walked = self._walk(array, shape, spacing, box, foreground, background, beta, None)
        rounds = 1
        tissue: Tissue | None = None
        learnt = False
        while rounds < max_rounds:
            # Only the clicked tissue in the structure says that the structure goes on: darker or
            # brighter parts of it (a kidney's sinus clicked as foreground) may be anything.
            levels = levels_of(walked.coarse, walked.coarse_spacing, walked.coarse_fg[:1], tissue)
            touched = touched_faces(walked.structure() & (np.abs(levels - 1.0) < 0.5))
            grown = _grow(box, touched, spacing, margin_mm, limit, max_size_mm, self.max_region_voxels)
            if grown is None:
                break
            if not learnt:
                # The tissue is learnt around the first click, as if it were the only one, in a
                # box of at least _PROBE_MARGIN_MM.
                probe_mm = max(margin_mm, _PROBE_MARGIN_MM)
                if len(foreground) == 1 and probe_mm == margin_mm:
                    first = walked
                else:
                    alone = _region(foreground[:1], shape, spacing, probe_mm, roi)
                    first = self._walk(array, shape, spacing, alone, foreground[:1], background, beta, None)
                tissue = _tissue(first)
                learnt = True
            box = grown
            walked = self._walk(array, shape, spacing, box, foreground, background, beta, tissue)
            rounds += 1
        lo, hi = box
        infer_s = time.perf_counter() - started

        started = time.perf_counter()
        inside_mask = upsample(walked.probability, walked.steps, walked.shape) >= 0.5
        mask = keep_clicked(inside_mask, walked.fg, walked.bg)
        del inside_mask
        label = np.zeros(shape, dtype=np.uint8)
        label[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = mask
        # A background click outside the region cannot be 1 (the label is 0 there) and one
        # inside was cleared by keep_clicked; foreground clicks all lie in the region.
        name = str(request.params.get("label") or "foreground")
        region = [int(v) for pair in zip(lo, hi - 1, strict=True) for v in pair]
        post_s = time.perf_counter() - started
        return InferOutput(
            label=label,
            result={"label_names": {name: 1}, "region": region, "rounds": rounds},
            latencies={"infer": infer_s, "invert": 0.0, "post": post_s},
        )

    def _walk(
        self,
        array: npt.NDArray[Any],
        shape: tuple[int, int, int],
        spacing: npt.NDArray[np.float64],
        box: Box,
        foreground: Points,
        background: Points,
        beta: float,
        tissue: Tissue | None,
    ) -> _Walked:
        """One walk in ``box`` (``[lo, hi)`` voxel indices of ``array``, the ``(I, J, K)`` image)."""
        lo, hi = box
        inside = np.all((background >= lo) & (background < hi), axis=1)
        fg_local = foreground - lo
        bg_local = background[inside] - lo
        crop = np.asarray(array[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]], dtype=np.float32)
        crop_shape = (int(crop.shape[0]), int(crop.shape[1]), int(crop.shape[2]))
        steps = factors(crop_shape, spacing, self.max_voxels, MIN_SPACING_MM)
        coarse = block_mean(crop, steps)
        del crop
        coarse_spacing = spacing * np.asarray(steps)
        on_border = (lo == 0, hi == np.asarray(shape))
        probability = walk(
            coarse, coarse_spacing, fg_local // steps, bg_local // steps, on_border, beta, tissue
        )
        return _Walked(probability, coarse, coarse_spacing, steps, crop_shape, fg_local, bg_local, on_border)


@dataclass(frozen=True)
class _Walked:
    """One walk's result.

    Attributes:
        probability: ``(x, y, z)`` float32 foreground probability on the coarse grid.
        coarse: ``(x, y, z)`` float32 the region's intensities averaged to the coarse grid.
        coarse_spacing: the coarse grid's voxel size per axis, mm.
        steps: the averaging factors per axis (coarse voxel = ``steps`` region voxels).
        shape: ``(X, Y, Z)`` the region's size in voxels of the image's grid.
        fg, bg: ``(N, 3)`` the foreground clicks and the background clicks inside the region, as
            voxel indices of the region.
        on_border: per axis, whether the region's low and high faces lie on the image border.
    """

    probability: FloatArray
    coarse: FloatArray
    coarse_spacing: npt.NDArray[np.float64]
    steps: tuple[int, int, int]
    shape: tuple[int, int, int]
    fg: Points
    bg: Points
    on_border: tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]]

    @property
    def coarse_fg(self) -> Points:
        """``(N, 3)`` the foreground clicks as voxel indices of the coarse grid."""
        return np.asarray(self.fg // np.asarray(self.steps), dtype=np.int64)

    def structure(self) -> npt.NDArray[np.bool_]:
        """``(x, y, z)`` bool on the coarse grid: probability >= 0.5, the clicks applied, only the
        components that hold a foreground click."""
        bg = np.asarray(self.bg // np.asarray(self.steps), dtype=np.int64)
        return keep_clicked(self.probability >= 0.5, self.coarse_fg, bg).astype(bool)


def _tissue(first: _Walked) -> Tissue | None:
    """How the walks in a grown region tell the clicked tissue, from the walk around the first
    click alone: ``None`` (``_normalise``'s levels, as in that walk) when the clicked tissue
    covered less than ``_COVERED_FACES`` of that region's faces (those off the image border),
    since those levels then found its edges and only the box was too small (a kidney); else
    the range of smoothed intensities of ``tissue_range`` (a liver, larger than the box, or
    tissue a few HU from its neighbours, which those levels join to it)."""
    click = first.coarse_fg[0]
    structure = first.structure()
    alike = structure & (np.abs(levels_of(first.coarse, first.coarse_spacing, click[None], None) - 1.0) < 0.5)
    if face_coverage(alike, first.on_border) < _COVERED_FACES:
        return None
    return tissue_range(first.coarse, first.coarse_spacing, structure, click)


# ---------------------------------------------------------------- params


def _bounded(value: Any, name: str, bounds: tuple[float, float]) -> float:
    number = float(value)
    if not bounds[0] <= number <= bounds[1]:
        raise InvalidParamsError(f"'{name}' must be between {bounds[0]:g} and {bounds[1]:g}, not {value!r}")
    return number


def _whole(value: Any, name: str, bounds: tuple[int, int]) -> int:
    number = _bounded(value, name, (float(bounds[0]), float(bounds[1])))
    if number != int(number):
        raise InvalidParamsError(f"'{name}' must be a whole number, not {value!r}")
    return int(number)


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


def _grow(
    box: Box,
    touched: tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]],
    spacing: npt.NDArray[np.float64],
    margin_mm: float,
    limit: Box,
    max_size_mm: float,
    max_voxels: int,
) -> Box | None:
    """``box`` (``[lo, hi)`` voxel indices) grown on the ``touched`` sides, or ``None`` when it
    cannot grow.

    Args:
        box: the region of the last walk.
        touched: per axis, whether the structure touches the low and the high face of ``box``.
        spacing: the image's voxel size per axis, mm.
        margin_mm: a side moves out by at least this (and ``_MIN_STEP_MM``, and
            ``_STEP_FRACTION`` of the region's size along that axis), mm.
        limit: ``[lo, hi)`` the box never leaves: the ``roi``, else the whole image.
        max_size_mm: no axis grows past this many mm (one already larger stays as it is).
        max_voxels: the grown box holds at most this many voxels; the steps shrink by
            ``_STEP_SCALES`` to fit, and when none fits the box does not grow.
    """
    lo, hi = box
    size = hi - lo
    step_mm = np.maximum(max(margin_mm, _MIN_STEP_MM), _STEP_FRACTION * size * spacing)
    # The largest size per axis the growth may reach, in voxels (never below the current size).
    cap = np.maximum(np.floor(max_size_mm / spacing).astype(np.int64), size)
    for scale in _STEP_SCALES:
        step = np.maximum(np.ceil(scale * step_mm / spacing).astype(np.int64), 1)
        want_lo = np.where(touched[0], lo - np.maximum(lo - step, limit[0]), 0)
        want_hi = np.where(touched[1], np.minimum(hi + step, limit[1]) - hi, 0)
        # Share what the size cap leaves between the two sides, the smaller want first.
        allowed = cap - size
        take_lo = np.minimum(want_lo, np.maximum(allowed - want_hi, allowed // 2))
        take_hi = np.minimum(want_hi, allowed - take_lo)
        if not np.any(take_lo + take_hi > 0):
            return None
        new_lo, new_hi = lo - take_lo, hi + take_hi
        if int(np.prod(new_hi - new_lo)) <= max_voxels:
            return new_lo.astype(np.int64), new_hi.astype(np.int64)
    return None
