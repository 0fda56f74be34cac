"""The MONAI Label Python client, driven the way 3D Slicer drives it (contract sections 3 and 9)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from monailabel.client import MONAILabelClient
from monailabel.client.client import MONAILabelClientException

from labelloop.imaging import read_volume
from tests.support.servers import LiveServer

SLICER_PARAMS = {
    "label_info": [{"name": "liver", "idx": 1}],
    "model": "segmentation",
    "client_id": "user-xyz",
}


def test_slicer_round_trip_upload_save_list_download(
    server: LiveServer, volumes: Callable[..., Path], tmp_path: Path
) -> None:
    client = MONAILabelClient(server.url, tmpdir=str(tmp_path), client_id="user-xyz")
    image = volumes("spleen_3.nii.gz")
    label = volumes("segmentation.nrrd", kind="label")

    assert client.upload_image(str(image), "spleen_3", {}) == {"image": "spleen_3"}
    saved = client.save_label("spleen_3", str(label), params=dict(SLICER_PARAMS))
    assert (saved["image"], saved["label"]) == ("spleen_3", "spleen_3")

    entry = client.datastore()["objects"]["spleen_3"]
    assert entry["image"]["info"]["name"] == "spleen_3.nii.gz"
    final = entry["labels"]["final"]["info"]
    assert final["label_info"] == SLICER_PARAMS["label_info"]
    assert (final["model"], final["client_id"]) == ("segmentation", "user-xyz")

    local = Path(client.download_label("spleen_3", "final"))
    assert local.name.endswith(".nrrd") and not local.name.endswith(".nii.gz")
    assert np.array_equal(read_volume(local).array, read_volume(label).array)

    info = client.info()
    assert info["datastore"] == {"total": 1, "completed": 1, "label_tags": {"final": 1}}
    assert "liver" in info["labels"]


def test_client_sees_a_missing_label_as_a_404_failure(sqlite_server: LiveServer, tmp_path: Path) -> None:
    client = MONAILabelClient(sqlite_server.url, tmpdir=str(tmp_path), client_id="user-xyz")
    with pytest.raises(MONAILabelClientException) as raised:
        client.download_label("nope", "final")
    assert raised.value.status_code == 404
