"""Label measurements (``labelloop.measurements.measure_labels``) on a 512x512x300 label map.

Two uint8 maps of 512x512x300 voxels (0.7 x 0.7 x 1.5 mm, an oblique affine), 3 classes each:

* **organs**: an ellipsoid of about 1.6 L (1), one of about 0.2 L (2), and 40 small spheres
  (3, lesions of 3 to 9 mm radius), as a segmentation result looks;
* **dense**: every voxel labelled, in interleaved blocks, so each class's bounding box is the
  whole image (the worst case for the per-label component labelling).

Each is measured by ``measure_labels`` and by the **baseline**, the direct way: one whole-image
boolean mask per label, ``np.nonzero`` for its centroid and box, ``scipy.ndimage.label`` of the
whole mask. Both run in this process, in the same run, one after the other; the results are
checked equal. Time is wall seconds (best of ``--repeat``); memory is the peak of numpy's
allocations above the label map (``tracemalloc``).

Usage::

    python bench/measurements.py [--repeat N] [--shape 512,512,300]
"""

from __future__ import annotations

import argparse
import functools
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from labelloop.measurements import LabelMeasurements, measure_labels

SPACING = (0.7, 0.7, 1.5)


def _affine() -> npt.NDArray[np.float64]:
    angle = 0.3
    rotation = np.array(
        [[np.cos(angle), -np.sin(angle), 0.0], [np.sin(angle), np.cos(angle), 0.0], [0.0, 0.0, 1.0]]
    )
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag(SPACING)
    affine[:3, 3] = (-180.0, -150.0, -200.0)
    return affine


def organs(shape: tuple[int, int, int], seed: int = 0) -> npt.NDArray[np.uint8]:
    label = np.zeros(shape, dtype=np.uint8)
    i, j, k = np.ogrid[: shape[0], : shape[1], : shape[2]]
    s = np.asarray(shape, dtype=np.float64)
    for value, centre, radii_mm in ((1, (0.35, 0.45, 0.5), (90, 70, 60)), (2, (0.7, 0.5, 0.5), (45, 35, 30))):
        c = np.asarray(centre) * s
        r = np.asarray(radii_mm) / np.asarray(SPACING)
        inside = ((i - c[0]) / r[0]) ** 2 + ((j - c[1]) / r[1]) ** 2 + ((k - c[2]) / r[2]) ** 2 <= 1.0
        label[inside] = value
    rng = np.random.default_rng(seed)
    for _ in range(40):
        radius_mm = rng.uniform(3.0, 9.0)
        r = radius_mm / np.asarray(SPACING)
        c = rng.uniform(r + 1, s - r - 1)
        lo = np.maximum(np.floor(c - r).astype(int), 0)
        hi = np.minimum(np.ceil(c + r).astype(int) + 1, shape)
        bi, bj, bk = np.ogrid[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
        ball = ((bi - c[0]) / r[0]) ** 2 + ((bj - c[1]) / r[1]) ** 2 + ((bk - c[2]) / r[2]) ** 2 <= 1.0
        label[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]][ball] = 3
    return label


def dense(shape: tuple[int, int, int]) -> npt.NDArray[np.uint8]:
    i, j, k = np.ogrid[: shape[0], : shape[1], : shape[2]]
    return np.asarray((i // 64 + j // 64 + k // 50) % 3 + 1, dtype=np.uint8)


def baseline(label: npt.NDArray[Any], affine: npt.NDArray[np.float64]) -> dict[int, tuple[Any, ...]]:
    """The direct way: a whole-image mask per label, np.nonzero, ndimage.label of the whole mask."""
    voxel_ml = abs(np.linalg.det(affine[:3, :3])) / 1000.0
    structure = ndimage.generate_binary_structure(3, 3)
    out: dict[int, tuple[Any, ...]] = {}
    for value in np.unique(label):
        if value == 0:
            continue
        mask = label == value
        idx = np.nonzero(mask)
        centroid = tuple(float(x.mean()) for x in idx)
        box = tuple(int(x.min()) for x in idx), tuple(int(x.max()) for x in idx)
        components, n = ndimage.label(mask, structure=structure)
        sizes = np.bincount(components.ravel())
        out[int(value)] = (idx[0].size * voxel_ml, int(n), int(sizes[1:].max()) * voxel_ml, centroid, box)
    return out


def _ours(m: LabelMeasurements) -> dict[int, tuple[Any, ...]]:
    out: dict[int, tuple[Any, ...]] = {}
    for s in m.labels:
        assert s.bbox is not None and s.centroid_ijk is not None
        out[s.value] = (
            s.volume_ml,
            s.components,
            s.largest_component_ml,
            s.centroid_ijk,
            (s.bbox.ijk_min, s.bbox.ijk_max),
        )
    return out


def _run(what: Callable[[], Any], repeat: int) -> tuple[float, float, Any]:
    best = float("inf")
    result: Any = None
    peak = 0
    for _ in range(repeat):
        tracemalloc.start()
        t0 = time.perf_counter()
        result = what()
        best = min(best, time.perf_counter() - t0)
        peak = max(peak, tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    return best, peak / 2**20, result


def _same(a: dict[int, tuple[Any, ...]], b: dict[int, tuple[Any, ...]]) -> bool:
    if a.keys() != b.keys():
        return False
    for v in a:
        (va, na, la, ca, ba), (vb, nb, lb, cb, bb) = a[v], b[v]
        if na != nb or ba != bb or not np.isclose(va, vb) or not np.isclose(la, lb):
            return False
        if not np.allclose(ca, cb, atol=1e-6):
            return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--shape", default="512,512,300")
    args = parser.parse_args()
    parts = [int(x) for x in args.shape.split(",")]
    shape = (parts[0], parts[1], parts[2])
    affine = _affine()
    print(f"label map {shape} uint8 ({np.prod(shape) / 1e6:.1f} M voxels), spacing {SPACING} mm")
    print(f"{'map':8} {'method':16} {'seconds':>8} {'peak MiB':>9} {'ratio':>6}  labels: components")
    for name, label in (("organs", organs(shape)), ("dense", dense(shape))):
        t_base, m_base, base = _run(functools.partial(baseline, label, affine), args.repeat)
        t_ours, m_ours, ours = _run(functools.partial(measure_labels, label, affine), args.repeat)
        same = _same(_ours(ours), base)
        counts = ", ".join(f"{s.value}: {s.components}" for s in ours.labels)
        print(f"{name:8} {'baseline':16} {t_base:8.2f} {m_base:9.0f} {1.0:6.2f}")
        print(f"{name:8} {'measure_labels':16} {t_ours:8.2f} {m_ours:9.0f} {t_ours / t_base:6.2f}  {counts}")
        print(f"{name:8} results equal: {same}")


if __name__ == "__main__":
    main()
