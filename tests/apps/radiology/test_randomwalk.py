"""The random-walker deepgrow task: click-guided 3D segmentation with no training.

Synthetic CT: bright ellipsoids (60 HU) in soft tissue (0 HU) with noise, anisotropic voxels
(0.8 x 0.8 x 2.5 mm) and a flipped, oblique affine; and, for the region's growth, the synthetic
abdominal cases of ``labelloop.sampledata.synthetic`` with their true organ masks. Everything
goes through the task's public methods (load, preprocess, infer), and once through a real
server and the MONAI Label client.
"""

from __future__ import annotations

import math
import time
import tracemalloc
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import requests
from monailabel.client import MONAILabelClient
from scipy import ndimage

from apps.radiology.randomwalk import RandomWalkTask
from labelloop.errors import InvalidParamsError
from labelloop.imaging import Geometry, Volume, read_volume, write_volume
from labelloop.sampledata.synthetic import DEFAULT_SPACING, SYNTHETIC_LABELS, TISSUES, render_case
from labelloop.tasks import InferOutput, InferRequest, InferTask
from tests.support.servers import LiveServer

SPACING = (0.8, 0.8, 2.5)
Blob = tuple[Sequence[float], Sequence[float]]  # centre and radii, mm along the i, j, k axes
Mask = npt.NDArray[np.bool_]

# An organ well inside a 128 x 128 x 120 mm image.
ORGAN: Blob = ((64.0, 64.0, 60.0), (25.0, 18.0, 22.0))


def oblique_affine(spacing: Sequence[float] = SPACING) -> npt.NDArray[np.float64]:
    """Voxel -> RAS with the i axis flipped and the i-j plane turned by 30 degrees."""
    angle = np.deg2rad(30.0)
    turn = np.array(
        [[np.cos(angle), -np.sin(angle), 0.0], [np.sin(angle), np.cos(angle), 0.0], [0.0, 0.0, 1.0]]
    )
    affine = np.eye(4)
    affine[:3, :3] = turn @ np.diag([-1.0, 1.0, 1.0]) @ np.diag(spacing)
    affine[:3, 3] = (120.0, -80.0, 40.0)
    return affine


def ellipsoid(shape: Sequence[int], blob: Blob, spacing: Sequence[float] = SPACING) -> Mask:
    centre, radii = blob
    axes = np.ogrid[tuple(slice(0, n) for n in shape)]
    distance = sum(((x * s - c) / r) ** 2 for x, s, c, r in zip(axes, spacing, centre, radii, strict=True))
    return np.asarray(distance <= 1.0)


def phantom(
    shape: tuple[int, int, int] = (160, 160, 48),
    truth: Mask | None = None,
    spacing: Sequence[float] = SPACING,
    noise: float = 15.0,
    seed: int = 0,
) -> tuple[Volume, Mask]:
    """``(I, J, K)`` int16 CT: 60 HU where ``truth`` (default: ``ORGAN``), 0 HU elsewhere, plus noise."""
    if truth is None:
        truth = ellipsoid(shape, ORGAN, spacing)
    rng = np.random.default_rng(seed)
    array = np.where(truth, 60.0, 0.0) + rng.normal(0.0, noise, shape)
    volume = Volume(
        array=np.rint(array).astype(np.int16), geometry=Geometry(shape=shape, affine=oblique_affine(spacing))
    )
    return volume, truth


def voxel(point_mm: Sequence[float], spacing: Sequence[float] = SPACING) -> list[int]:
    return [round(p / s) for p, s in zip(point_mm, spacing, strict=True)]


def run(volume: Volume, **params: Any) -> InferOutput:
    """The server's three steps (load, preprocess, infer) on ``volume`` with ``params``."""
    task: InferTask = RandomWalkTask()
    model = task.load(None, "cpu")
    prepared = task.preprocess(volume, "cpu")
    return task.infer(model, prepared, InferRequest(params=params, image=volume, device="cpu"))


def dice(a: Mask, b: Mask) -> float:
    return float(2.0 * np.sum(a & b) / (np.sum(a) + np.sum(b)))


def at(label: npt.NDArray[Any], points: Sequence[Sequence[int]]) -> list[int]:
    return [int(label[tuple(p)]) for p in points]


CONFIG = {"margin_mm": 30.0, "beta": 130.0, "max_rounds": 6, "max_size_mm": 300.0}


def test_spec_is_a_deepgrow_model_that_needs_no_weights() -> None:
    spec = RandomWalkTask().spec
    assert spec.type == "deepgrow" and spec.dimension == 3 and not spec.needs_weights
    assert dict(spec.labels) == {}
    assert spec.config == CONFIG
    assert all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in spec.config.values()), (
        "numbers, not choices"
    )
    assert isinstance(spec.config["max_rounds"], int)


def test_a_click_in_the_centre_segments_the_organ() -> None:
    volume, truth = phantom()
    click = voxel(ORGAN[0])
    out = run(volume, foreground=[click], background=[])
    assert out.label.shape == volume.array.shape and out.label.dtype == np.uint8
    assert set(np.unique(out.label)) == {0, 1}
    assert out.label[tuple(click)] == 1
    assert dice(out.label == 1, truth) > 0.8
    assert out.result["label_names"] == {"foreground": 1}
    assert set(out.latencies) == {"infer", "invert", "post"} and out.latencies["invert"] == 0.0


def test_the_label_param_names_the_result() -> None:
    volume, _ = phantom()
    out = run(volume, foreground=[voxel(ORGAN[0])], label="spleen")
    assert out.result["label_names"] == {"spleen": 1}


def test_a_background_click_is_zero_and_leaves_the_rest() -> None:
    volume, truth = phantom()
    inside = voxel(ORGAN[0])
    background_in_organ = voxel((64.0, 70.0, 65.0))
    assert truth[tuple(background_in_organ)]
    out = run(volume, foreground=[inside], background=[background_in_organ])
    assert at(out.label, [inside, background_in_organ]) == [1, 0]
    assert dice(out.label == 1, truth) > 0.8, "one background voxel does not undo the organ"


def test_a_foreground_click_on_the_surrounding_tissue_is_one_and_takes_nothing_else() -> None:
    volume, truth = phantom()
    inside = voxel(ORGAN[0])
    on_other_tissue = voxel((60.0, 64.0, 20.0))
    assert not truth[tuple(on_other_tissue)]
    out = run(volume, foreground=[inside, on_other_tissue])
    assert at(out.label, [inside, on_other_tissue]) == [1, 1]
    assert dice(out.label == 1, truth) > 0.8, "the first click names the tissue; a stray one adds no tissue"


def test_a_core_enclosed_by_the_clicked_wall_is_kept() -> None:
    # A kidney-like shell: a bright wall around a core as dark as the surroundings.
    shape = (160, 160, 48)
    outer = ellipsoid(shape, ORGAN)
    core = ellipsoid(shape, (ORGAN[0], tuple(r - 8.0 for r in ORGAN[1])))
    volume, _ = phantom(shape, outer & ~core)
    wall = voxel((64.0, 64.0 + ORGAN[1][1] - 4.0, 60.0))
    assert (outer & ~core)[tuple(wall)]
    out = run(volume, foreground=[wall])
    assert dice(out.label == 1, outer) > 0.8


def test_a_click_in_a_second_structure_adds_it() -> None:
    shape = (160, 160, 48)
    first: Blob = ((50.0, 50.0, 60.0), (16.0, 14.0, 18.0))
    second: Blob = ((95.0, 90.0, 60.0), (10.0, 12.0, 15.0))
    a, b = ellipsoid(shape, first), ellipsoid(shape, second)
    volume, _ = phantom(shape, a | b)
    one = run(volume, foreground=[voxel(first[0])], margin_mm=60.0).label == 1
    assert dice(one, a) > 0.8 and np.sum(one & b) == 0
    both = run(volume, foreground=[voxel(first[0]), voxel(second[0])], margin_mm=60.0).label == 1
    assert dice(both, a | b) > 0.8 and dice(both & b, b) > 0.8


def test_a_background_click_stops_a_leak() -> None:
    shape = (160, 160, 48)
    clicked: Blob = ((45.0, 64.0, 60.0), (16.0, 15.0, 18.0))
    neighbour: Blob = ((88.0, 64.0, 60.0), (14.0, 14.0, 16.0))
    a, b = ellipsoid(shape, clicked), ellipsoid(shape, neighbour)
    # A narrow neck of the same intensity joins them: the walk leaks through it.
    neck = ellipsoid(shape, ((66.0, 64.0, 60.0), (14.0, 3.0, 4.0)))
    volume, _ = phantom(shape, a | b | neck)
    params: dict[str, Any] = {"foreground": [voxel(clicked[0])], "margin_mm": 60.0}
    leaked = run(volume, **params).label == 1
    assert np.mean(leaked[b]) > 0.5, "without help the neighbour is taken too"
    stopped = run(volume, **params, background=[voxel(neighbour[0])]).label == 1
    assert np.mean(stopped[b]) < 0.2, "a background click in the neighbour gives it back"
    assert dice(stopped & ~neck, a) > 0.8


def test_without_growth_the_result_stays_in_the_margin_box() -> None:
    volume, _ = phantom()
    click = voxel(ORGAN[0])
    out = run(volume, foreground=[click], margin_mm=10.0, max_rounds=1)
    assert out.result["rounds"] == 1
    box = [(c - math.ceil(10.0 / s), c + math.ceil(10.0 / s)) for c, s in zip(click, SPACING, strict=True)]
    assert out.result["region"] == [v for pair in box for v in pair]
    inside = np.zeros(volume.array.shape, dtype=bool)
    inside[tuple(slice(lo, hi + 1) for lo, hi in box)] = True
    assert np.any(out.label[inside]) and not np.any(out.label[~inside])


def test_roi_limits_the_result_to_the_box() -> None:
    volume, truth = phantom()
    click = voxel(ORGAN[0])
    cut = click[0] + 5
    # Slicer computes the box from RAS corners, so each pair may come in either order.
    roi = [cut, 0, 159, 0, 47, 0]
    out = run(volume, foreground=[click], roi=roi)
    box = np.zeros(volume.array.shape, dtype=bool)
    box[: cut + 1] = True
    assert np.any(out.label) and not np.any(out.label[~box])
    assert dice(out.label == 1, truth & box) > 0.8
    assert run(volume, foreground=[click], roi=[]).label[cut + 10, click[1], click[2]] == 1, "[] is no roi"


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"foreground": []},
        {"foreground": None, "background": [[10, 10, 10]]},
    ],
    ids=["absent", "empty", "only-background"],
)
def test_no_foreground_click_is_invalid(params: dict[str, Any]) -> None:
    volume, _ = phantom((40, 40, 12))
    with pytest.raises(InvalidParamsError, match="foreground"):
        run(volume, **params)


@pytest.mark.parametrize(
    "params",
    [
        {"foreground": [[40, 10, 5]]},
        {"foreground": [[10, 10, 5]], "background": [[10, 10, -1]]},
        {"foreground": [10, 10, 5]},
    ],
    ids=["foreground-outside", "background-outside", "not-a-list-of-points"],
)
def test_points_outside_the_image_are_invalid(params: dict[str, Any]) -> None:
    volume, _ = phantom((40, 40, 12))
    with pytest.raises(InvalidParamsError, match="ground"):
        run(volume, **params)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"background": [[10, 10, 5]]}, "both foreground and background"),
        ({"roi": [20, 30, 0, 39, 0, 11]}, "inside 'roi'"),
        ({"roi": [0, 10, 0, 10]}, "roi"),
        ({"roi": [50, 60, 0, 39, 0, 11]}, "does not overlap"),
        ({"margin_mm": "wide"}, "margin_mm"),
        ({"margin_mm": -1.0}, "margin_mm"),
        ({"beta": 0.0}, "beta"),
        ({"max_rounds": 0}, "max_rounds"),
        ({"max_rounds": 11}, "max_rounds"),
        ({"max_rounds": 2.5}, "whole number"),
        ({"max_rounds": "many"}, "max_rounds"),
        ({"max_rounds": True}, "max_rounds"),
        ({"max_size_mm": 5.0}, "max_size_mm"),
        ({"max_size_mm": 3000.0}, "max_size_mm"),
    ],
)
def test_bad_params_are_invalid(params: dict[str, Any], message: str) -> None:
    volume, _ = phantom((40, 40, 12))
    with pytest.raises(InvalidParamsError, match=message):
        run(volume, foreground=[[10, 10, 5]], **params)


def test_a_region_that_covers_the_whole_image_still_finds_the_organ() -> None:
    # 54 x 54 x 30 mm: the default 30 mm margin reaches every border, so no face is background.
    shape, spacing = (36, 36, 20), (1.5, 1.5, 1.5)
    blob: Blob = ((27.0, 27.0, 15.0), (10.0, 9.0, 8.0))
    volume, truth = phantom(shape, ellipsoid(shape, blob, spacing), spacing=spacing)
    out = run(volume, foreground=[voxel(blob[0], spacing)])
    assert out.result["region"] == [0, 35, 0, 35, 0, 19]
    assert dice(out.label == 1, truth) > 0.8


def test_a_noise_free_image_is_segmented_exactly() -> None:
    volume, truth = phantom(noise=0.0)
    out = run(volume, foreground=[voxel(ORGAN[0])])
    assert dice(out.label == 1, truth) > 0.95


def test_a_large_region_of_a_full_size_ct_runs_in_seconds() -> None:
    shape = (512, 512, 100)
    organ: Blob = ((200.0, 200.0, 120.0), (40.0, 30.0, 35.0))
    volume, truth = phantom(shape, ellipsoid(shape, organ))
    task: InferTask = RandomWalkTask()
    model, prepared = task.load(None, "cpu"), task.preprocess(volume, "cpu")
    request = InferRequest(
        params={"foreground": [voxel(organ[0])], "margin_mm": 150.0}, image=volume, device="cpu"
    )
    started = time.perf_counter()
    out = task.infer(model, prepared, request)
    elapsed = time.perf_counter() - started
    region = out.result["region"]
    assert (region[1] - region[0] + 1) * (region[3] - region[2] + 1) * (
        region[5] - region[4] + 1
    ) > 10_000_000
    # Typically well under a second; the bound leaves room for a busy CI machine.
    assert elapsed < 5.0
    assert dice(out.label == 1, truth) > 0.8


# ---------------------------------------------------------------- the region grows to the structure


def synthetic(index: int) -> tuple[Volume, npt.NDArray[np.uint8], npt.NDArray[np.uint8]]:
    """Synthetic abdominal case ``index`` (128 x 128 x 64 voxels of 3 x 3 x 4 mm): the volume, its
    label map (``SYNTHETIC_LABELS``) and its tissue map (``TISSUES``)."""
    case = render_case(np.random.default_rng([0, index]))
    volume = Volume(array=case.image, geometry=Geometry(shape=case.image.shape, affine=case.affine))
    return volume, case.label, case.tissue


def region_sizes(out: InferOutput) -> npt.NDArray[np.int64]:
    """The voxels per axis of the box of the last walk (``result["region"]``, inclusive bounds)."""
    region = np.asarray(out.result["region"], dtype=np.int64)
    return np.asarray(region[1::2] - region[0::2] + 1, dtype=np.int64)


def deepest(mask: Mask, spacing: Sequence[float]) -> list[int]:
    """The voxel of ``mask`` farthest from its edge (mm): where a user clicks first."""
    distance = ndimage.distance_transform_edt(mask, sampling=spacing)
    return [int(i) for i in np.unravel_index(int(np.argmax(distance)), mask.shape)]


@pytest.mark.parametrize(
    ("index", "organ", "tissue", "grown_at_least", "fixed_below"),
    [
        # Measured: the fixed 30 mm box (max_rounds=1, what the model did before its region
        # could grow) 0.31 and 0.30, grown 0.92 and 0.94 (issue 17: "Dice 0.21 against the true
        # liver at precision 0.91").
        (0, "liver", "liver", 0.85, 0.4),
        (1, "liver", "liver", 0.85, 0.4),
        # The kidney (50 mm semi-axis in z) leaves the box too: fixed 0.62, grown 0.91.
        (0, "left kidney", "kidney cortex", 0.8, 0.7),
    ],
)
def test_one_click_grows_the_region_to_a_synthetic_organ(
    index: int, organ: str, tissue: str, grown_at_least: float, fixed_below: float
) -> None:
    volume, label, tissues = synthetic(index)
    truth = label == SYNTHETIC_LABELS[organ]
    click = deepest(truth & (tissues == TISSUES[tissue]), DEFAULT_SPACING)
    grown = run(volume, foreground=[click])
    assert grown.result["rounds"] > 1
    assert dice(grown.label == 1, truth) >= grown_at_least
    fixed = run(volume, foreground=[click], max_rounds=1)
    assert fixed.result["rounds"] == 1
    assert dice(fixed.label == 1, truth) < fixed_below, "the fixed box cannot hold the organ"
    grown_sizes, fixed_sizes = region_sizes(grown), region_sizes(fixed)
    assert np.all(grown_sizes >= fixed_sizes) and np.any(grown_sizes > fixed_sizes)


def test_the_region_grows_past_a_small_margin_box() -> None:
    volume, truth = phantom()
    click = voxel(ORGAN[0])
    fixed = run(volume, foreground=[click], margin_mm=10.0, max_rounds=1)
    grown = run(volume, foreground=[click], margin_mm=10.0)
    assert dice(fixed.label == 1, truth) < 0.5
    assert grown.result["rounds"] > 1 and dice(grown.label == 1, truth) > 0.8
    lo, hi = np.asarray(grown.result["region"][0::2]), np.asarray(grown.result["region"][1::2])
    found = np.argwhere(truth)
    assert np.all(lo <= found.min(axis=0)) and np.all(hi >= found.max(axis=0)), "the box holds the organ"


def test_a_structure_inside_the_first_box_is_walked_once() -> None:
    volume, _ = phantom()  # the organ's semi-axes (25, 18, 22 mm) fit the default 30 mm margin
    click = voxel(ORGAN[0])
    grown, fixed = run(volume, foreground=[click]), run(volume, foreground=[click], max_rounds=1)
    assert grown.result["rounds"] == 1
    assert grown.result["region"] == fixed.result["region"]
    assert np.array_equal(grown.label, fixed.label)


def test_growth_stays_in_the_roi() -> None:
    volume, truth = phantom()
    click = voxel(ORGAN[0])
    roi = [click[0] + 5, 0, 159, 0, 47, 0]
    out = run(volume, foreground=[click], margin_mm=10.0, roi=roi)
    assert out.result["rounds"] > 1
    region = out.result["region"]
    assert region[1] <= click[0] + 5 and not np.any(out.label[click[0] + 6 :])
    inside = np.zeros(truth.shape, dtype=bool)
    inside[: click[0] + 6] = True
    assert dice(out.label == 1, truth & inside) > 0.8


def test_growth_in_a_uniform_image_stops_at_its_bounds() -> None:
    # Nothing in a uniform image tells the structure from its surroundings: every walk takes
    # all of its region, which touches every face, so only the bounds stop the growth.
    shape = (200, 200, 200)
    volume = Volume(
        array=np.full(shape, 40, dtype=np.int16), geometry=Geometry(shape=shape, affine=np.eye(4))
    )
    click = [[100, 100, 100]]
    cap = 60**3
    task = RandomWalkTask(max_voxels=24**3, max_region_voxels=cap)

    def infer(**params: Any) -> tuple[InferOutput, int]:
        request = InferRequest(
            params={"foreground": click, "margin_mm": 10.0, **params}, image=volume, device="cpu"
        )
        tracemalloc.start()
        try:
            out = task.infer(None, None, request)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        return out, peak

    out, peak = infer()
    assert 1 < out.result["rounds"] <= CONFIG["max_rounds"]
    assert np.prod(region_sizes(out)) <= cap, "the voxel cap bounds the region"
    assert np.all(region_sizes(out) > 21), "it did grow from the 21^3 box of the 10 mm margin"
    # What it allocates: the label (8 MB of uint8, over the whole image) and little more; a
    # float32 copy of the image alone would be 32 MB.
    assert peak < out.label.nbytes + 40 * cap, f"peak {peak / 1e6:.1f} MB"
    # The number of walks and the size per axis are bounded too.
    assert infer(max_rounds=2)[0].result["rounds"] == 2
    assert np.all(region_sizes(infer(max_size_mm=40.0)[0]) <= 40)
    # A region asked for by margin_mm stays as large, and does not grow past the cap.
    wide, _ = infer(margin_mm=40.0)
    assert wide.result["rounds"] == 1 and np.all(region_sizes(wide) == 81)


def test_max_region_voxels_is_checked() -> None:
    with pytest.raises(ValueError, match="max_region_voxels"):
        RandomWalkTask(max_region_voxels=4)


def test_slicer_and_ohif_can_use_it_through_the_server(sqlite_server: LiveServer, tmp_path: Path) -> None:
    shape = (96, 96, 40)
    blob: Blob = ((38.0, 40.0, 50.0), (16.0, 14.0, 20.0))
    volume, truth = phantom(shape, ellipsoid(shape, blob))
    path = tmp_path / "ct.nii.gz"
    write_volume(path, volume.array, volume.geometry.affine)
    with open(path, "rb") as f:
        put = requests.put(
            f"{sqlite_server.url}/datastore/image?image=ct", files={"file": (path.name, f)}, timeout=30
        )
    assert put.status_code == 200, put.text

    client = MONAILabelClient(sqlite_server.url, tmpdir=str(tmp_path))
    model = client.info()["models"]["random_walker"]
    assert model["type"] == "deepgrow" and model["dimension"] == 3 and model["labels"] == []
    assert model["config"] == CONFIG

    click = voxel(blob[0])
    params = {"foreground": [click], "background": [], "result_extension": ".nrrd", "result_dtype": "uint8"}
    result_file, result = client.infer("random_walker", "ct", params)
    assert result["label_names"] == {"foreground": 1}
    mask = read_volume(Path(result_file))
    image = read_volume(path)
    assert mask.array.shape == shape and mask.array.dtype == np.uint8
    assert np.allclose(mask.geometry.affine, image.geometry.affine, atol=1e-4)
    assert mask.array[tuple(click)] == 1
    assert dice(mask.array == 1, truth) > 0.8
