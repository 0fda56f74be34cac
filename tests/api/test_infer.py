"""``POST /infer/{model}``: every output path, every client's params, clicks, bundles, provenance,
caching, concurrency and the error cases (contract sections 1.4, 2.2, 6 and 8 items 5, 16, 22).

The networks get weights from ``tests.support.weights`` whose output is one known class on every
voxel, so results are checked voxel by voxel, not only by shape.
"""

from __future__ import annotations

import json
import logging
import re
import statistics
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nrrd
import numpy as np
import pytest
import requests
from monailabel.client import MONAILabelClient
from monailabel.client.client import MONAILabelUtils

from labelloop.imaging import Volume, read_volume, write_volume
from labelloop.settings import InferenceSettings, JobSettings, Settings
from tests.conftest import ServerFactory
from tests.support.bundle import make_bundle
from tests.support.http import publish_weights, upload
from tests.support.servers import APP_DIR, LiveServer, free_port, start_thread_server
from tests.support.volumes import DEFAULT_AFFINE, make_image
from tests.support.weights import write_weights

logger = logging.getLogger(__name__)

BACKGROUND, LIVER, SPLEEN, LEFT_KIDNEY, LESION = 0, 1, 2, 3, 5
SHAPE = (64, 64, 32)
#: 3 mm voxels, L/P-flipped axes (as a DICOM-derived CT), an origin away from 0.
AFFINE = np.array(
    [[-3.0, 0.0, 0.0, 95.0], [0.0, -3.0, 0.0, 90.0], [0.0, 0.0, 3.0, -48.0], [0.0, 0.0, 0.0, 1.0]]
)
LATENCY_KEYS = {"pre", "infer", "invert", "post", "write", "total"}


# ------------------------------------------------------------------ helpers


def _publish(server: LiveServer, model: str, weights: Path) -> dict[str, Any]:
    return publish_weights(server, weights, model)


def _infer(
    server: LiveServer,
    model: str,
    image: str = "",
    params: dict[str, Any] | str | None = None,
    output: str | None = None,
    **kwargs: Any,
) -> requests.Response:
    query = {"image": image}
    if output is not None:
        query["output"] = output
    query.update(kwargs.pop("query", {}))
    # Multipart, as Slicer, OHIF and the Python client send it: a "params" field plus files.
    text = params if isinstance(params, str) else json.dumps(params or {})
    files = {"params": (None, text), **kwargs.pop("files", {})}
    return requests.post(f"{server.url}/infer/{model}", params=query, files=files, timeout=120, **kwargs)


@dataclass
class Part:
    name: str
    filename: str | None
    content_type: str | None
    content: bytes


def _parts(response: requests.Response) -> dict[str, Part]:
    """Split a multipart response exactly (no decoding, no line-ending changes)."""
    ctype = response.headers["content-type"]
    assert ctype.startswith("multipart/form-data; boundary="), ctype
    delimiter = b"--" + ctype.split("boundary=", 1)[1].encode()
    chunks = response.content.split(delimiter)
    assert chunks[0] == b"" and chunks[-1].startswith(b"--"), (
        "a multipart body starts and ends with the boundary"
    )
    parts = {}
    for chunk in chunks[1:-1]:
        assert chunk.startswith(b"\r\n") and chunk.endswith(b"\r\n")
        head, _, body = chunk[2:-2].partition(b"\r\n\r\n")
        headers = dict(
            (k.strip().lower(), v.strip())
            for k, v in (line.split(":", 1) for line in head.decode().split("\r\n"))
        )
        disposition = headers["content-disposition"]
        name = re.search(r'name="([^"]*)"', disposition)
        filename = re.search(r'filename="([^"]*)"', disposition)
        assert name is not None
        parts[name.group(1)] = Part(
            name=name.group(1),
            filename=filename.group(1) if filename else None,
            content_type=headers.get("content-type"),
            content=body,
        )
    return parts


def _volume(content: bytes, filename: str, tmp_path: Path) -> Volume:
    path = tmp_path / f"{uuid.uuid4().hex}-{filename}"
    path.write_bytes(content)
    return read_volume(path)


def _multipart_result(response: requests.Response, tmp_path: Path) -> tuple[dict[str, Any], str, Volume]:
    """(params, mask filename, mask) of a default-output answer."""
    assert response.status_code == 200, response.text
    parts = _parts(response)
    assert list(parts) == ["params", "image"]
    assert parts["params"].filename is None and parts["params"].content_type == "application/json"
    image = parts["image"]
    assert image.filename is not None and image.content_type == "application/octet-stream"
    return (
        json.loads(parts["params"].content),
        image.filename,
        _volume(image.content, image.filename, tmp_path),
    )


def _assert_on_grid(mask: Volume, shape: tuple[int, int, int] = SHAPE, affine: np.ndarray = AFFINE) -> None:
    assert mask.array.shape == shape
    np.testing.assert_allclose(mask.geometry.affine, affine, atol=1e-4)


def _assert_error(response: requests.Response, status: int, *words: str) -> str:
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"] == "application/json"
    detail = response.json()["detail"]
    assert isinstance(detail, str) and detail
    for word in words:
        assert word.lower() in detail.lower(), detail
    return detail


def _json_error(response: requests.Response, status: int) -> Any:
    """A 422 from request validation has a list detail (pydantic style); ours a string."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"] == "application/json"
    return response.json()["detail"]


# ------------------------------------------------------------------ a server with trained models


@dataclass
class Ready:
    """A server whose segmentation predicts liver everywhere and whose DeepEdit predicts lesion."""

    server: LiveServer
    files: Path  # ct.nii.gz and ctn.nrrd: the same array, uploaded as images "ct" and "ctn"


@pytest.fixture(scope="module")
def ready(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ready]:
    files = tmp_path_factory.mktemp("infer-files")
    settings = Settings(
        app=APP_DIR,
        data_dir=tmp_path_factory.mktemp("infer-data"),
        port=free_port(),
        jobs=JobSettings(workers=0),
    )
    server = start_thread_server(settings)
    try:
        image = make_image(files / "ct.nii.gz", shape=SHAPE, affine=AFFINE, seed=1)
        write_volume(files / "ctn.nrrd", image, AFFINE)
        upload(server, "ct", files / "ct.nii.gz")
        upload(server, "ctn", files / "ctn.nrrd")
        _publish(server, "segmentation", write_weights(files / "seg.pt", "segmentation", winner=LIVER))
        _publish(server, "deepedit", write_weights(files / "de.pt", "deepedit", winner=LESION))
        yield Ready(server=server, files=files)
    finally:
        server.stop()


def _click_params(labels: Any, app_labels: list[str]) -> tuple[dict[str, Any], list[int], list[int]]:
    """Deepgrow-style clicks every interactive model accepts: (params, foreground, background)."""
    names = [n for n in (labels if labels else app_labels) if n != "background"]
    fg, bg = [40, 20, 10], [5, 50, 25]
    return {"foreground": [fg], "background": [bg], "label": names[0]}, fg, bg


# ------------------------------------------------------------------ every model, both parsing paths


def test_client_infer_on_every_model_multipart_and_json(make_server: ServerFactory, tmp_path: Path) -> None:
    server = make_server()
    make_image(tmp_path / "case.nii.gz", shape=SHAPE, affine=AFFINE)
    upload(server, "case", tmp_path / "case.nii.gz")
    info = requests.get(f"{server.url}/info/", timeout=10).json()
    models = info["models"]
    assert {"segmentation", "deepedit"} <= set(models)

    published: dict[str, int] = {}
    for name, model in models.items():
        if model["state"] == "untrained":
            refused = _infer(server, name, "case", output="json")
            _assert_error(refused, 409, "train")
            winner = LIVER if model["type"] == "segmentation" else LESION
            published[name] = _publish(
                server, name, write_weights(tmp_path / f"{name}.pt", name, winner=winner)
            )["version"]
    assert set(published) >= {"segmentation", "deepedit"}
    after = requests.get(f"{server.url}/info/", timeout=10).json()["models"]
    for name, version in published.items():
        assert (after[name]["state"], after[name]["version"]) == ("ready", version)

    client = MONAILabelClient(server.url, tmpdir=str(tmp_path / "client"), client_id="user-xyz")
    for name, model in after.items():
        interactive = model["type"] in ("deepgrow", "deepedit")
        params, fg, bg = _click_params(model["labels"], info["labels"]) if interactive else ({}, None, None)

        # Multipart path, through the Python client (what Slicer uses).
        result_file, result = client.infer(name, "case", dict(params))
        assert result_file is not None, f"{name}: the client found no mask part"
        path = Path(result_file)
        assert path.name.endswith(".nii.gz"), (
            f"{name}: the mask keeps the image's real extension: {path.name}"
        )
        mask = read_volume(path)
        _assert_on_grid(mask)
        assert mask.array.dtype == np.uint8
        assert isinstance(result, dict), f"{name}: the client could not parse the params part"
        assert LATENCY_KEYS <= set(result["latencies"]), result["latencies"]
        assert result["model_version"] == published.get(name)
        assert "label_names" in result
        if isinstance(model["labels"], dict) and model["labels"]:
            assert result["label_names"] == model["labels"]
        if name in published:
            winner = LIVER if model["type"] == "segmentation" else LESION
            if interactive:
                assert mask.array[tuple(fg)] == after[name]["labels"][params["label"]]
                assert mask.array[tuple(bg)] == BACKGROUND
                others = np.ones(SHAPE, dtype=bool)
                others[tuple(fg)] = others[tuple(bg)] = False
                assert np.all(mask.array[others] == winner)
            else:
                assert np.all(mask.array == winner)
        elif interactive:
            assert mask.array[tuple(fg)] != 0 and mask.array[tuple(bg)] == 0

        # JSON path: output=json gives the params only.
        as_json = _infer(server, name, "case", params, output="json")
        assert as_json.status_code == 200, as_json.text
        assert as_json.headers["content-type"] == "application/json"
        body = as_json.json()
        assert body["label_names"] == result["label_names"]
        assert LATENCY_KEYS <= set(body["latencies"])
        assert body["model_version"] == published.get(name)

        # The client's plain-JSON branch: no file part, the body is the params.
        status, form, files, _ = MONAILabelUtils.http_multipart(
            "POST",
            server.url,
            f"/infer/{name}?image=case&output=json",
            {"params": json.dumps(params)},
            {},
        )
        assert status == 200 and not files
        assert json.loads(form)["label_names"] == result["label_names"]


def test_total_latency_covers_every_stage(ready: Ready) -> None:
    params = {"result_extension": ".nii.gz", "result_dtype": "float32"}  # a write of a few ms
    latencies = _infer(ready.server, "segmentation", "ct", params, output="json").json()["latencies"]
    assert latencies["write"] > 0.001
    stages = sum(latencies[k] for k in ("pre", "infer", "invert", "post", "write"))
    assert latencies["total"] >= stages - 0.0003, latencies  # 5 values rounded to 0.0001


# ------------------------------------------------------------------ Slicer and OHIF output options


def test_slicer_params_give_nrrd_uint8_on_the_image_grid(ready: Ready, tmp_path: Path) -> None:
    client = MONAILabelClient(ready.server.url, tmpdir=str(tmp_path), client_id="user-xyz")
    slicer = {"result_extension": ".nrrd", "result_dtype": "uint8"}
    for image_id in ("ct", "ctn"):  # NIfTI in, NRRD out; NRRD in, NRRD out
        result_file, params = client.infer("segmentation", image_id, dict(slicer))
        path = Path(result_file)
        assert path.suffix == ".nrrd" and not path.name.endswith(".nii.gz"), path.name
        assert path.read_bytes().startswith(b"NRRD000")
        data, header = nrrd.read(str(path))
        assert data.dtype == np.uint8 and tuple(header["sizes"]) == SHAPE
        mask = read_volume(path)
        _assert_on_grid(mask)
        assert np.all(mask.array == LIVER)
        assert params["label_names"]["liver"] == LIVER

    # NRRD in, NIfTI out, at the multipart level: the part's filename carries the real extension.
    response = _infer(ready.server, "segmentation", "ctn", {"result_extension": ".nii.gz"})
    params, filename, mask = _multipart_result(response, tmp_path)
    assert filename.endswith(".nii.gz") and filename.startswith("ctn"), filename
    _assert_on_grid(mask)
    assert np.all(mask.array == LIVER)

    # Without result_extension the mask follows the image's own format.
    _, filename, _ = _multipart_result(_infer(ready.server, "segmentation", "ctn"), tmp_path)
    assert filename.endswith(".nrrd"), filename
    _, filename, _ = _multipart_result(_infer(ready.server, "segmentation", "ct"), tmp_path)
    assert filename.endswith(".nii.gz"), filename

    # .seg.nrrd keeps its double extension; output=all is the default multipart answer.
    response = _infer(ready.server, "segmentation", "ct", {"result_extension": ".seg.nrrd"}, output="all")
    _, filename, mask = _multipart_result(response, tmp_path)
    assert filename.endswith(".seg.nrrd"), filename
    _assert_on_grid(mask)

    # result_dtype is honoured, not just defaulted.
    _, _, mask = _multipart_result(
        _infer(ready.server, "segmentation", "ct", {"result_dtype": "int16", "result_extension": ".nrrd"}),
        tmp_path,
    )
    assert mask.array.dtype == np.int16 and np.all(mask.array == LIVER)


def test_ohif_output_image_is_a_bare_nrrd_on_the_image_grid(ready: Ready, tmp_path: Path) -> None:
    ohif = {
        "result_extension": ".nrrd",
        "result_dtype": "uint8",
        "result_compress": False,
        "restore_label_idx": False,
    }
    response = _infer(ready.server, "segmentation", "ct", ohif, output="image")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/octet-stream"
    disposition = response.headers["content-disposition"]
    assert disposition.startswith("attachment;") and re.search(r'filename="[^"]+\.nrrd"', disposition)
    assert response.content.startswith(b"NRRD000")
    path = tmp_path / "ohif.nrrd"
    path.write_bytes(response.content)
    data, header = nrrd.read(str(path))
    assert tuple(data.shape) == SHAPE and data.dtype == np.uint8
    assert header["space"] == "left-posterior-superior"
    mask = read_volume(path)
    _assert_on_grid(mask)
    assert np.all(mask.array == LIVER)


# ------------------------------------------------------------------ click-guided results


def test_deepedit_clicks_in_every_client_format(ready: Ready, tmp_path: Path) -> None:
    """The network predicts lesion everywhere; clicks must show up exactly where they were made."""
    client = MONAILabelClient(ready.server.url, tmpdir=str(tmp_path), client_id="user-xyz")
    liver_click, bg_click, kidney_click = [10, 12, 5], [30, 30, 10], [40, 41, 20]

    # Slicer multi-label: one key per label (names with spaces too), plus the current segment.
    slicer = {
        "liver": [liver_click],
        "spleen": [],
        "left kidney": [kidney_click],
        "background": [bg_click],
        "label": "liver",
    }
    result_file, params = client.infer("deepedit", "ct", {**slicer, "result_extension": ".nrrd"})
    mask = read_volume(Path(result_file)).array
    assert np.argwhere(mask == LIVER).tolist() == [liver_click]
    assert np.argwhere(mask == LEFT_KIDNEY).tolist() == [kidney_click]
    assert np.argwhere(mask == BACKGROUND).tolist() == [bg_click]
    assert np.count_nonzero(mask == LESION) == mask.size - 3
    assert params["label_names"]["liver"] == LIVER

    # OHIF: background plus the labels clicked; output=image.
    ohif_click = [20, 21, 8]
    response = _infer(
        ready.server, "deepedit", "ct", {"background": [], "liver": [ohif_click]}, output="image"
    )
    assert response.status_code == 200, response.text
    path = tmp_path / "ohif.nrrd"  # the image is NIfTI, so is the mask: name it by its content
    path = path.with_name("ohif.nii.gz") if response.content[:2] == b"\x1f\x8b" else path
    path.write_bytes(response.content)
    ohif_mask = read_volume(path).array
    assert np.argwhere(ohif_mask == LIVER).tolist() == [ohif_click]
    assert not np.any(ohif_mask == BACKGROUND)
    assert not np.array_equal(ohif_mask, mask), "different clicks, different result"

    # Deepgrow style: foreground/background lists go to params["label"].
    fg, bg = [5, 6, 7], [50, 40, 20]
    response = _infer(
        ready.server, "deepedit", "ct", {"foreground": [fg], "background": [bg], "label": "spleen"}
    )
    _, _, grow = _multipart_result(response, tmp_path)
    assert np.argwhere(grow.array == SPLEEN).tolist() == [fg]
    assert np.argwhere(grow.array == BACKGROUND).tolist() == [bg]

    # Moving a click moves the result.
    moved = {"foreground": [[6, 6, 7]], "background": [], "label": "spleen"}
    _, _, moved_mask = _multipart_result(_infer(ready.server, "deepedit", "ct", moved), tmp_path)
    assert np.argwhere(moved_mask.array == SPLEEN).tolist() == [[6, 6, 7]]
    assert moved_mask.array[tuple(fg)] == LESION

    # No clicks at all: automatic mode.
    _, _, auto = _multipart_result(_infer(ready.server, "deepedit", "ct", {}), tmp_path)
    assert np.all(auto.array == LESION)

    # Keys that name no label are ignored (as in MONAI Label), not an error.
    _, _, ignored = _multipart_result(
        _infer(ready.server, "deepedit", "ct", {"pancreas": [[1, 1, 1]], "liver": [liver_click]}), tmp_path
    )
    assert np.argwhere(ignored.array == LIVER).tolist() == [liver_click]


# ------------------------------------------------------------------ saving results as labels


def test_save_label_stores_the_result_with_provenance(server: LiveServer, tmp_path: Path) -> None:
    path = tmp_path / "ct.nii.gz"
    make_image(path, shape=SHAPE, affine=AFFINE)
    upload(server, "ct", path)
    _publish(server, "segmentation", write_weights(tmp_path / "seg.pt", "segmentation", winner=SPLEEN))

    response = _infer(server, "segmentation", "ct", {"save_label": True, "client_id": "user-xyz"})
    params, _, mask = _multipart_result(response, tmp_path)
    assert params["label"]["tag"] == "original" and params["label"]["version"] == 1

    history = requests.get(
        f"{server.url}/datastore/label/versions", params={"image": "ct", "tag": "original"}, timeout=10
    ).json()
    assert len(history) == 1
    entry = history[0]
    assert (entry["model"], entry["model_version"], entry["version"]) == ("segmentation", 1, 1)
    assert entry["tag"] == "original"
    stored = requests.get(
        f"{server.url}/datastore/label", params={"label": "ct", "tag": "original"}, timeout=10
    )
    assert stored.status_code == 200
    name = re.search(r'filename="([^"]+)"', stored.headers["content-disposition"])
    assert name is not None
    saved = _volume(stored.content, name.group(1), tmp_path)
    assert np.array_equal(saved.array, mask.array) and np.all(saved.array == SPLEEN)

    # label_tag picks the tag; a second save of a tag makes a new version.
    params, _, _ = _multipart_result(
        _infer(server, "segmentation", "ct", {"save_label": True, "label_tag": "ai_draft"}), tmp_path
    )
    assert (params["label"]["tag"], params["label"]["version"]) == ("ai_draft", 1)
    params, _, _ = _multipart_result(_infer(server, "segmentation", "ct", {"save_label": True}), tmp_path)
    assert (params["label"]["tag"], params["label"]["version"]) == ("original", 2)
    stats = requests.get(f"{server.url}/datastore/", timeout=10).json()
    assert stats["label_tags"] == {"original": 1, "ai_draft": 1} and stats["completed"] == 0

    # Without save_label nothing is stored.
    params, _, _ = _multipart_result(_infer(server, "segmentation", "ct", {}), tmp_path)
    assert "label" not in params
    history = requests.get(
        f"{server.url}/datastore/label/versions", params={"image": "ct", "tag": "original"}, timeout=10
    ).json()
    assert [h["version"] for h in history] == [2, 1]


# ------------------------------------------------------------------ bundles


# MONAI warns that an optional GPU DICOM decoder is missing when LoadImaged is built.
def test_bundle_model_is_listed_and_infers_on_the_image_grid(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    unet = make_bundle(tmp_path / "bundles" / "spleen_ct", network="basicunet", winner=1)
    threshold = make_bundle(
        tmp_path / "bundles" / "spleen_threshold", network="threshold", orientation=True, sliding_window=False
    )
    server = make_server(bundles=[unet, threshold])
    image = make_image(tmp_path / "ct.nii.gz", shape=SHAPE, affine=AFFINE, seed=3)
    upload(server, "ct", tmp_path / "ct.nii.gz")

    models = requests.get(f"{server.url}/info/", timeout=10).json()["models"]
    for name in ("spleen_ct", "spleen_threshold"):
        model = models[name]
        assert model["type"] == "segmentation" and model["dimension"] == 3
        assert model["labels"] == {"background": 0, "spleen": 1}
        assert model["state"] == "ready"
        for key in ("description", "config"):
            assert key in model

    client = MONAILabelClient(server.url, tmpdir=str(tmp_path / "client"), client_id="user-xyz")
    result_file, params = client.infer("spleen_ct", "ct", {"result_extension": ".nrrd"})
    mask = read_volume(Path(result_file))
    assert Path(result_file).suffix == ".nrrd"
    _assert_on_grid(mask)
    assert np.all(mask.array == 1)
    assert params["label_names"] == {"background": 0, "spleen": 1}
    assert params["model_version"] is None

    # Orientationd(RAS) + Invertd: the answer still lies on the (L/P-flipped) image grid, voxel for voxel.
    result_file, _ = client.infer("spleen_threshold", "ct", {})
    mask = read_volume(Path(result_file))
    _assert_on_grid(mask)
    assert np.array_equal(mask.array, (image > 0).astype(np.uint8))
    assert not any((tmp_path / "bundles").rglob("eval")), "the bundle's SaveImaged must not run"


# ------------------------------------------------------------------ hot swap and provenance


def test_new_weights_serve_without_restart_and_rollback_works(server: LiveServer, tmp_path: Path) -> None:
    make_image(tmp_path / "ct.nii.gz", shape=SHAPE, affine=AFFINE)
    upload(server, "ct", tmp_path / "ct.nii.gz")

    def run() -> tuple[int, np.ndarray]:
        body, _, mask = _multipart_result(_infer(server, "segmentation", "ct"), tmp_path)
        return body["model_version"], mask.array

    assert _publish(server, "segmentation", write_weights(tmp_path / "v1.pt", winner=LIVER))["version"] == 1
    version, mask = run()
    assert version == 1 and np.all(mask == LIVER)

    assert _publish(server, "segmentation", write_weights(tmp_path / "v2.pt", winner=SPLEEN))["version"] == 2
    version, mask = run()
    assert version == 2 and np.all(mask == SPLEEN)

    activated = requests.post(f"{server.url}/model/segmentation/versions/1/activate", timeout=10)
    assert activated.status_code == 200 and activated.json()["version"] == 1 and activated.json()["active"]
    version, mask = run()
    assert version == 1 and np.all(mask == LIVER)
    info = requests.get(f"{server.url}/info/", timeout=10).json()["models"]["segmentation"]
    assert (info["state"], info["version"]) == ("ready", 1)


# ------------------------------------------------------------------ concurrency and caching


def test_info_answers_quickly_during_a_long_inference(make_server: ServerFactory, tmp_path: Path) -> None:
    """Contract 8 item 5: the reference server blocks every request while it infers.

    Meanwhile a new version is published: the running request finishes on the weights it
    started with, a request queued behind it runs on the new ones.
    """
    # On the CPU everywhere, so the inference is long enough to measure against (GPU or not).
    server = make_server(inference=InferenceSettings(device="cpu"))
    big = tmp_path / "big.nii"
    make_image(big, shape=(512, 512, 160), affine=DEFAULT_AFFINE)  # 0.8 x 0.8 x 2.5 mm
    upload(server, "big", big)
    make_image(tmp_path / "ct.nii.gz", shape=SHAPE, affine=AFFINE)
    upload(server, "ct", tmp_path / "ct.nii.gz")
    _publish(server, "segmentation", write_weights(tmp_path / "v1.pt", winner=LIVER))
    v2 = write_weights(tmp_path / "v2.pt", winner=SPLEEN)

    outcome: dict[str, Any] = {}

    def long_inference() -> None:
        started = time.perf_counter()
        outcome["long"] = _infer(server, "segmentation", "big", {"sw_batch_size": 1}, output="json")
        outcome["seconds"] = time.perf_counter() - started

    def short_inference() -> None:
        outcome["short"] = _infer(server, "segmentation", "ct")

    long_worker = threading.Thread(target=long_inference)
    short_worker = threading.Thread(target=short_inference)
    long_worker.start()
    latencies: list[float] = []
    published = False
    started = time.perf_counter()
    try:
        while long_worker.is_alive():
            for path in ("/info/", "/datastore/"):
                t0 = time.perf_counter()
                r = requests.get(f"{server.url}{path}", timeout=30)
                latencies.append(time.perf_counter() - t0)
                assert r.status_code == 200
            if not published and time.perf_counter() - started > 1.0:
                assert _publish(server, "segmentation", v2)["version"] == 2
                short_worker.start()
                published = True
            time.sleep(0.02)
    finally:
        long_worker.join(timeout=120)
        if published:
            short_worker.join(timeout=120)
    assert published, "the inference ended before the new version could be published"
    long = outcome["long"]
    assert long.status_code == 200, long.text
    assert long.json()["model_version"] == 1, "a running request keeps the weights it started with"
    body, _, mask = _multipart_result(outcome["short"], tmp_path)
    assert body["model_version"] == 2 and np.all(mask.array == SPLEEN)

    p95 = statistics.quantiles(latencies, n=20)[-1]
    logger.info(
        "long inference %.2f s; %d polls; p95 %.1f ms", outcome["seconds"], len(latencies), p95 * 1000
    )
    assert outcome["seconds"] > 1.5, "the inference must be long enough for the polls to mean something"
    assert len(latencies) >= 20
    assert p95 < 0.1, f"/info/ and /datastore/ p95 {p95 * 1000:.0f} ms during an inference"


def test_two_concurrent_inferences_both_succeed(ready: Ready, tmp_path: Path) -> None:
    results: dict[str, requests.Response] = {}

    def run(model: str, image: str) -> None:
        results[f"{model}:{image}"] = _infer(ready.server, model, image, {"result_extension": ".nrrd"})

    threads = [
        threading.Thread(target=run, args=("segmentation", "ct")),
        threading.Thread(target=run, args=("deepedit", "ctn")),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    _, _, seg = _multipart_result(results["segmentation:ct"], tmp_path)
    _, _, de = _multipart_result(results["deepedit:ctn"], tmp_path)
    assert np.all(seg.array == LIVER) and np.all(de.array == LESION)


def test_second_request_on_an_image_uses_the_cache(ready: Ready, tmp_path: Path) -> None:
    path = tmp_path / "fresh.nii.gz"
    make_image(path, shape=SHAPE, affine=AFFINE, seed=99)  # content nobody has inferred on yet
    upload(ready.server, "fresh", path)
    first = _infer(ready.server, "segmentation", "fresh", output="json").json()
    second = _infer(ready.server, "segmentation", "fresh", output="json").json()
    assert first["cache"] == {"image": False, "prepared": False}
    assert second["cache"] == {"image": True, "prepared": True}
    assert second["latencies"]["pre"] * 4 < first["latencies"]["pre"], (
        first["latencies"],
        second["latencies"],
    )
    # DeepEdit shares the segmentation model's preprocessing: its first request reuses it.
    third = _infer(ready.server, "deepedit", "fresh", output="json").json()
    assert third["cache"] == {"image": True, "prepared": True}

    # The same id with new content (another grid): nothing stale comes out of the cache.
    other_affine = np.diag([2.0, 2.0, 5.0, 1.0])
    make_image(path, shape=(48, 40, 20), affine=other_affine, seed=100)
    upload(ready.server, "fresh", path)
    response = _infer(ready.server, "segmentation", "fresh", {"result_extension": ".nrrd"})
    params, _, mask = _multipart_result(response, tmp_path)
    assert params["cache"] == {"image": False, "prepared": False}
    _assert_on_grid(mask, (48, 40, 20), other_affine)
    assert np.all(mask.array == LIVER)


# ------------------------------------------------------------------ sessions and uploads


def test_inference_on_a_session_and_on_anupload(ready: Ready, tmp_path: Path) -> None:
    server = ready.server
    with open(ready.files / "ctn.nrrd", "rb") as f:
        created = requests.put(f"{server.url}/session/", files={"files": ("ctn.nrrd", f)}, timeout=30).json()
    sid = created["session_id"]
    before = created["session_info"]["last_access_ts"]
    time.sleep(1.1)
    client = MONAILabelClient(server.url, tmpdir=str(tmp_path), client_id="user-xyz")
    result_file, params = client.infer("segmentation", "", {}, session_id=sid)
    assert Path(result_file).suffix == ".nrrd", "a session's mask follows its image's format"
    mask = read_volume(Path(result_file))
    _assert_on_grid(mask)
    assert np.all(mask.array == LIVER)
    after = requests.get(f"{server.url}/session/{sid}", timeout=10).json()
    assert after["last_access_ts"] > before, "inference through a session refreshes it"

    # A file upload instead of an id; save_label has no datastore image to save onto.
    result_file, params = client.infer(
        "deepedit", "", {"liver": [[3, 4, 5]], "save_label": True}, file=str(ready.files / "ct.nii.gz")
    )
    assert Path(result_file).name.endswith(".nii.gz")
    mask = read_volume(Path(result_file))
    _assert_on_grid(mask)
    assert np.argwhere(mask.array == LIVER).tolist() == [[3, 4, 5]]
    assert "label" not in params
    stats = requests.get(f"{server.url}/datastore/", timeout=10).json()
    assert stats["label_tags"] == {}


# ------------------------------------------------------------------ errors


def test_errors_are_json_with_the_right_status(ready: Ready, tmp_path: Path) -> None:
    s = ready.server
    _assert_error(_infer(s, "no_such_model", "ct"), 404, "no_such_model")
    _assert_error(_infer(s, "segmentation", "no_such_image"), 404, "no_such_image")
    _assert_error(_infer(s, "segmentation", "ct", "{not json"), 422, "params")
    _assert_error(_infer(s, "segmentation", "ct", "[1, 2]"), 422, "object")
    _assert_error(_infer(s, "segmentation", "ct", '"liver"'), 422, "object")
    _assert_error(_infer(s, "segmentation", ""), 400, "image")
    _assert_error(_infer(s, "segmentation", "ct", output="dicom_seg"), 406, "DICOM SEG")
    bogus = _json_error(_infer(s, "segmentation", "ct", output="bogus"), 422)
    assert bogus[0]["loc"] == ["query", "output"]
    unknown = str(uuid.uuid1())
    _assert_error(_infer(s, "segmentation", "", query={"session_id": unknown}), 404, unknown)
    _assert_error(_infer(s, "segmentation", "ct", {"result_extension": ".png"}), 422, "result_extension")
    _assert_error(_infer(s, "segmentation", "ct", {"result_dtype": "complex128"}), 422, "result_dtype")
    _assert_error(_infer(s, "segmentation", "ct", {"result_dtype": "uint8", "sw_batch_size": "two"}), 422)
    _assert_error(_infer(s, "deepedit", "ct", {"liver": [[1000, 0, 0]]}), 422, "outside")
    _assert_error(_infer(s, "deepedit", "ct", {"background": [[-1, 0, 0]]}), 422, "outside")
    _assert_error(_infer(s, "deepedit", "ct", {"foreground": [[0, 0, 32]], "label": "liver"}), 422, "outside")
    _assert_error(_infer(s, "deepedit", "ct", {"foreground": [[1, 2, 3]], "label": "pancreas"}), 422, "label")
    _assert_error(_infer(s, "deepedit", "ct", {"liver": [1, 2, 3]}), 422, "liver")

    # A file that is not an image: 415.
    text = tmp_path / "notes.nii.gz"
    text.write_bytes(b"these are my notes, not an image\n" * 20)
    with open(text, "rb") as f:
        _assert_error(_infer(s, "segmentation", "", files={"file": ("notes.nii.gz", f)}), 415)
    # OHIF's raw .bin label: accepted with the image's voxel count, refused with another.
    raw = tmp_path / "label.bin"
    raw.write_bytes(np.zeros(SHAPE, dtype=np.uint8).tobytes(order="F"))
    with open(raw, "rb") as f:
        assert _infer(s, "segmentation", "ct", files={"label": ("label.bin", f)}).status_code == 200
    raw.write_bytes(b"\x00" * 100)
    with open(raw, "rb") as f:
        _assert_error(_infer(s, "segmentation", "ct", files={"label": ("label.bin", f)}), 422, "bin")
    # A label on another grid: 422.
    small = tmp_path / "small.nrrd"
    write_volume(small, np.zeros((10, 10, 10), dtype=np.uint8), AFFINE)
    with open(small, "rb") as f:
        _assert_error(_infer(s, "segmentation", "ct", files={"label": ("small.nrrd", f)}), 422)


def test_a_json_body_is_ignored_as_in_monai_label(ready: Ready, tmp_path: Path) -> None:
    """Contract 1.5: only the multipart ``params`` field carries params; a JSON body is ignored."""
    response = requests.post(
        f"{ready.server.url}/infer/segmentation",
        params={"image": "ct"},
        json={"result_extension": ".nrrd", "image": "/etc/passwd"},
        timeout=60,
    )
    _, filename, mask = _multipart_result(response, tmp_path)
    assert filename.endswith(".nii.gz") and np.all(mask.array == LIVER)


def test_server_paths_are_never_read_through_infer(ready: Ready, tmp_path: Path) -> None:
    """Contract 8 item 22: neither ``image`` nor ``params.image`` may name a server file."""
    s = ready.server
    outside = tmp_path / "outside.nii.gz"  # a real image that is not in the datastore
    make_image(outside, shape=SHAPE, affine=AFFINE)
    passwd = Path("/etc/passwd")
    secret = passwd.read_text().splitlines()[0] if passwd.is_file() else "root:x:0:0"
    for path in (str(passwd), str(outside), "../../../../etc/passwd", f"file://{outside}"):
        for response in (
            _infer(s, "segmentation", path),
            _infer(s, "segmentation", "ct", {"image": path}),
            _infer(s, "segmentation", "", {"image": path}, output="image"),
        ):
            assert 400 <= response.status_code < 500, (path, response.status_code)
            assert response.headers["content-type"] == "application/json"
            assert secret not in response.text and "root:" not in response.text
            assert "content-disposition" not in response.headers


def test_model_without_weights_is_409_until_published(make_server: ServerFactory, tmp_path: Path) -> None:
    server = make_server()
    make_image(tmp_path / "ct.nii.gz", shape=SHAPE, affine=AFFINE)
    upload(server, "ct", tmp_path / "ct.nii.gz")
    detail = _assert_error(_infer(server, "segmentation", "ct"), 409, "segmentation")
    assert "train" in detail.lower() and "/model/segmentation" in detail
    client = MONAILabelClient(server.url, tmpdir=str(tmp_path), client_id="user-xyz")
    with pytest.raises(Exception, match="409"):
        client.infer("deepedit", "ct", {})
    _publish(server, "segmentation", write_weights(tmp_path / "seg.pt", winner=LIVER))
    _, _, mask = _multipart_result(_infer(server, "segmentation", "ct"), tmp_path)
    assert np.all(mask.array == LIVER)
    _assert_error(_infer(server, "deepedit", "ct"), 409, "train")
