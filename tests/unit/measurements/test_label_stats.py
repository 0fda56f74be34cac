"""Unit tests of labelloop.measurements.measure_labels on phantoms whose answers are known."""

from __future__ import annotations

import itertools
import json
import math
import tracemalloc
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pytest

from labelloop.errors import InvalidInputError
from labelloop.measurements import BoundingBox, LabelMeasurements, measure_labels, voxel_volume_mm3
from tests.support.imaging import make_affine, rotation

SPACING = (0.7, 0.9, 2.5)  # anisotropic, each axis different
OBLIQUE = make_affine(rotation(0.4, -0.25, 0.6), SPACING, (-120.0, 35.0, 80.0))
AXIAL = make_affine(np.eye(3), SPACING, (10.0, -20.0, 5.0))


def _world(affine: npt.NDArray[np.float64], ijk: npt.ArrayLike) -> npt.NDArray[np.float64]:
    points = np.atleast_2d(np.asarray(ijk, dtype=np.float64))
    return np.asarray(points @ affine[:3, :3].T + affine[:3, 3])


def _sphere(
    affine: npt.NDArray[np.float64], radius_mm: float, shape: tuple[int, int, int]
) -> npt.NDArray[Any]:
    """Voxels whose centres lie within ``radius_mm`` of the world position of the grid's centre."""
    centre = _world(affine, (np.asarray(shape) - 1) / 2.0)[0]
    ijk = np.indices(shape).reshape(3, -1).T
    inside: npt.NDArray[np.bool_] = np.linalg.norm(_world(affine, ijk) - centre, axis=1) <= radius_mm
    return inside.reshape(shape).astype(np.uint8)


@pytest.mark.parametrize("affine", [AXIAL, OBLIQUE], ids=["axis-aligned", "oblique"])
def test_a_sphere_at_anisotropic_spacing_measures_its_volume_within_2_percent(
    affine: npt.NDArray[np.float64],
) -> None:
    radius_mm = 15.0
    shape = (52, 52, 52)  # holds the sphere in any orientation of this spacing
    label = _sphere(affine, radius_mm, shape)
    stats = measure_labels(label, affine)["label_1"]
    expected_ml = 4.0 / 3.0 * math.pi * radius_mm**3 / 1000.0
    assert stats.volume_ml == pytest.approx(expected_ml, rel=0.02)
    assert stats.voxels == int(label.sum())
    assert stats.volume_ml == pytest.approx(stats.voxels * 0.7 * 0.9 * 2.5 / 1000.0, rel=1e-12)
    assert stats.components == 1
    assert stats.largest_component_ml == stats.volume_ml
    assert stats.centroid_ras_mm == pytest.approx(_world(affine, (np.asarray(shape) - 1) / 2.0)[0], abs=0.05)


def test_the_voxel_volume_is_the_determinant_of_the_affine() -> None:
    assert voxel_volume_mm3(OBLIQUE) == pytest.approx(0.7 * 0.9 * 2.5, rel=1e-12)
    sheared = AXIAL.copy()
    sheared[0, 1] = 0.5  # a shear keeps the determinant
    assert voxel_volume_mm3(sheared) == pytest.approx(0.7 * 0.9 * 2.5, rel=1e-12)
    assert measure_labels(np.ones((2, 2, 2), np.uint8), sheared).voxel_volume_mm3 == pytest.approx(1.575)


def test_two_separated_blobs_count_two_and_the_largest_is_the_bigger() -> None:
    label = np.zeros((30, 30, 20), dtype=np.uint8)
    label[2:8, 2:8, 2:6] = 1  # 144 voxels
    label[15:25, 15:25, 10:15] = 1  # 500 voxels
    stats = measure_labels(label, AXIAL)["label_1"]
    voxel_ml = 0.7 * 0.9 * 2.5 / 1000.0
    assert stats.components == 2
    assert stats.voxels == 644
    assert stats.largest_component_ml == pytest.approx(500 * voxel_ml)
    assert stats.volume_ml == pytest.approx(644 * voxel_ml)


@pytest.mark.parametrize(
    ("second", "expected"),
    [
        ((slice(4, 7), slice(4, 7), slice(4, 7)), {26: 1, 18: 2, 6: 2}),  # touching at a corner only
        ((slice(4, 7), slice(4, 7), slice(1, 4)), {26: 1, 18: 1, 6: 2}),  # touching along an edge
        ((slice(4, 7), slice(1, 4), slice(1, 4)), {26: 1, 18: 1, 6: 1}),  # sharing a face
    ],
    ids=["corner", "edge", "face"],
)
def test_connectivity_decides_whether_touching_blobs_are_one(
    second: tuple[slice, slice, slice], expected: dict[int, int]
) -> None:
    label = np.zeros((9, 9, 9), dtype=np.int16)
    label[1:4, 1:4, 1:4] = 2
    label[second] = 2
    for connectivity, count in expected.items():
        stats = measure_labels(label, OBLIQUE, connectivity=connectivity)  # type: ignore[arg-type]
        assert stats["label_2"].components == count, f"connectivity {connectivity}"
        assert stats.connectivity == connectivity
    assert measure_labels(label, OBLIQUE)["label_2"].components == expected[26], "26 is the default"


def test_the_centroid_of_an_off_centre_cube_on_an_oblique_grid_is_the_affine_of_its_voxel_centroid() -> None:
    label = np.zeros((20, 24, 16), dtype=np.uint8)
    label[3:8, 14:20, 2:5] = 4  # voxel centre (5, 16.5, 3)
    stats = measure_labels(label, OBLIQUE)["label_4"]
    assert stats.centroid_ijk == pytest.approx((5.0, 16.5, 3.0))
    expected = OBLIQUE @ np.array([5.0, 16.5, 3.0, 1.0])
    assert stats.centroid_ras_mm == pytest.approx(expected[:3], abs=1e-9)
    assert not np.allclose(expected[:3], np.diag(SPACING) @ [5.0, 16.5, 3.0]), "the affine must matter"


def test_the_bounding_box_has_index_corners_and_the_ras_extent_of_the_voxels() -> None:
    label = np.zeros((20, 24, 16), dtype=np.uint8)
    label[3:8, 14:20, 2:5] = 1
    label[10, 5, 12] = 1  # a second component stretches the box
    box = measure_labels(label, OBLIQUE)["label_1"].bbox
    assert box is not None
    assert box.ijk_min == (3, 5, 2)
    assert box.ijk_max == (10, 19, 12)
    assert box.shape == (8, 15, 11)
    assert label[box.slices].sum() == label.sum()
    faces = [(lo - 0.5, hi + 0.5) for lo, hi in zip(box.ijk_min, box.ijk_max, strict=True)]
    corners = _world(OBLIQUE, list(itertools.product(*faces)))
    assert box.ras_min_mm == pytest.approx(corners.min(axis=0))
    assert box.ras_max_mm == pytest.approx(corners.max(axis=0))
    inside = _world(OBLIQUE, np.argwhere(label))
    assert np.all(inside >= np.asarray(box.ras_min_mm)) and np.all(inside <= np.asarray(box.ras_max_mm))


def test_a_single_voxel_box_on_an_axis_aligned_grid_spans_one_voxel() -> None:
    label = np.zeros((5, 6, 7), dtype=np.uint8)
    label[2, 3, 4] = 1
    box = measure_labels(label, AXIAL)["label_1"].bbox
    assert box is not None and box.ijk_min == box.ijk_max == (2, 3, 4)
    assert box.size_ras_mm == pytest.approx(SPACING)
    assert box.ras_min_mm == pytest.approx(AXIAL[:3, 3] + (np.array([2, 3, 4]) - 0.5) * SPACING)


def test_an_empty_label_measures_zero_and_has_no_centroid() -> None:
    label = np.zeros((10, 10, 10), dtype=np.uint8)
    label[1:3, 1:3, 1:3] = 1
    measured = measure_labels(label, AXIAL, {"background": 0, "liver": 1, "lesion": 5})
    assert measured.names == ["liver", "lesion"], "background is not measured"
    lesion = measured["lesion"]
    assert (lesion.voxels, lesion.volume_ml, lesion.components, lesion.largest_component_ml) == (
        0,
        0.0,
        0,
        0.0,
    )
    assert lesion.centroid_ras_mm is None and lesion.centroid_ijk is None and lesion.bbox is None
    assert measured.to_json()["labels"]["lesion"]["centroid_ras_mm"] is None
    assert measure_labels(np.zeros((4, 4, 4), np.uint8), AXIAL).labels == ()
    with pytest.raises(KeyError):
        measured["spleen"]


def test_names_choose_what_is_measured_and_unnamed_values_are_label_value() -> None:
    label = np.zeros((10, 10, 10), dtype=np.uint8)
    label[0:2] = 1
    label[5:6] = 3
    assert measure_labels(label, AXIAL).names == ["label_1", "label_3"]
    named = measure_labels(label, AXIAL, {"spleen": 3, "liver": 1})
    assert named.names == ["liver", "spleen"], "by ascending value"
    assert named["spleen"].value == 3 and named["spleen"].voxels == 100
    assert named.volumes_ml() == pytest.approx({"liver": 200 * 1.575e-3, "spleen": 100 * 1.575e-3})
    with pytest.raises(InvalidInputError):
        measure_labels(label, AXIAL, {"a": 1, "b": 1})


def _oracle(
    label: npt.NDArray[Any], value: int
) -> tuple[int, tuple[float, ...], tuple[int, ...], tuple[int, ...]]:
    where = np.argwhere(label == value)
    return (
        len(where),
        tuple(where.mean(axis=0)),
        tuple(int(v) for v in where.min(axis=0)),
        tuple(int(v) for v in where.max(axis=0)),
    )


def _check_against_oracle(label: npt.NDArray[Any], measured: LabelMeasurements) -> None:
    values = [int(v) for v in np.unique(label) if v != 0]
    assert [s.value for s in measured] == values
    for stats in measured:
        voxels, centroid, lo, hi = _oracle(label, stats.value)
        assert stats.voxels == voxels
        assert stats.centroid_ijk == pytest.approx(centroid, abs=1e-9)
        assert stats.bbox is not None and (stats.bbox.ijk_min, stats.bbox.ijk_max) == (lo, hi)


@pytest.mark.parametrize("top", [40, 5000, 3_000_000], ids=["many-values", "lookup-table", "sorted-search"])
def test_many_and_large_label_values_are_counted_exactly(top: int) -> None:
    rng = np.random.default_rng(top)
    values = np.unique(np.r_[rng.integers(1, top, size=25), top])
    label = np.zeros((23, 19, 17), dtype=np.int64)
    cells = rng.integers(0, label.size, size=2000)
    label.flat[cells] = rng.choice(values, size=cells.size)
    measured = measure_labels(label, OBLIQUE)
    _check_against_oracle(label, measured)
    assert sum(s.voxels for s in measured) == int(np.count_nonzero(label))


@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("values", [4, 30], ids=["few-values", "many-values"])
def test_maps_larger_than_one_slab_are_counted_exactly_in_either_memory_order(
    order: Literal["C", "F"], values: int
) -> None:
    label = np.zeros((40, 256, 520), dtype=np.uint8, order=order)  # 5.3 M voxels: two slabs either way
    label[1:39, 3:9, 500:519] = 1
    label[30:40, 200:256, 0:30] = 2
    label[0:2, 0:2, 0:2] = 2
    label[20, 128, 260] = 3
    label[::7, ::11, ::13] = 4  # isolated voxels, one component each
    rng = np.random.default_rng(values)
    for value in range(5, values + 1):  # blocks in both slabs
        lo = rng.integers(0, (30, 240, 500))
        label[lo[0] : lo[0] + 10, lo[1] : lo[1] + 16, lo[2] : lo[2] + 20] = value
    measured = measure_labels(label, OBLIQUE)
    _check_against_oracle(label, measured)
    if values == 4:
        assert [s.components for s in measured] == [1, 2, 1, 6 * 24 * 40]


def test_whole_float_and_bool_maps_are_accepted_and_other_maps_refused() -> None:
    label = np.zeros((6, 6, 6), dtype=np.float32)
    label[1:3, 1:3, 1:3] = 2.0
    assert measure_labels(label, AXIAL)["label_2"].voxels == 8
    assert measure_labels(label > 0, AXIAL)["label_1"].voxels == 8
    label[0, 0, 0] = 0.5
    with pytest.raises(InvalidInputError, match="whole"):
        measure_labels(label, AXIAL)
    with pytest.raises(InvalidInputError, match="non-negative"):
        measure_labels(np.full((2, 2, 2), -1, dtype=np.int8), AXIAL)
    with pytest.raises(InvalidInputError, match="3D"):
        measure_labels(np.zeros((2, 2, 2, 2), dtype=np.uint8), AXIAL)
    with pytest.raises(InvalidInputError, match="singular"):
        measure_labels(np.zeros((2, 2, 2), dtype=np.uint8), np.diag([1.0, 0.0, 1.0, 1.0]))
    with pytest.raises(InvalidInputError, match="4x4"):
        measure_labels(np.zeros((2, 2, 2), dtype=np.uint8), np.eye(3))
    with pytest.raises(InvalidInputError, match="Connectivity"):
        measure_labels(np.zeros((2, 2, 2), dtype=np.uint8), AXIAL, connectivity=8)  # type: ignore[arg-type]


def test_measurements_go_to_json_and_back() -> None:
    label = np.zeros((20, 24, 16), dtype=np.uint8)
    label[3:8, 14:20, 2:5] = 1
    label[12:14, 2:4, 8:9] = 1
    measured = measure_labels(label, OBLIQUE, {"background": 0, "lesion": 1, "liver": 2}, connectivity=6)
    data = json.loads(json.dumps(measured.to_json()))
    assert data["connectivity"] == 6
    assert data["labels"]["lesion"]["components"] == 2
    assert data["labels"]["lesion"]["volume_ml"] == pytest.approx(measured["lesion"].volume_ml, abs=1e-6)
    assert data["labels"]["liver"]["bbox"] is None
    again = LabelMeasurements.from_json(data)
    assert again.to_json() == data
    assert again["lesion"].bbox == BoundingBox.from_json(data["labels"]["lesion"]["bbox"])
    assert again["lesion"].centroid_ras_mm == pytest.approx(measured["lesion"].centroid_ras_mm, abs=1e-4)


def test_memory_stays_near_three_bytes_per_voxel_of_the_largest_box() -> None:
    """Never a whole-image intp array (8 bytes a voxel) or one mask per label held at once."""
    shape = (200, 200, 200)
    i, j, k = np.ogrid[: shape[0], : shape[1], : shape[2]]
    label = np.asarray((i // 40 + j // 40 + k // 40) % 3 + 1, dtype=np.uint8)  # every box is the image
    for order in ("C", "F"):
        label = np.asarray(label, order=order)
        tracemalloc.start()
        try:
            measured = measure_labels(label, AXIAL)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert len(measured) == 3
        assert peak <= 3.25 * label.size + 12 * 2**20, f"{order} order: {peak / label.size:.2f} bytes a voxel"


def test_more_components_than_uint16_holds_are_counted() -> None:
    label = np.zeros((100, 100, 60), dtype=np.uint8)
    label[::2, ::2, 0:56:2] = 1  # 50 * 50 * 28 = 70,000 isolated voxels
    label[10:12, 10:12, 58:60] = 1  # and an 8-voxel cube one voxel away from them
    stats = measure_labels(label, AXIAL)["label_1"]
    assert stats.components == 70_001
    assert stats.largest_component_ml == pytest.approx(8 * 1.575e-3)
