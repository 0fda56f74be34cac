"""The numerical core of the random-walker click model: coarse grids, intensity levels, seeds, the walk.

Arrays are ``(X, Y, Z)`` regions of the original voxel grid; spacings are millimetres per axis.
"""

from __future__ import annotations

import threading
import warnings
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from labelloop.tasks import Points

__all__ = [
    "block_mean",
    "common_rows",
    "face_coverage",
    "factors",
    "keep_clicked",
    "levels_of",
    "Tissue",
    "tissue_range",
    "touched_faces",
    "upsample",
    "walk",
    "MIN_SPACING_MM",
]

FloatArray = npt.NDArray[np.float32]

#: Regions are averaged to voxels of at least this size (mm): the block mean tames the noise of thin
#: slices, which the walk would otherwise take for edges.
MIN_SPACING_MM = 1.5

#: Foreground clicks grow into a ball of this radius (mm, and at least one voxel) over voxels of
#: similar intensity: a seed of one voxel in 3D pulls too weakly against the region's faces.
_CLICK_RADIUS_MM = 2.0

#: Intensities within this many noise standard deviations of the clicked ones count as the same ...
_SAME_NOISE_UNITS = 2.0
#: ... and this many further away as fully different.
_RAMP_NOISE_UNITS = 2.0
#: The noise is measured within this many (coarse) voxels of the foreground clicks.
_NOISE_RADIUS = 3

#: A grown region's levels (see ``_tissue_levels``) come from its intensities smoothed by a
#: Gaussian of this standard deviation (mm, per axis; none along axes whose voxels are over three
#: times larger) over the voxels that ``_normalise`` finds like the first click's: a local mean,
#: in which tissue a few HU from its neighbours stands out of noise ten times larger, and which
#: clearly different tissue (a kidney cortex's fat) does not drag into a partial volume. The first
#: region's levels (those of the box of ``margin_mm``) are ``_normalise``'s, as they were.
_SMOOTH_MM = 3.0
#: The clicked tissue's range in a grown region: these percentiles of the smoothed intensities of
#: what the walk in the first click's box found within this distance (mm) of the click, among
#: the voxels that ``_normalise`` finds like the click's ...
_RANGE_PERCENTILES = (15.0, 95.0)
_RANGE_RADIUS_MM = 20.0
#: ... widened by this many standard deviations of the smoothed noise, and at least this many
#: around the click's own smoothed intensity; levels leave 1 over the next ``_RAMP_NOISE_UNITS``.
_RANGE_NOISE_UNITS = 1.0
_CLICK_RANGE_NOISE_UNITS = 2.0


@dataclass(frozen=True)
class Tissue:
    """The clicked tissue's range of smoothed intensities (see ``tissue_range``), image units.

    Attributes:
        low, high: levels are 1 from ``low`` to ``high``,
        ramp: and fall to 0 (rise to 2) over ``ramp`` below ``low`` (above ``high``).
    """

    low: float
    high: float
    ramp: float


def common_rows(a: Points, b: Points) -> Points:
    """The points of ``a`` that also appear in ``b`` (``(N, 3)`` voxel indices)."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((0, 3), dtype=np.int64)
    same = np.all(a[:, None, :] == b[None, :, :], axis=2)
    return a[np.any(same, axis=1)]


#: One walk at a time: the BLAS thread limit below is process-wide.
walk_lock = threading.Lock()


def factors(
    shape: tuple[int, ...], spacing: npt.NDArray[np.float64], max_voxels: int, min_spacing_mm: float = 0.0
) -> tuple[int, int, int]:
    """Integer averaging factors per axis that bring ``shape`` under ``max_voxels`` voxels of at
    least ``min_spacing_mm``.

    The coarse spacing ``spacing * factors`` (mm) is kept as close to isotropic as the factors
    allow: fine axes are averaged first, so 0.8 x 0.8 x 2.5 mm CT becomes 1.6 x 1.6 x 2.5 mm, then
    2.4 x 2.4 x 2.5 mm, before its slices are merged.
    """
    sizes = np.asarray(shape, dtype=np.int64)
    target = max(float(spacing.min()), min_spacing_mm)
    while True:
        factors = np.minimum(np.maximum(np.rint(target / spacing), 1), sizes).astype(np.int64)
        if int(np.prod(-(-sizes // factors))) <= max_voxels or np.all(factors == sizes):
            return (int(factors[0]), int(factors[1]), int(factors[2]))
        target *= 1.1


def block_mean(array: FloatArray, factors: tuple[int, int, int]) -> FloatArray:
    """``(X, Y, Z)`` -> ``(ceil(X/fx), ceil(Y/fy), ceil(Z/fz))`` means of ``factors`` blocks
    (the last partial block is padded by repeating the edge)."""
    if factors == (1, 1, 1):
        return array
    padded_shape = [-(-n // f) * f for n, f in zip(array.shape, factors, strict=True)]
    pad = [(0, p - n) for p, n in zip(padded_shape, array.shape, strict=True)]
    padded = np.pad(array, pad, mode="edge") if any(p[1] for p in pad) else array
    fx, fy, fz = factors
    nx, ny, nz = (p // f for p, f in zip(padded_shape, factors, strict=True))
    blocks = padded.reshape(nx, fx, ny, fy, nz, fz)
    return np.asarray(blocks.mean(axis=(1, 3, 5), dtype=np.float32), dtype=np.float32)


def upsample(coarse: FloatArray, factors: tuple[int, int, int], shape: tuple[int, ...]) -> FloatArray:
    """Coarse ``(x, y, z)`` values of ``factors`` blocks -> ``shape`` (at most ``x * fx, ...``),
    by linear interpolation between block centres, one axis at a time."""
    fine = coarse
    for axis in sorted(range(3), key=lambda a: factors[a]):  # the smallest factors first: less work
        factor = factors[axis]
        if factor == 1:
            continue
        size = fine.shape[axis]
        centre = (np.arange(shape[axis]) + 0.5) / factor - 0.5  # in coarse voxel units
        below = np.clip(np.floor(centre), 0, size - 1).astype(np.intp)
        above = np.minimum(below + 1, size - 1)
        weight = np.clip(centre - below, 0.0, 1.0).astype(np.float32)
        view = [1, 1, 1]
        view[axis] = -1
        weight = weight.reshape(view)
        low = np.take(fine, below, axis=axis)
        fine = low + weight * (np.take(fine, above, axis=axis) - low)
    return np.asarray(fine, dtype=np.float32)


def walk(
    image: FloatArray,
    spacing: npt.NDArray[np.float64],
    foreground: Points,
    background: Points,
    on_border: tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]],
    beta: float,
    tissue: Tissue | None = None,
) -> FloatArray:
    """Foreground probability ``(X, Y, Z)`` float32 in ``[0, 1]`` of a random walk on ``image``.

    Args:
        image: ``(X, Y, Z)`` intensities of the (coarse) region.
        spacing: its voxel size in mm per axis.
        foreground, background: ``(N, 3)`` clicks as voxel indices of ``image``.
        on_border: per axis, whether the region's low and high faces lie on the image border.
        beta: edge sensitivity; an edge between voxels whose levels (see ``_normalise``) differ
            by ``g`` per voxel weighs ``exp(-beta * g**2)``.
        tissue: with it, the levels are ``_tissue_levels``'s (smoothed intensities against
            the range a walk around the first click found) instead of ``_normalise``'s: for a
            grown region, whose faces no longer hold back tissue that the noise of
            ``_normalise``'s levels joins to the clicked one.
    """
    from skimage.segmentation import random_walker

    levels = levels_of(image, spacing, foreground, tissue)
    seeds = _seeds(levels, spacing, foreground, background, on_border)
    spread = float(levels.std())
    if not np.any(seeds == 2) or spread == 0.0:
        # Nothing tells the structure from its surroundings: all of the region is alike.
        return np.ones(image.shape, dtype=np.float32)
    # scikit-image weighs an edge exp(-beta * g**2 / (10 * std)); scaling the data by 10 * std
    # makes it exp(-beta * g**2) with g the step of the levels per voxel.
    from threadpoolctl import threadpool_limits

    # scipy's conjugate gradient calls numpy's dot product on vectors of 10^4 to 10^5 numbers,
    # which OpenBLAS splits across threads; on a busy 2-core machine waiting for them made a
    # walk 15 to 30 times slower (0.4 s -> 6 to 12 s). One thread it is.
    with walk_lock, threadpool_limits(limits=1, user_api="blas"), warnings.catch_warnings():
        # Loose probabilities and slow convergence are fine for a 0.5 cut; they are not errors.
        warnings.simplefilter("ignore", UserWarning)
        probability = random_walker(
            (levels * (10.0 * spread)).astype(np.float64),
            seeds,
            beta=beta,
            mode="cg_j",
            tol=1e-3,
            spacing=spacing / spacing.min(),
            return_full_prob=True,
        )
    return np.asarray(probability[0], dtype=np.float32)


def levels_of(
    image: FloatArray, spacing: npt.NDArray[np.float64], foreground: Points, tissue: Tissue | None = None
) -> FloatArray:
    """``(X, Y, Z)`` float32 levels in ``[0, 2]`` the walk runs on: 1 = like the clicked tissue,
    0 = clearly darker, 2 = clearly brighter; ``_normalise``'s without ``tissue``, else
    ``_tissue_levels``'s (``image``, ``spacing``, ``foreground`` as in ``walk``)."""
    if tissue is None:
        return _normalise(image, foreground)
    return _tissue_levels(image, spacing, foreground, tissue)


def _seeds(
    levels: FloatArray,
    spacing: npt.NDArray[np.float64],
    foreground: Points,
    background: Points,
    on_border: tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]],
) -> npt.NDArray[np.int32]:
    """``(X, Y, Z)`` int32 seeds for the walk: 1 = structure, 2 = background, 0 = to decide.

    Structure: each foreground click grown into a small ball over voxels of its level.
    Background: each background click grown the same way; the region's faces except on the
    image border and where the clicked tissue crosses them (seeding those would drain the
    structure: in 3D a click's pull fades within a few voxels); and, to spare the solver, the
    inside of the areas of other tissue that touch those and hold no foreground click (the
    walk would give them to the background anyway).
    """
    from scipy import ndimage

    difference = np.abs(levels - 1.0)  # 0 = the clicked tissue, 1 = clearly other tissue
    seeds = np.zeros(levels.shape, dtype=np.int32)
    faces = _faces(levels.shape, on_border)
    seeds[faces & (difference >= 0.5)] = 2
    seeds[_ball_alike(background, spacing, levels)] = 2
    seeds[_ball_alike(foreground, spacing, levels)] = 1
    areas, _ = ndimage.label(difference >= 1.0)
    if np.any(seeds == 2):
        touching = np.setdiff1d(areas[seeds == 2], areas[tuple(foreground.T)])
        other = np.isin(areas, touching[touching > 0])
    else:
        # The region is the whole image and nothing was clicked as background: all that is
        # clearly unlike the clicked tissue is background.
        other = areas > 0
    inner = ndimage.binary_erosion(other, structure=np.ones((3, 3, 3), dtype=bool), border_value=1)
    seeds[inner & (seeds == 0)] = 2
    seeds[tuple(background.T)] = 2
    seeds[tuple(foreground.T)] = 1
    # A coarse voxel that holds clicks of both kinds stays free; the clicks are applied on the fine grid.
    seeds[tuple(common_rows(foreground, background).T)] = 0
    return seeds


def _normalise(image: FloatArray, foreground: Points) -> FloatArray:
    """``(X, Y, Z)`` float32 levels in ``[0, 2]``: 1 = like the clicked tissue, 0 = clearly darker,
    2 = clearly brighter.

    The clicked tissue is the range of intensities around the foreground clicks (the median of
    each click's 3x3x3 neighbourhood) widened by ``_SAME_NOISE_UNITS`` noise standard deviations;
    levels leave 1 linearly over the next ``_RAMP_NOISE_UNITS``. The first click sets the range;
    a later click widens it only if its intensity lies within ``_SAME_NOISE_UNITS`` of one already
    taken, and is otherwise a seed only: one click on tissue like the surroundings (a kidney's
    sinus fat) would make everything alike. The noise is that of the clicked tissue: the median
    absolute difference of neighbours within ``_NOISE_RADIUS`` voxels of the clicks, which the few
    edges there barely move.
    """
    clicked = [_clicked(image, point) for point in foreground]
    noise = _noise(image, foreground)
    same, ramp = _SAME_NOISE_UNITS * noise, _RAMP_NOISE_UNITS * noise
    taken = clicked[:1]
    for value in clicked[1:]:
        if min(abs(value - t) for t in taken) <= same:
            taken.append(value)
    low, high = min(taken) - same, max(taken) + same
    darker = np.clip((low - image) / ramp, 0.0, 1.0)
    brighter = np.clip((image - high) / ramp, 0.0, 1.0)
    return np.asarray(1.0 - darker + brighter, dtype=np.float32)


def _clicked(image: FloatArray, point: npt.NDArray[np.int64]) -> float:
    """The median intensity of the 3x3x3 neighbourhood of ``point`` (cut by the region's faces)."""
    return float(np.median(image[tuple(slice(max(c - 1, 0), c + 2) for c in point)]))


def _noise(image: FloatArray, foreground: Points) -> float:
    """The noise standard deviation of ``image`` (``(X, Y, Z)``) around the foreground clicks.

    The median absolute difference of neighbours within ``_NOISE_RADIUS`` voxels of the clicks
    (robust: the few edges there barely move it), and for noise-free images (phantoms, masks),
    which still need a scale, at least a small part of the intensity range.
    """
    diffs: list[npt.NDArray[np.float32]] = []
    for point in foreground:
        near = image[tuple(slice(max(c - _NOISE_RADIUS, 0), c + _NOISE_RADIUS + 1) for c in point)]
        diffs += [np.abs(np.diff(near, axis=a)).ravel() for a in range(3) if near.shape[a] > 1]
    every = np.concatenate(diffs) if diffs else np.zeros(0, dtype=np.float32)
    noise = 1.4826 * float(np.median(every)) / np.sqrt(2.0) if every.size else 0.0
    p1, p99 = np.percentile(image, [1.0, 99.0])
    return max(noise, 1e-3 * float(p99 - p1), 1e-6)


def _smooth(
    image: FloatArray, spacing: npt.NDArray[np.float64], within: npt.NDArray[np.bool_]
) -> tuple[FloatArray, float]:
    """``image`` (``(X, Y, Z)``, voxels of ``spacing`` mm) smoothed by ``_SMOOTH_MM`` over the voxels
    of ``within`` only (a normalised convolution: elsewhere, and where no voxel of ``within`` is
    near, the image as it is), and the factor by which that shrinks the standard deviation of
    white noise (1 when nothing is smoothed)."""
    from scipy import ndimage

    sigma = _SMOOTH_MM / spacing
    sigma = np.where(sigma < 1.0 / 3.0, 0.0, sigma)
    if not np.any(sigma > 0):
        return image, 1.0
    factor = 1.0
    for s in sigma[sigma > 0]:  # the root of the sum of the squared weights, per axis
        impulse = np.zeros(2 * int(np.ceil(4.0 * s)) + 1)
        impulse[len(impulse) // 2] = 1.0
        kernel = ndimage.gaussian_filter1d(impulse, float(s), mode="constant", truncate=4.0)
        factor *= float(np.sqrt(np.sum(kernel**2)))
    widths = tuple(float(s) for s in sigma)
    weight = within.astype(np.float32)
    total = ndimage.gaussian_filter(image * weight, widths, mode="nearest", truncate=4.0)
    norm = ndimage.gaussian_filter(weight, widths, mode="nearest", truncate=4.0)
    smooth = np.where(within & (norm > 1e-3), total / np.maximum(norm, 1e-3), image)
    return np.asarray(smooth, dtype=np.float32), factor


def tissue_range(
    image: FloatArray,
    spacing: npt.NDArray[np.float64],
    structure: npt.NDArray[np.bool_],
    click: npt.NDArray[np.int64],
) -> Tissue:
    """The clicked tissue's range of smoothed intensities, from a walk around one click.

    Args:
        image: ``(X, Y, Z)`` intensities of the (coarse) region of that walk.
        spacing: its voxel size in mm per axis.
        structure: ``(X, Y, Z)`` bool, what the walk found (``keep_clicked``).
        click: ``(3,)`` the foreground click, a voxel index of ``image``.

    Returns:
        The ``_RANGE_PERCENTILES`` of the intensities smoothed by ``_SMOOTH_MM`` of the voxels of
        ``structure`` within ``_RANGE_RADIUS_MM`` of the click whose level (``_normalise``) is
        the clicked tissue's, widened by ``_RANGE_NOISE_UNITS`` and stretched to hold the
        click's own smoothed intensity ``+- _CLICK_RANGE_NOISE_UNITS``, in standard deviations
        of the noise left after smoothing (the percentiles, not the noise, bear the tissue's own
        variation: the partial volume of a thin cortex, a slow drift of intensity). The lower
        percentile is high enough that a walk which leaked into a neighbour a few HU darker
        mostly does not carry it into the range.
    """
    points = click.reshape(1, 3)
    same = np.abs(_normalise(image, points) - 1.0) < 0.5
    smooth, factor = _smooth(image, spacing, same)
    own = _clicked(smooth, click)
    # float32 cannot tell intensities closer than a few parts in 10^7: a noise-free image keeps
    # a ramp that its smoothing's rounding does not cross.
    noise = max(_noise(image, points) * factor, 64.0 * float(np.finfo(np.float32).eps) * max(1.0, abs(own)))
    axes = np.ogrid[tuple(slice(0, n) for n in image.shape)]
    distance2 = sum(((a - c) * s) ** 2 for a, c, s in zip(axes, click, spacing, strict=True))
    alike = structure & same & (distance2 <= _RANGE_RADIUS_MM**2)
    if np.any(alike):
        low, high = (float(v) for v in np.percentile(smooth[alike], _RANGE_PERCENTILES))
    else:
        low = high = own
    low, high = low - _RANGE_NOISE_UNITS * noise, high + _RANGE_NOISE_UNITS * noise
    low = min(low, own - _CLICK_RANGE_NOISE_UNITS * noise)
    high = max(high, own + _CLICK_RANGE_NOISE_UNITS * noise)
    return Tissue(low=low, high=high, ramp=_RAMP_NOISE_UNITS * noise)


def _tissue_levels(
    image: FloatArray, spacing: npt.NDArray[np.float64], foreground: Points, tissue: Tissue
) -> FloatArray:
    """``(X, Y, Z)`` float32 levels in ``[0, 2]``: where ``_normalise``'s levels are within 0.5 of
    the clicked tissue's, the intensity smoothed over those voxels against ``tissue``'s range
    (1 within it, falling to 0, rising to 2, over its ramp below, above it); elsewhere
    ``_normalise``'s own (clearly darker or brighter)."""
    raw = _normalise(image, foreground[:1])
    same = np.abs(raw - 1.0) < 0.5
    smooth, _ = _smooth(image, spacing, same)
    darker = np.clip((tissue.low - smooth) / tissue.ramp, 0.0, 1.0)
    brighter = np.clip((smooth - tissue.high) / tissue.ramp, 0.0, 1.0)
    return np.asarray(np.where(same, 1.0 - darker + brighter, raw), dtype=np.float32)


def _ball_alike(
    points: Points, spacing: npt.NDArray[np.float64], levels: FloatArray
) -> npt.NDArray[np.bool_]:
    """``levels.shape`` bool: the voxels of each point's ``_ball`` whose level is within 0.5 of the
    median level around the point."""
    mask = np.zeros(levels.shape, dtype=bool)
    for point in points:
        around = float(np.median(levels[tuple(slice(max(c - 1, 0), c + 2) for c in point)]))
        mask |= _ball(point[None], spacing, levels.shape) & (np.abs(levels - around) < 0.5)
    return mask


def _ball(points: Points, spacing: npt.NDArray[np.float64], shape: tuple[int, ...]) -> npt.NDArray[np.bool_]:
    """``shape`` bool mask of the voxels within ``_CLICK_RADIUS_MM`` (or one voxel) of ``points``."""
    mask = np.zeros(shape, dtype=bool)
    radius_mm = max(_CLICK_RADIUS_MM, float(spacing.max()))
    radius = np.floor(radius_mm / spacing).astype(np.int64)
    offsets = np.stack(np.meshgrid(*[np.arange(-r, r + 1) for r in radius], indexing="ij"), axis=-1).reshape(
        -1, 3
    )
    offsets = offsets[np.sum((offsets * spacing) ** 2, axis=1) <= radius_mm**2]
    voxels = (points[:, None, :] + offsets[None, :, :]).reshape(-1, 3)
    voxels = voxels[np.all((voxels >= 0) & (voxels < np.asarray(shape)), axis=1)]
    mask[tuple(voxels.T)] = True
    return mask


def keep_clicked(
    mask: npt.NDArray[np.bool_], foreground: Points, background: Points
) -> npt.NDArray[np.uint8]:
    """The clicks applied to ``mask`` (``(X, Y, Z)`` bool), then only the 6-connected components
    that hold a foreground click; ``(X, Y, Z)`` uint8."""
    from scipy import ndimage

    mask = mask.copy()
    mask[tuple(background.T)] = False
    mask[tuple(foreground.T)] = True
    components, count = ndimage.label(mask)
    keep = np.zeros(count + 1, dtype=np.uint8)
    keep[components[tuple(foreground.T)]] = 1
    keep[0] = 0
    return np.asarray(keep[components], dtype=np.uint8)


def touched_faces(structure: npt.NDArray[np.bool_]) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
    """Per axis, whether ``structure`` (``(X, Y, Z)`` bool) touches the low and the high face of the
    region: ``(low, high)``, each ``(3,)`` bool, true where it has a voxel in the first (``low``)
    or the last (``high``) plane along that axis."""
    low = np.zeros(3, dtype=bool)
    high = np.zeros(3, dtype=bool)
    for axis in range(3):
        low[axis] = bool(structure[(slice(None),) * axis + (0,)].any())
        high[axis] = bool(structure[(slice(None),) * axis + (-1,)].any())
    return low, high


def face_coverage(
    mask: npt.NDArray[np.bool_], on_border: tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]]
) -> float:
    """The fraction of the voxels on the region's faces that are not on the image border
    (``on_border``: per axis, low and high) that ``mask`` (``(X, Y, Z)`` bool) holds; 0 when every
    face is on the image border."""
    faces = _faces(mask.shape, on_border)
    count = int(faces.sum())
    return float(np.sum(mask & faces)) / count if count else 0.0


def _faces(
    shape: tuple[int, ...], on_border: tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]]
) -> npt.NDArray[np.bool_]:
    """``shape`` bool: the first and last planes along each axis, except those on the image border."""
    faces = np.zeros(shape, dtype=bool)
    for axis in range(3):
        if not on_border[0][axis]:
            faces[(slice(None),) * axis + (0,)] = True
        if not on_border[1][axis]:
            faces[(slice(None),) * axis + (-1,)] = True
    return faces
