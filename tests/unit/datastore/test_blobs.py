"""Unit tests of labelloop.datastore.blobs: blob files, their atomic writes and scratch files."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

from labelloop.datastore.blobs import BlobStore, sha256_file

# ------------------------------------------------------------------ blobs


def _tmp_files(store: BlobStore) -> list[Path]:
    return sorted(store.tmp.iterdir())


def test_put_copies_atomically_and_reports_sha256(tmp_path: Path):
    store = BlobStore(tmp_path / "data")
    content = os.urandom(3 * 1024 * 1024 + 17)  # several copy chunks, and a partial one
    source = tmp_path / "upload.bin"
    source.write_bytes(content)

    key = store.new_key("labels", "case.nii.gz")
    assert key.startswith("labels/") and key.endswith("/case.nii.gz")
    digest, size = store.put(key, source)

    assert digest == hashlib.sha256(content).hexdigest()
    assert size == len(content)
    target = store.path(key)
    assert target.read_bytes() == content
    assert sha256_file(target) == digest
    assert source.read_bytes() == content  # a copy, not a move
    assert _tmp_files(store) == []  # no .partial left behind


def test_put_replaces_an_existing_blob(tmp_path: Path):
    store = BlobStore(tmp_path / "data")
    key = store.new_key("images", "x.nrrd")
    first, second = tmp_path / "1", tmp_path / "2"
    first.write_bytes(b"first version")
    second.write_bytes(b"second")
    store.put(key, first)
    digest, size = store.put(key, second)
    assert store.path(key).read_bytes() == b"second"
    assert (digest, size) == (hashlib.sha256(b"second").hexdigest(), 6)
    assert _tmp_files(store) == []


def test_put_of_an_empty_file(tmp_path: Path):
    store = BlobStore(tmp_path / "data")
    source = tmp_path / "empty"
    source.write_bytes(b"")
    key = store.new_key("labels", "e.nrrd")
    assert store.put(key, source) == (hashlib.sha256(b"").hexdigest(), 0)
    assert store.path(key).read_bytes() == b""


def test_put_from_a_missing_source_leaves_nothing(tmp_path: Path):
    store = BlobStore(tmp_path / "data")
    key = store.new_key("labels", "x.nii.gz")
    with pytest.raises(FileNotFoundError):
        store.put(key, tmp_path / "does-not-exist")
    assert not store.path(key).exists()
    assert _tmp_files(store) == []


def test_put_from_a_directory_leaves_nothing(tmp_path: Path):
    store = BlobStore(tmp_path / "data")
    key = store.new_key("labels", "x.nii.gz")
    with pytest.raises(IsADirectoryError):
        store.put(key, tmp_path)
    assert not store.path(key).exists()
    assert _tmp_files(store) == []


@pytest.mark.skipif(not Path("/proc/self/mem").exists(), reason="needs Linux /proc")
def test_put_failing_mid_copy_removes_the_partial_file(tmp_path: Path):
    """/proc/self/mem opens fine and then fails to read (EIO): the partial file exists by then."""
    store = BlobStore(tmp_path / "data")
    key = store.new_key("labels", "x.nii.gz")
    with pytest.raises(OSError):
        store.put(key, Path("/proc/self/mem"))
    assert not store.path(key).exists()
    assert _tmp_files(store) == []


def test_put_failing_at_the_rename_removes_the_partial_file(tmp_path: Path):
    """The whole copy is written, then the rename fails (the target is a non-empty directory)."""
    store = BlobStore(tmp_path / "data")
    key = store.new_key("labels", "x.nii.gz")
    blocker = store.path(key)
    blocker.mkdir(parents=True)
    (blocker / "keep").write_bytes(b"x")
    source = tmp_path / "upload"
    source.write_bytes(b"label bytes" * 1000)
    with pytest.raises(OSError):
        store.put(key, source)
    assert _tmp_files(store) == []
    assert (blocker / "keep").read_bytes() == b"x"


def test_scratch_removes_its_file(tmp_path: Path):
    store = BlobStore(tmp_path / "data")
    with store.scratch(".nii.gz") as path:
        assert path.parent == store.tmp
        assert path.name.endswith(".nii.gz")
        assert not path.exists()
        path.write_bytes(b"converted")
    assert not path.exists()

    with pytest.raises(RuntimeError), store.scratch() as failing:
        failing.write_bytes(b"half")
        raise RuntimeError("conversion failed")
    assert not failing.exists()

    with store.scratch() as never_written:
        pass  # a block that never creates its file is fine
    assert not never_written.exists()
    assert _tmp_files(store) == []


def test_new_scratch_paths_are_distinct_and_inside_tmp(tmp_path: Path):
    store = BlobStore(tmp_path / "data")
    paths = {store.new_scratch(".zip") for _ in range(50)}
    assert len(paths) == 50
    assert all(p.parent == store.tmp and p.suffix == ".zip" for p in paths)


def test_clean_scratch_removes_only_old_files(tmp_path: Path):
    store = BlobStore(tmp_path / "data")
    old = store.new_scratch(".partial")
    recent = store.new_scratch(".nii.gz")
    old.write_bytes(b"left by a crash")
    recent.write_bytes(b"in use")
    two_hours_ago = time.time() - 7200
    os.utime(old, (two_hours_ago, two_hours_ago))

    assert store.clean_scratch(older_than_s=3600) == 1
    assert not old.exists()
    assert recent.read_bytes() == b"in use"
    assert store.clean_scratch(older_than_s=3600) == 0
    assert recent.exists()


def test_delete_removes_the_blob_and_its_directory(tmp_path: Path):
    store = BlobStore(tmp_path / "data")
    source = tmp_path / "s"
    source.write_bytes(b"x")
    key = store.new_key("labels", "x.nrrd")
    store.put(key, source)
    folder = store.path(key).parent
    store.delete(key)
    assert not store.path(key).exists()
    assert not folder.exists()
    store.delete(key)  # deleting again is harmless
