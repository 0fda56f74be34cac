"""``/datastore/``: images, labels, versions, info, stats, export (contract sections 2.5, 5, 8, 9)."""

from __future__ import annotations

import hashlib
import io
import json
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from monailabel.client import MONAILabelClient

from labelloop.imaging import read_volume
from labelloop.settings import Settings
from tests.support.servers import APP_DIR, LiveServer, free_port, start_thread_server

Volumes = Callable[..., Path]

LABEL_PARAMS = {"label_info": [{"name": "liver", "idx": 1}], "model": "segmentation"}


# ---------------------------------------------------------------- helpers


def _client(server: LiveServer, tmp_path: Path) -> MONAILabelClient:
    return MONAILabelClient(server.url, tmpdir=str(tmp_path), client_id="user-xyz")


def _upload(
    server: LiveServer,
    path: Path,
    image_id: str | None = None,
    *,
    route: str = "/datastore/image",
    params: dict[str, Any] | None = None,
    filename: str | None = None,
) -> requests.Response:
    query = {"image": image_id} if image_id is not None else {}
    with open(path, "rb") as f:
        return requests.put(
            f"{server.url}{route}",
            params=query,
            files={"file": (filename or path.name, f)},
            data={"params": json.dumps(params or {})},
            timeout=30,
        )


def _save(
    server: LiveServer,
    image_id: str,
    path: Path,
    tag: str | None = None,
    *,
    params: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> requests.Response:
    query = {"image": image_id, **({"tag": tag} if tag is not None else {})}
    with open(path, "rb") as f:
        return requests.put(
            f"{server.url}/datastore/label",
            params=query,
            files={"label": (path.name, f)},
            data={"params": json.dumps(params or {})},
            headers=headers,
            timeout=30,
        )


def _ok(response: requests.Response) -> Any:
    assert response.status_code == 200, response.text
    return response.json()


def _get(server: LiveServer, route: str, **params: Any) -> requests.Response:
    return requests.get(f"{server.url}{route}", params=params, timeout=30)


def _stats(server: LiveServer) -> Any:
    return _ok(_get(server, "/datastore/"))


def _model(server: LiveServer) -> Any:
    return _ok(_get(server, "/datastore/", output="all"))


def _versions(server: LiveServer, image_id: str, tag: str = "final") -> Any:
    return _ok(_get(server, "/datastore/label/versions", image=image_id, tag=tag))


def _label_bytes(server: LiveServer, image_id: str, tag: str = "final", **extra: Any) -> bytes:
    response = _get(server, "/datastore/label", label=image_id, tag=tag, **extra)
    assert response.status_code == 200, response.text
    return response.content


def _assert_error(response: requests.Response, status: int, server: LiveServer, *words: str) -> None:
    """A JSON ``{"detail": ...}`` error that names the problem and hides the server's data dir."""
    assert response.status_code == status, f"{response.status_code}: {response.text}"
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    assert list(body) == ["detail"] and body["detail"], body
    for path in {str(server.data_dir), str(server.data_dir.resolve())}:
        assert path not in response.text
    detail = json.dumps(body["detail"]).lower()
    for word in words:
        assert word.lower() in detail, body


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------- images


def test_client_upload_uses_the_query_id_and_counts_in_stats(
    server: LiveServer, volumes: Volumes, tmp_path: Path
) -> None:
    image = volumes("whatever.nii.gz")
    assert _client(server, tmp_path).upload_image(str(image), "spleen_3") == {"image": "spleen_3"}
    assert _stats(server) == {"total": 1, "completed": 0, "label_tags": {}}
    assert list(_model(server)["objects"]) == ["spleen_3"]


@pytest.mark.parametrize(
    ("filename", "image_id"),
    [("case.001.nii.gz", "case"), ("ct_7.nrrd", "ct_7"), ("plain.nii", "plain"), ("noext", "noext")],
)
def test_upload_without_id_takes_the_filename_without_its_suffix_chain(
    sqlite_server: LiveServer, volumes: Volumes, filename: str, image_id: str
) -> None:
    image = volumes("x.nii.gz")
    assert _ok(_upload(sqlite_server, image, filename=filename)) == {"image": image_id}
    assert list(_model(sqlite_server)["objects"]) == [image_id]


@pytest.mark.parametrize("ext", [".nii.gz", ".nrrd"])
def test_get_image_returns_the_same_bytes_named_with_the_real_extension(
    sqlite_server: LiveServer, volumes: Volumes, ext: str
) -> None:
    image = volumes(f"upload{ext}")
    _ok(_upload(sqlite_server, image, "ct1", route="/datastore/"))
    response = _get(sqlite_server, "/datastore/image", image="ct1")
    assert response.status_code == 200
    assert response.content == image.read_bytes()
    assert response.headers["content-disposition"] == f'attachment; filename="ct1{ext}"'
    assert _model(sqlite_server)["objects"]["ct1"]["image"]["ext"] == ext


def test_image_info_has_ts_name_path_client_id_and_upload_params(
    server: LiveServer, volumes: Volumes, tmp_path: Path
) -> None:
    image = volumes("img.nii.gz")
    before = int(time.time())
    _client(server, tmp_path).upload_image(str(image), "ct1", {"PatientID": "p-7", "note": "arterial"})
    info = _ok(_get(server, "/datastore/image/info", image="ct1"))
    assert info["name"] == "ct1.nii.gz"
    assert before - 1 <= info["ts"] <= time.time() + 1
    assert info["client_id"] == "user-xyz"
    assert info["PatientID"] == "p-7" and info["note"] == "arterial"
    assert Path(info["path"]).read_bytes() == image.read_bytes()
    assert info["checksum"] == f"SHA256:{_sha256(image)}"
    assert info["user"] == "admin"


def test_put_image_info_merges_and_answers_null(server: LiveServer, volumes: Volumes) -> None:
    _ok(_upload(server, volumes("img.nii.gz"), "ct1", params={"PatientID": "p-7"}))
    url = f"{server.url}/datastore/image/info"
    for info in ({"a": 1}, {"b": {"c": 2}}):
        response = requests.put(url, params={"image": "ct1"}, data={"info": json.dumps(info)}, timeout=30)
        assert response.status_code == 200 and response.json() is None
    info = _ok(_get(server, "/datastore/image/info", image="ct1"))
    assert (info["a"], info["b"], info["PatientID"]) == (1, {"c": 2}, "p-7")
    stored = _model(server)["objects"]["ct1"]["image"]["info"]
    assert (stored["a"], stored["b"], stored["PatientID"]) == (1, {"c": 2}, "p-7")


def test_head_image_answers_existence_and_checks_the_sha256(server: LiveServer, volumes: Volumes) -> None:
    image = volumes("img.nii.gz")
    _ok(_upload(server, image, "ct1"))
    url = f"{server.url}/datastore/image"

    def head(**params: str) -> int:
        return requests.head(url, params=params, timeout=30).status_code

    digest = _sha256(image)
    assert head(image="ct1") == 200
    assert head(image="nope") == 404
    assert head(image="ct1", check_sum=f"SHA256:{digest}") == 200  # MONAI Label bug 6: always 404
    assert head(image="ct1", check_sum=digest) == 200
    assert head(image="ct1", check_sum=f"SHA256:{'0' * 64}") == 404
    assert head(image="nope", check_sum=f"SHA256:{digest}") == 404


def test_reuploading_identical_content_keeps_the_labels(server: LiveServer, volumes: Volumes) -> None:
    image = volumes("img.nii.gz")
    label = volumes("lab.nrrd", kind="label")
    _ok(_upload(server, image, "ct1"))
    _ok(_save(server, "ct1", label))
    assert _ok(_upload(server, image, "ct1")) == {"image": "ct1"}
    assert _stats(server) == {"total": 1, "completed": 1, "label_tags": {"final": 1}}
    assert _label_bytes(server, "ct1") == label.read_bytes()


def test_new_content_for_a_labelled_image_is_409_and_changes_nothing(
    server: LiveServer, volumes: Volumes
) -> None:
    image = volumes("img.nii.gz", seed=1)
    _ok(_upload(server, image, "ct1"))
    _ok(_save(server, "ct1", volumes("lab.nrrd", kind="label")))
    stats, model, files = _stats(server), _model(server), server.files()
    _assert_error(_upload(server, volumes("other.nii.gz", seed=2), "ct1"), 409, server, "ct1", "label")
    assert (_stats(server), _model(server), server.files()) == (stats, model, files)
    assert _get(server, "/datastore/image", image="ct1").content == image.read_bytes()


def test_new_content_for_an_unlabelled_image_replaces_it(server: LiveServer, volumes: Volumes) -> None:
    _ok(_upload(server, volumes("img.nii.gz", seed=1), "ct1"))
    replacement = volumes("other.nrrd", seed=2)
    assert _ok(_upload(server, replacement, "ct1")) == {"image": "ct1"}
    response = _get(server, "/datastore/image", image="ct1")
    assert response.content == replacement.read_bytes()
    assert response.headers["content-disposition"] == 'attachment; filename="ct1.nrrd"'
    assert _stats(server)["total"] == 1


# ---------------------------------------------------------------- labels, stats, output modes


def test_save_label_defaults_to_final_and_keeps_other_tags_apart(
    server: LiveServer, volumes: Volumes, tmp_path: Path
) -> None:
    client = _client(server, tmp_path)
    client.upload_image(str(volumes("img.nii.gz")), "ct1")
    final = volumes("final.nrrd", kind="label", seed=1)
    original = volumes("original.nrrd", kind="label", seed=2)
    assert client.save_label("ct1", str(final))["label"] == "ct1"
    assert _stats(server) == {"total": 1, "completed": 1, "label_tags": {"final": 1}}
    client.save_label("ct1", str(original), tag="original")
    assert _stats(server) == {"total": 1, "completed": 1, "label_tags": {"final": 1, "original": 1}}
    assert _ok(_save(server, "ct1", final, ""))["tag"] == "final"  # an empty tag means final
    assert [h["version"] for h in _versions(server, "ct1", "final")] == [2, 1]
    assert _label_bytes(server, "ct1", "final") == final.read_bytes()
    assert _label_bytes(server, "ct1", "original") == original.read_bytes()


def test_stats_count_images_completed_and_label_tags(server: LiveServer, volumes: Volumes) -> None:
    image, label = volumes("img.nii.gz"), volumes("lab.nrrd", kind="label")
    for image_id in ("a", "b", "c"):
        _ok(_upload(server, image, image_id))
    _ok(_save(server, "a", label))
    _ok(_save(server, "a", label, "original"))
    _ok(_save(server, "b", label, "original"))
    _ok(_save(server, "b", label, "alice"))
    assert _stats(server) == {
        "total": 3,
        "completed": 1,
        "label_tags": {"final": 1, "original": 2, "alice": 1},
    }


def test_output_all_has_the_datastore_model_shape(
    server: LiveServer, volumes: Volumes, tmp_path: Path
) -> None:
    client = _client(server, tmp_path)
    client.upload_image(str(volumes("img.nii.gz")), "ct1", {"PatientID": "p-7"})
    client.save_label("ct1", str(volumes("lab.nrrd", kind="label")), params=dict(LABEL_PARAMS))
    model = client.datastore()
    assert {"name", "description", "images_dir", "labels_dir", "objects"} <= set(model)
    entry = model["objects"]["ct1"]
    assert entry["image"]["ext"] == ".nii.gz"
    image_info = entry["image"]["info"]
    assert (image_info["name"], image_info["PatientID"], image_info["client_id"]) == (
        "ct1.nii.gz",
        "p-7",
        "user-xyz",
    )
    assert isinstance(image_info["ts"], int)
    assert list(entry["labels"]) == ["final"]
    final = entry["labels"]["final"]
    assert final["ext"] == ".nrrd"
    assert final["info"]["name"] == "ct1.nrrd" and isinstance(final["info"]["ts"], int)
    assert final["info"]["label_info"] == LABEL_PARAMS["label_info"]
    assert final["info"]["model"] == "segmentation"
    assert final["info"]["client_id"] == "user-xyz"


def test_output_train_lists_image_and_final_label_paths_only(server: LiveServer, volumes: Volumes) -> None:
    image = volumes("img.nii.gz")
    final, original = volumes("final.nrrd", kind="label", seed=1), volumes("o.nrrd", kind="label", seed=2)
    for image_id in ("a", "b"):
        _ok(_upload(server, image, image_id))
    _ok(_save(server, "a", final))
    _ok(_save(server, "b", original, "original"))
    train = _ok(_get(server, "/datastore/", output="train"))
    assert len(train) == 1 and set(train[0]) == {"image", "label"}
    assert Path(train[0]["image"]).read_bytes() == image.read_bytes()
    assert Path(train[0]["label"]).read_bytes() == final.read_bytes()


def test_unknown_output_mode_is_422(sqlite_server: LiveServer) -> None:
    _assert_error(_get(sqlite_server, "/datastore/", output="bogus"), 422, sqlite_server, "output")


# ---------------------------------------------------------------- label versions and If-Match


def test_every_save_is_a_new_version_listed_newest_first_with_provenance(
    server: LiveServer, volumes: Volumes
) -> None:
    _ok(_upload(server, volumes("img.nii.gz"), "ct1"))
    labels = [volumes(f"lab{i}.nrrd", kind="label", seed=i) for i in range(3)]
    for i, label in enumerate(labels):
        body = _ok(_save(server, "ct1", label, params={"model": f"m{i}", "client_id": f"c{i}"}))
        assert body["version"] == i + 1
    history = _versions(server, "ct1")
    assert [h["version"] for h in history] == [3, 2, 1]
    assert [h["parent_version"] for h in history] == [2, 1, None]
    assert [h["model"] for h in history] == ["m2", "m1", "m0"]
    assert [h["client_id"] for h in history] == ["c2", "c1", "c0"]
    assert [h["sha256"] for h in history] == [_sha256(p) for p in reversed(labels)]
    assert all(h["author"] == "admin" for h in history)
    assert history[0]["ts"] >= history[1]["ts"] >= history[2]["ts"]


def test_get_label_serves_the_newest_version_with_an_etag_and_old_ones_by_number(
    server: LiveServer, volumes: Volumes
) -> None:
    _ok(_upload(server, volumes("img.nii.gz"), "ct1"))
    first, second = volumes("v1.nrrd", kind="label", seed=1), volumes("v2.nrrd", kind="label", seed=2)
    _ok(_save(server, "ct1", first))
    saved = _save(server, "ct1", second)
    _ok(saved)
    response = _get(server, "/datastore/label", label="ct1", tag="final")
    assert response.content == second.read_bytes()
    assert response.headers["etag"] == saved.headers["etag"] == saved.json()["etag"]
    assert response.headers["content-disposition"] == 'attachment; filename="ct1.nrrd"'
    assert _label_bytes(server, "ct1", version=1) == first.read_bytes()
    assert _label_bytes(server, "ct1", version=2) == second.read_bytes()


def test_if_match_with_the_current_etag_saves_and_a_stale_one_is_409(
    server: LiveServer, volumes: Volumes
) -> None:
    _ok(_upload(server, volumes("img.nii.gz"), "ct1"))
    v1, v2, v3 = (volumes(f"v{i}.nrrd", kind="label", seed=i) for i in (1, 2, 3))
    etag1 = _save(server, "ct1", v1).headers["etag"]
    second = _save(server, "ct1", v2, headers={"If-Match": etag1})
    assert second.status_code == 200, second.text
    etag2 = second.headers["etag"]
    assert etag2 != etag1
    # Another annotator still holds etag1: refused, and the label stays as it is.
    files = server.files()
    _assert_error(_save(server, "ct1", v3, headers={"If-Match": etag1}), 409, server)
    assert server.files() == files
    assert _label_bytes(server, "ct1") == v2.read_bytes()
    assert [h["version"] for h in _versions(server, "ct1")] == [2, 1]
    assert _get(server, "/datastore/label", label="ct1", tag="final").headers["etag"] == etag2


def test_if_match_star_on_a_missing_label_is_409(server: LiveServer, volumes: Volumes) -> None:
    _ok(_upload(server, volumes("img.nii.gz"), "ct1"))
    files = server.files()
    response = _save(server, "ct1", volumes("lab.nrrd", kind="label"), headers={"If-Match": "*"})
    _assert_error(response, 409, server)
    assert _versions(server, "ct1") == []
    assert _stats(server)["label_tags"] == {}
    assert server.files() == files


def test_if_none_match_star_saves_the_first_version_only(server: LiveServer, volumes: Volumes) -> None:
    # Two annotators open an unlabelled image; each saves "only if nobody has yet" (the annotator
    # page does): the first wins, the second is refused and nothing of theirs is stored.
    _ok(_upload(server, volumes("img.nii.gz"), "ct1"))
    first, second = volumes("a.nrrd", kind="label", seed=1), volumes("b.nrrd", kind="label", seed=2)
    saved = _save(server, "ct1", first, headers={"If-None-Match": "*"})
    assert saved.status_code == 200, saved.text
    assert saved.json()["version"] == 1
    files = server.files()
    _assert_error(_save(server, "ct1", second, headers={"If-None-Match": "*"}), 409, server, "version 1")
    assert server.files() == files
    assert _label_bytes(server, "ct1") == first.read_bytes()
    assert [h["version"] for h in _versions(server, "ct1")] == [1]
    # Only "*" means something on a save; an entity tag there is refused, not ignored.
    refused = _save(server, "ct1", second, headers={"If-None-Match": saved.headers["etag"]})
    assert refused.status_code == 422 and "If-None-Match" in refused.json()["detail"]
    assert [h["version"] for h in _versions(server, "ct1")] == [1]


# ---------------------------------------------------------------- label info, HEAD


def test_label_info_get_and_put_merge_into_output_all(server: LiveServer, volumes: Volumes) -> None:
    _ok(_upload(server, volumes("img.nii.gz"), "ct1"))
    _ok(_save(server, "ct1", volumes("lab.nrrd", kind="label"), params=dict(LABEL_PARAMS)))
    info = _ok(_get(server, "/datastore/label/info", label="ct1", tag="final"))
    assert info["label_info"] == LABEL_PARAMS["label_info"] and info["name"] == "ct1.nrrd"
    meta = {"segmentationMeta": {"status": "approved", "approvedBy": "bob"}}
    response = requests.put(
        f"{server.url}/datastore/label/info",
        params={"label": "ct1", "tag": "final"},
        data={"info": json.dumps(meta)},
        timeout=30,
    )
    assert response.status_code == 200 and response.json() is None
    info = _ok(_get(server, "/datastore/label/info", label="ct1", tag="final"))
    assert info["segmentationMeta"] == meta["segmentationMeta"]
    assert info["label_info"] == LABEL_PARAMS["label_info"]
    assert info["user"] == "admin"
    stored = _model(server)["objects"]["ct1"]["labels"]["final"]["info"]
    assert stored["segmentationMeta"] == meta["segmentationMeta"] and stored["model"] == "segmentation"


@pytest.mark.parametrize("encoding", ["multipart", "urlencoded"])
def test_updatelabelinfo_takes_params_multipart_or_urlencoded(
    sqlite_server: LiveServer, volumes: Volumes, encoding: str
) -> None:
    _ok(_upload(sqlite_server, volumes("img.nii.gz"), "ct1"))
    _ok(_save(sqlite_server, "ct1", volumes("lab.nrrd", kind="label"), params=dict(LABEL_PARAMS)))
    params = json.dumps({"segmentationMeta": {"status": "flagged", "comment": "check rim"}})
    form: dict[str, Any] = (
        {"files": {"params": (None, params)}} if encoding == "multipart" else {"data": {"params": params}}
    )
    response = requests.put(
        f"{sqlite_server.url}/datastore/updatelabelinfo",
        params={"label": "ct1", "tag": "final"},
        timeout=30,
        **form,
    )
    assert response.status_code == 200 and response.json() is None, response.text
    stored = _model(sqlite_server)["objects"]["ct1"]["labels"]["final"]["info"]
    assert stored["segmentationMeta"] == {"status": "flagged", "comment": "check rim"}
    assert stored["label_info"] == LABEL_PARAMS["label_info"]


def test_head_label_takes_the_image_parameter(server: LiveServer, volumes: Volumes) -> None:
    _ok(_upload(server, volumes("img.nii.gz"), "ct1"))
    _ok(_save(server, "ct1", volumes("lab.nrrd", kind="label")))
    url = f"{server.url}/datastore/label"
    assert requests.head(url, params={"image": "ct1", "tag": "final"}, timeout=30).status_code == 200
    assert requests.head(url, params={"image": "ct1", "tag": "original"}, timeout=30).status_code == 404
    assert requests.head(url, params={"image": "nope", "tag": "final"}, timeout=30).status_code == 404


# ---------------------------------------------------------------- deletes


def test_delete_label_drops_it_from_stats_but_keeps_its_history(server: LiveServer, volumes: Volumes) -> None:
    _ok(_upload(server, volumes("img.nii.gz"), "ct1"))
    _ok(_save(server, "ct1", volumes("lab.nrrd", kind="label")))
    response = requests.delete(
        f"{server.url}/datastore/label", params={"id": "ct1", "tag": "final"}, timeout=30
    )
    assert _ok(response) == {}
    assert _stats(server) == {"total": 1, "completed": 0, "label_tags": {}}
    _assert_error(_get(server, "/datastore/label", label="ct1", tag="final"), 404, server)
    assert _model(server)["objects"]["ct1"]["labels"] == {}
    assert [h["version"] for h in _versions(server, "ct1")] == [1]


@pytest.mark.parametrize("route", ["/datastore/image", "/datastore/"])
def test_delete_image_removes_it_from_stats_and_output_all(
    server: LiveServer, volumes: Volumes, route: str
) -> None:
    image = volumes("img.nii.gz")
    for image_id in ("ct1", "ct2"):
        _ok(_upload(server, image, image_id))
    _ok(_save(server, "ct1", volumes("lab.nrrd", kind="label")))
    assert _ok(requests.delete(f"{server.url}{route}", params={"id": "ct1"}, timeout=30)) == {}
    assert _stats(server) == {"total": 1, "completed": 0, "label_tags": {}}
    assert list(_model(server)["objects"]) == ["ct2"]
    _assert_error(_get(server, "/datastore/image", image="ct1"), 404, server)
    # The curators' history outlives the image.
    history = _ok(_get(server, "/datastore/label/versions", image="ct1"))
    assert [h["version"] for h in history] == [1]


# ---------------------------------------------------------------- dataset export


def test_dataset_without_final_labels_is_404_with_a_detail(server: LiveServer, volumes: Volumes) -> None:
    _ok(_upload(server, volumes("img.nii.gz"), "ct1"))
    _ok(_save(server, "ct1", volumes("lab.nrrd", kind="label"), "original"))
    files = server.files()
    _assert_error(_get(server, "/datastore/dataset"), 404, server, "final")
    assert server.files() == files  # no temp zip left behind (MONAI Label bug 20)


def _open_zip(response: requests.Response) -> zipfile.ZipFile:
    assert response.status_code == 200, response.text
    return zipfile.ZipFile(io.BytesIO(response.content))


def test_dataset_zip_has_the_msd_layout_with_current_final_labels(
    server: LiveServer, volumes: Volumes
) -> None:
    image = volumes("img.nii.gz")
    nrrd_image = volumes("img2.nrrd", seed=3)
    old, new = volumes("old.nrrd", kind="label", seed=1), volumes("new.nrrd", kind="label", seed=2)
    _ok(_upload(server, image, "ct1"))
    _ok(_upload(server, nrrd_image, "ct2"))
    _ok(_upload(server, image, "ct3"))
    _ok(_save(server, "ct1", old))
    _ok(_save(server, "ct1", new))
    _ok(_save(server, "ct2", old))
    _ok(_save(server, "ct3", new, "original"))  # no final label: not exported
    files = server.files()
    archive = _open_zip(_get(server, "/datastore/dataset"))
    names = set(archive.namelist())
    # One format throughout (NRRD converted on the same grid; tests/api/test_export.py has the details).
    assert names == {
        "imagesTr/ct1.nii.gz",
        "imagesTr/ct2.nii.gz",
        "labelsTr/ct1.nii.gz",
        "labelsTr/ct2.nii.gz",
        "dataset.json",
        "metadata.json",
    }
    assert archive.read("imagesTr/ct1.nii.gz") == image.read_bytes()
    for entry, source in (
        ("imagesTr/ct2.nii.gz", nrrd_image),
        ("labelsTr/ct1.nii.gz", new),
        ("labelsTr/ct2.nii.gz", old),
    ):
        exported = image.parent / f"exported-{entry.replace('/', '-')}"
        exported.write_bytes(archive.read(entry))
        got, want = read_volume(exported), read_volume(source)
        assert np.array_equal(got.array, want.array), entry
        assert np.allclose(got.geometry.affine, want.geometry.affine, atol=1e-5), entry
    dataset = json.loads(archive.read("dataset.json"))
    info_labels = _ok(_get(server, "/info/"))["labels"]
    assert (dataset["labels"]["0"], dataset["labels"]["1"]) == ("background", "liver")
    assert sorted(dataset["labels"].values()) == sorted(info_labels)
    assert dataset["numTraining"] == len(dataset["training"]) == 2
    for case in dataset["training"]:
        assert case["image"].removeprefix("./") in names
        assert case["label"].removeprefix("./") in names
    metadata = json.loads(archive.read("metadata.json"))
    assert set(metadata["objects"]) == {"ct1", "ct2", "ct3"}
    assert server.files() == files  # the temp zip is removed once sent


def test_dataset_respects_limit_cases(sqlite_server: LiveServer, volumes: Volumes) -> None:
    image, label = volumes("img.nii.gz"), volumes("lab.nrrd", kind="label")
    for image_id in ("a", "b", "c"):
        _ok(_upload(sqlite_server, image, image_id))
        _ok(_save(sqlite_server, image_id, label))
    archive = _open_zip(_get(sqlite_server, "/datastore/dataset", limit_cases=2))
    dataset = json.loads(archive.read("dataset.json"))
    assert dataset["numTraining"] == 2
    assert len([n for n in archive.namelist() if n.startswith("imagesTr/")]) == 2
    assert len([n for n in archive.namelist() if n.startswith("labelsTr/")]) == 2


# ---------------------------------------------------------------- errors


def _unknown_id_requests(server: LiveServer, label: Path) -> dict[str, Callable[[], requests.Response]]:
    url = server.url

    def put_label() -> requests.Response:
        return _save(server, "nope", label)

    return {
        "GET image": lambda: requests.get(f"{url}/datastore/image", params={"image": "nope"}, timeout=30),
        "GET image info": lambda: requests.get(
            f"{url}/datastore/image/info", params={"image": "nope"}, timeout=30
        ),
        "PUT image info": lambda: requests.put(
            f"{url}/datastore/image/info", params={"image": "nope"}, data={"info": "{}"}, timeout=30
        ),
        "DELETE image": lambda: requests.delete(f"{url}/datastore/image", params={"id": "nope"}, timeout=30),
        "DELETE alias": lambda: requests.delete(f"{url}/datastore/", params={"id": "nope"}, timeout=30),
        "PUT label": put_label,
        "GET label": lambda: requests.get(
            f"{url}/datastore/label", params={"label": "nope", "tag": "final"}, timeout=30
        ),
        "GET label version": lambda: requests.get(
            f"{url}/datastore/label", params={"label": "ct1", "tag": "final", "version": "9"}, timeout=30
        ),
        "GET label of unknown tag": lambda: requests.get(
            f"{url}/datastore/label", params={"label": "ct1", "tag": "alice"}, timeout=30
        ),
        "GET label info": lambda: requests.get(
            f"{url}/datastore/label/info", params={"label": "nope", "tag": "final"}, timeout=30
        ),
        "PUT label info": lambda: requests.put(
            f"{url}/datastore/label/info",
            params={"label": "nope", "tag": "final"},
            data={"info": "{}"},
            timeout=30,
        ),
        "PUT updatelabelinfo": lambda: requests.put(
            f"{url}/datastore/updatelabelinfo",
            params={"label": "nope", "tag": "final"},
            data={"params": "{}"},
            timeout=30,
        ),
        "GET versions": lambda: requests.get(
            f"{url}/datastore/label/versions", params={"image": "nope"}, timeout=30
        ),
    }


def test_unknown_ids_are_404_with_a_detail_on_every_endpoint(server: LiveServer, volumes: Volumes) -> None:
    label = volumes("lab.nrrd", kind="label")
    _ok(_upload(server, volumes("img.nii.gz"), "ct1"))
    _ok(_save(server, "ct1", label))
    stats, model, files = _stats(server), _model(server), server.files()
    for name, send in _unknown_id_requests(server, label).items():
        response = send()
        assert response.status_code == 404, f"{name}: {response.status_code} {response.text}"
        _assert_error(response, 404, server)
    assert (_stats(server), _model(server), server.files()) == (stats, model, files)


def test_delete_label_of_an_unknown_image_is_404(sqlite_server: LiveServer) -> None:
    response = requests.delete(
        f"{sqlite_server.url}/datastore/label", params={"id": "nope", "tag": "final"}, timeout=30
    )
    _assert_error(response, 404, sqlite_server, "nope")


@pytest.mark.parametrize("bad", ["{bad", "[1, 2]", '"text"'])
def test_bad_json_in_params_or_info_is_422_naming_the_field(
    sqlite_server: LiveServer, volumes: Volumes, bad: str
) -> None:
    image, label = volumes("img.nii.gz"), volumes("lab.nrrd", kind="label")
    _ok(_upload(sqlite_server, image, "ct1"))
    _ok(_save(sqlite_server, "ct1", label))
    stats, model, files = _stats(sqlite_server), _model(sqlite_server), sqlite_server.files()
    url = sqlite_server.url
    with open(image, "rb") as f:
        response = requests.put(
            f"{url}/datastore/image",
            params={"image": "ct2"},
            files={"file": f},
            data={"params": bad},
            timeout=30,
        )
    _assert_error(response, 422, sqlite_server, "params")
    with open(label, "rb") as f:
        response = requests.put(
            f"{url}/datastore/label",
            params={"image": "ct1"},
            files={"label": f},
            data={"params": bad},
            timeout=30,
        )
    _assert_error(response, 422, sqlite_server, "params")
    for route, query, field in [
        ("/datastore/image/info", {"image": "ct1"}, "info"),
        ("/datastore/label/info", {"label": "ct1", "tag": "final"}, "info"),
        ("/datastore/updatelabelinfo", {"label": "ct1", "tag": "final"}, "params"),
    ]:
        response = requests.put(f"{url}{route}", params=query, data={field: bad}, timeout=30)
        _assert_error(response, 422, sqlite_server, field)
    assert (_stats(sqlite_server), _model(sqlite_server), sqlite_server.files()) == (stats, model, files)


# ---------------------------------------------------------------- restart


def test_a_restart_on_the_same_data_dir_keeps_images_versions_and_info(
    database_url: str | None, tmp_path: Path, volumes: Volumes
) -> None:
    settings = Settings(app=APP_DIR, data_dir=tmp_path / "data", port=free_port(), database_url=database_url)
    image = volumes("img.nii.gz")
    v1, v2 = volumes("v1.nrrd", kind="label", seed=1), volumes("v2.nrrd", kind="label", seed=2)
    first = start_thread_server(settings)
    try:
        _ok(_upload(first, image, "ct1", params={"PatientID": "p-7"}))
        _ok(_save(first, "ct1", v1, params=dict(LABEL_PARAMS)))
        _ok(_save(first, "ct1", v2, params={"model": "m2"}))
        response = requests.put(
            f"{first.url}/datastore/label/info",
            params={"label": "ct1", "tag": "final"},
            data={"info": json.dumps({"segmentationMeta": {"status": "approved"}})},
            timeout=30,
        )
        assert response.status_code == 200, response.text
        before = (_stats(first), _model(first), _versions(first, "ct1"))
    finally:
        first.stop()
    second = start_thread_server(settings.model_copy(update={"port": free_port()}))
    try:
        assert (_stats(second), _model(second), _versions(second, "ct1")) == before
        assert _get(second, "/datastore/image", image="ct1").content == image.read_bytes()
        assert _label_bytes(second, "ct1") == v2.read_bytes()
        assert _label_bytes(second, "ct1", version=1) == v1.read_bytes()
        info = _ok(_get(second, "/datastore/label/info", label="ct1", tag="final"))
        assert info["segmentationMeta"] == {"status": "approved"}
    finally:
        second.stop()


def test_client_id_in_the_query_string_is_recorded(
    sqlite_server: LiveServer, volumes: Callable[..., Path]
) -> None:
    with volumes("q1.nii.gz").open("rb") as f:
        assert requests.put(f"{sqlite_server.url}/datastore/image?image=q1", files={"file": f}, timeout=30).ok
    with volumes("q1.nrrd", kind="label").open("rb") as f:
        saved = requests.put(
            f"{sqlite_server.url}/datastore/label",
            params={"image": "q1", "tag": "final", "client_id": "carol"},
            files={"label": f},
            timeout=30,
        )
    assert saved.status_code == 200, saved.text
    history = requests.get(
        f"{sqlite_server.url}/datastore/label/versions?image=q1&tag=final", timeout=30
    ).json()
    newest = history[0] if isinstance(history, list) else history["versions"][0]
    assert newest["client_id"] == "carol"
