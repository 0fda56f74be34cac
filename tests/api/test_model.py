"""``/model/``: weights files, their versions, activation and retirement (contract section 2.9)."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import requests

from tests.conftest import ServerFactory
from tests.support.bundle import make_bundle
from tests.support.servers import LiveServer
from tests.support.volumes import make_image
from tests.support.weights import write_garbage, write_weights

SHAPE = (64, 64, 32)
AFFINE = np.diag([3.0, 3.0, 3.0, 1.0])


def _put(server: LiveServer, model: str, weights: Path) -> requests.Response:
    with open(weights, "rb") as f:
        return requests.put(f"{server.url}/model/{model}", files={"file": (weights.name, f)}, timeout=60)


def _versions(server: LiveServer, model: str) -> list[dict[str, Any]]:
    r = requests.get(f"{server.url}/model/{model}/versions", timeout=10)
    assert r.status_code == 200, r.text
    body: list[dict[str, Any]] = r.json()
    return body


def _detail(response: requests.Response, status: int) -> str:
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"] == "application/json"
    detail = response.json()["detail"]
    assert isinstance(detail, str) and detail
    return detail


def _infer(server: LiveServer, model: str, image: str) -> requests.Response:
    return requests.post(
        f"{server.url}/infer/{model}",
        params={"image": image, "output": "json"},
        data={"params": json.dumps({})},
        timeout=120,
    )


def test_publish_download_info_activate_and_retire(server: LiveServer, tmp_path: Path) -> None:
    url = server.url
    missing = requests.get(f"{url}/model/segmentation", timeout=10)
    assert _detail(missing, 404) == "Model File NOT Found for segmentation"
    _detail(requests.get(f"{url}/model/info/segmentation", timeout=10), 404)
    assert _versions(server, "segmentation") == []

    v1 = write_weights(tmp_path / "v1.pt", winner=1, seed=1)
    v2 = write_weights(tmp_path / "v2.pt", winner=2, seed=2)
    before = time.time()
    first = _put(server, "segmentation", v1)
    assert first.status_code == 200, first.text
    sha1 = hashlib.sha256(v1.read_bytes()).hexdigest()
    assert first.json()["checksum"] == f"SHA256:{sha1}" and first.json()["version"] == 1
    assert isinstance(first.json()["modified_time"], int)
    assert int(before) - 1 <= first.json()["modified_time"] <= time.time() + 1

    download = requests.get(f"{url}/model/segmentation", timeout=10)
    assert download.status_code == 200 and download.content == v1.read_bytes()
    assert 'filename="segmentation.pt"' in download.headers["content-disposition"]
    info = requests.get(f"{url}/model/info/segmentation", timeout=10).json()
    assert info["checksum"] == f"SHA256:{sha1}" and info["version"] == 1
    assert info["modified_time"] == first.json()["modified_time"]

    second = _put(server, "segmentation", v2)
    assert second.status_code == 200 and second.json()["version"] == 2
    sha2 = hashlib.sha256(v2.read_bytes()).hexdigest()
    assert sha2 != sha1
    listed = _versions(server, "segmentation")
    assert [v["version"] for v in listed] == [2, 1], "newest first"
    assert [v["active"] for v in listed] == [True, False]
    assert [v["checksum"] for v in listed] == [f"SHA256:{sha2}", f"SHA256:{sha1}"]
    for entry in listed:
        assert entry["source"] == "upload" and entry["created_by"] == "admin"
        assert entry["metrics"] == {} and entry["size_bytes"] > 0
    assert requests.get(f"{url}/model/segmentation", timeout=10).content == v2.read_bytes()
    assert requests.get(f"{url}/model/info/segmentation", timeout=10).json()["version"] == 2

    # Roll back.
    activated = requests.post(f"{url}/model/segmentation/versions/1/activate", timeout=10)
    assert activated.status_code == 200 and activated.json()["version"] == 1 and activated.json()["active"]
    assert [v["active"] for v in _versions(server, "segmentation")] == [False, True]
    assert requests.get(f"{url}/model/segmentation", timeout=10).content == v1.read_bytes()
    assert requests.get(f"{url}/model/info/segmentation", timeout=10).json()["checksum"] == f"SHA256:{sha1}"
    _detail(requests.post(f"{url}/model/segmentation/versions/99/activate", timeout=10), 404)
    assert [v["active"] for v in _versions(server, "segmentation")] == [False, True], (
        "a failed activate changes nothing"
    )

    # Retire the active version: inference refuses again, downloads are gone.
    make_image(tmp_path / "ct.nii.gz", shape=SHAPE, affine=AFFINE)
    with open(tmp_path / "ct.nii.gz", "rb") as f:
        assert (
            requests.put(
                f"{url}/datastore/image", params={"image": "ct"}, files={"file": ("ct.nii.gz", f)}, timeout=30
            ).status_code
            == 200
        )
    assert _infer(server, "segmentation", "ct").json()["model_version"] == 1
    deleted = requests.delete(f"{url}/model/segmentation", timeout=10)
    assert deleted.status_code == 200 and deleted.json() == {}
    assert "train" in _detail(_infer(server, "segmentation", "ct"), 409).lower()
    _detail(requests.get(f"{url}/model/segmentation", timeout=10), 404)
    _detail(requests.get(f"{url}/model/info/segmentation", timeout=10), 404)
    model = requests.get(f"{url}/info/", timeout=10).json()["models"]["segmentation"]
    assert (model["state"], model["version"]) == ("untrained", None)
    remaining = _versions(server, "segmentation")
    assert 2 in [v["version"] for v in remaining] and not any(v["active"] for v in remaining)

    # Publishing again continues the numbering.
    third = _put(server, "segmentation", v1)
    assert third.status_code == 200 and third.json()["version"] == 3
    assert _infer(server, "segmentation", "ct").json()["model_version"] == 3


def test_retired_version_stays_in_the_history(sqlite_server: LiveServer, tmp_path: Path) -> None:
    assert _put(sqlite_server, "segmentation", write_weights(tmp_path / "v1.pt", seed=1)).status_code == 200
    assert _put(sqlite_server, "segmentation", write_weights(tmp_path / "v2.pt", seed=2)).status_code == 200
    assert requests.delete(f"{sqlite_server.url}/model/segmentation", timeout=10).json() == {}
    listed = _versions(sqlite_server, "segmentation")
    assert [v["version"] for v in listed] == [2, 1]
    assert not any(v["active"] for v in listed)


def test_bad_weights_are_refused_and_leave_no_version(server: LiveServer, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self) -> tuple[Any, ...]:
            return (open, (str(marker), "w"))

    import torch

    torch.save({"model": Exploit()}, str(tmp_path / "exploit.pt"))
    bad = {
        "garbage.pt": write_garbage(tmp_path / "garbage.pt"),
        "wrong_shape.pt": write_weights(tmp_path / "wrong_shape.pt", wrong_shape=True),
        "deepedit.pt": write_weights(tmp_path / "deepedit.pt", "deepedit"),  # 7 input channels, not 1
        "empty.pt": tmp_path / "empty.pt",
        "exploit.pt": tmp_path / "exploit.pt",
    }
    bad["empty.pt"].write_bytes(b"")
    for name, path in bad.items():
        detail = _detail(_put(server, "segmentation", path), 422)
        assert "segmentation" in detail, (name, detail)
        assert _versions(server, "segmentation") == [], name
    assert not marker.exists(), "weights are never unpickled with arbitrary code"
    _detail(requests.get(f"{server.url}/model/segmentation", timeout=10), 404)

    # With a good version in place, a bad upload leaves it active and alone.
    good = write_weights(tmp_path / "good.pt")
    assert _put(server, "segmentation", good).status_code == 200
    _detail(_put(server, "segmentation", bad["wrong_shape.pt"]), 422)
    listed = _versions(server, "segmentation")
    assert [(v["version"], v["active"]) for v in listed] == [(1, True)]
    assert requests.get(f"{server.url}/model/segmentation", timeout=10).content == good.read_bytes()

    # No file at all: request validation.
    missing = requests.put(f"{server.url}/model/segmentation", timeout=10)
    assert missing.status_code == 422 and isinstance(missing.json()["detail"], list)


# MONAI warns that an optional GPU DICOM decoder is missing when a bundle's LoadImaged is built.
def test_models_that_take_no_weights_refuse_them(make_server: ServerFactory, tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "spleen_bundle")
    server = make_server(bundles=[bundle])
    weights = write_weights(tmp_path / "seg.pt")
    models = requests.get(f"{server.url}/info/", timeout=10).json()["models"]
    weightless = [n for n, m in models.items() if m["state"] == "ready" and m["version"] is None]
    assert "spleen_bundle" in weightless
    for name in weightless:  # the bundle, and classical models such as random_walker if present
        assert _detail(_put(server, name, weights), 409)
        assert _detail(requests.delete(f"{server.url}/model/{name}", timeout=10), 409)
        _detail(requests.post(f"{server.url}/model/{name}/versions/1/activate", timeout=10), 409)
        assert _versions(server, name) == []
    # The bundle still serves with its own weights.
    make_image(tmp_path / "ct.nii.gz", shape=SHAPE, affine=AFFINE)
    with open(tmp_path / "ct.nii.gz", "rb") as f:
        requests.put(
            f"{server.url}/datastore/image", params={"image": "ct"}, files={"file": ("ct.nii.gz", f)}
        )
    assert _infer(server, "spleen_bundle", "ct").status_code == 200


def test_unknown_model_is_404_everywhere(sqlite_server: LiveServer, tmp_path: Path) -> None:
    url = sqlite_server.url
    weights = write_weights(tmp_path / "seg.pt")
    responses = [
        requests.get(f"{url}/model/nope", timeout=10),
        requests.get(f"{url}/model/info/nope", timeout=10),
        _put(sqlite_server, "nope", weights),
        requests.delete(f"{url}/model/nope", timeout=10),
        requests.get(f"{url}/model/nope/versions", timeout=10),
        requests.post(f"{url}/model/nope/versions/1/activate", timeout=10),
    ]
    for response in responses:
        assert "nope" in _detail(response, 404)
    assert not any((sqlite_server.data_dir).rglob("nope*")), "nothing stored for an unknown model"


def test_refused_weights_say_what_was_expected(sqlite_server: LiveServer, tmp_path: Path) -> None:
    import torch

    torch.save([1, 2, 3], str(tmp_path / "list.pt"))
    expected = {
        "garbage.pt": (
            write_garbage(tmp_path / "garbage.pt"),
            "not PyTorch weights: expected a state dict of UNet",
        ),
        "list.pt": (tmp_path / "list.pt", "holds a list, not a state dict"),
        "wrong_shape.pt": (
            write_weights(tmp_path / "wrong_shape.pt", wrong_shape=True),
            "of another shape, the first '",
        ),
        "deepedit.pt": (write_weights(tmp_path / "deepedit.pt", "deepedit"), "where the network has"),
    }
    for name, (path, words) in expected.items():
        detail = _detail(_put(sqlite_server, "segmentation", path), 422)
        assert words in detail, (name, detail)
        assert "174812789" not in detail
