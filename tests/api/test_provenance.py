"""A label saved through the MONAI Label client after an inference records the model it started from
(issue 17, item 12): the client never sends it, the server links the save to that annotator's last
inference on the image, and the version's history says so."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import requests
from monailabel.client import MONAILabelClient

from tests.support.servers import LiveServer
from tests.support.volumes import make_image, make_label
from tests.support.weights import write_weights


def _versions(server: LiveServer, image: str) -> list[dict[str, Any]]:
    r = requests.get(f"{server.url}/datastore/label/versions", params={"image": image}, timeout=30)
    assert r.status_code == 200, r.text
    return list(r.json())


def test_a_save_after_an_inference_is_linked_to_it(server: LiveServer, tmp_path: Path) -> None:
    image, label = tmp_path / "ct.nii.gz", tmp_path / "label.nii.gz"
    make_image(image)
    make_label(label)
    weights = write_weights(tmp_path / "w.pt", "segmentation", winner=1)
    with open(weights, "rb") as f:
        assert requests.put(f"{server.url}/model/segmentation", files={"file": ("w.pt", f)}, timeout=60).ok
    ann = MONAILabelClient(server.url, client_id="ann")
    ann.upload_image(str(image), "case0")
    ann.upload_image(str(image), "case1")

    # Another annotator's inference on another image is no starting point for ann's save.
    MONAILabelClient(server.url, client_id="bob").infer("segmentation", "case0", {})
    ann.infer("segmentation", "case1", {})
    ann.infer("segmentation", "case0", {})
    ann.save_label("case0", str(label))
    latest = _versions(server, "case0")[0]
    assert (latest["model"], latest["model_version"], latest["client_id"]) == ("segmentation", 1, "ann")
    link = latest["info"]["model_link"]
    assert link["source"] == "last_inference" and link["holder"] == "ann" and link["ts"] > 0

    # Saving again with no inference in between: the earlier run started the earlier version only.
    ann.save_label("case0", str(label))
    again = _versions(server, "case0")[0]
    assert again["version"] == latest["version"] + 1
    assert again["model"] is None and "model_link" not in again["info"]

    # bob's inference on case0 was before ann's save of the final label: not linked either.
    MONAILabelClient(server.url, client_id="bob").save_label("case0", str(label))
    assert _versions(server, "case0")[0]["model"] is None

    # What a client says wins over the link.
    ann.infer("segmentation", "case1", {})
    ann.save_label("case1", str(label), params={"model": "deepedit"})
    said = _versions(server, "case1")[0]
    assert said["model"] == "deepedit" and "model_link" not in said["info"]
