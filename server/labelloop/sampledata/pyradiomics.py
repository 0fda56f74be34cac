"""Real image/label pairs from the PyPI sdist of ``pyradiomics==3.0.1``, converted to NIfTI.

The sdist ships five gzipped NRRD pairs under ``pyradiomics-3.0.1/data/``: chest CT ``lung1``
and ``lung2``, brain MR ``brain1`` and ``brain2``, and a breast MR crop ``breast1`` (int16
images, binary labels on the same grid, LPS). The code is BSD-3-Clause; the provenance of the
images is not stated. The archive is fetched once with ``pip download``, checked against its
sha256 and cached; the data is never committed.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from labelloop.errors import LabelloopError
from labelloop.imaging import Volume, check_same_grid, read_volume, write_volume
from labelloop.sampledata._errors import SampleDataError

__all__ = [
    "REAL_CASES",
    "SDIST_NAME",
    "SDIST_SHA256",
    "cached_sdist",
    "convert_sdist",
    "default_cache_dir",
    "fetch_real",
    "pip_download",
    "sha256_of",
]

logger = logging.getLogger(__name__)

Progress = Callable[[int, int, str], None]

PYRADIOMICS_VERSION = "3.0.1"
SDIST_NAME = f"pyradiomics-{PYRADIOMICS_VERSION}.tar.gz"
SDIST_SHA256 = "47c57f441d6cb7973fa3b2ea48d3948df78e3348e1c69e1e2ff19001601fc2f5"
#: The cases in the sdist, smallest last; each is ``<case>_image.nrrd`` + ``<case>_label.nrrd``.
REAL_CASES: tuple[str, ...] = ("lung1", "lung2", "brain1", "brain2", "breast1")
#: The value the labels get: "lesion" in the radiology app's labels.
LESION_LABEL = 5

_DATA_PREFIX = f"pyradiomics-{PYRADIOMICS_VERSION}/data"
# setup.py of pyradiomics imports these; --no-build-isolation makes pip use ours.
_BUILD_REQUIREMENTS = ("versioneer", "setuptools", "wheel")
_PIP_TIMEOUT_S = 900


def default_cache_dir() -> Path:
    """``$LABELLOOP_CACHE_DIR``, else ``~/.cache/labelloop``."""
    configured = os.environ.get("LABELLOOP_CACHE_DIR")
    return Path(configured) if configured else Path.home() / ".cache" / "labelloop"


def sha256_of(path: Path) -> str:
    """The hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# ---------------------------------------------------------------- download


def _run_pip(args: list[str], what: str) -> None:
    command = [sys.executable, "-m", "pip", *args]
    logger.debug("running %s", " ".join(command))
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=_PIP_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SampleDataError(f"Could not {what}: {exc}") from exc
    # pip prints harmless "Location ... is ignored" warnings here; keep them out of the log's top level.
    logger.debug("pip output:\n%s%s", done.stdout, done.stderr)
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-5:])
        raise SampleDataError(
            f"Could not {what} (pip exited with {done.returncode}; is PyPI reachable from here?):\n{tail}"
        )


def _ensure_build_requirements() -> None:
    missing = [name for name in _BUILD_REQUIREMENTS if importlib.util.find_spec(name) is None]
    if missing:
        logger.info("installing %s, needed to download the pyradiomics sdist", ", ".join(missing))
        _run_pip(["install", *_BUILD_REQUIREMENTS], f"install {', '.join(missing)}")


def pip_download(dest: Path) -> Path:
    """Download the ``pyradiomics==3.0.1`` sdist into ``dest`` with pip and return its path.

    Installs ``versioneer``, ``setuptools`` and ``wheel`` first when they are missing (pip
    prepares the sdist's metadata with them). Does not check the sha256.

    Raises:
        SampleDataError: pip failed (typically: no network) or produced no sdist.
    """
    _ensure_build_requirements()
    dest.mkdir(parents=True, exist_ok=True)
    _run_pip(
        [
            "download",
            "--no-deps",
            "--no-build-isolation",
            "--no-binary",
            "pyradiomics",
            f"pyradiomics=={PYRADIOMICS_VERSION}",
            "-d",
            str(dest),
        ],
        f"download pyradiomics=={PYRADIOMICS_VERSION} from PyPI",
    )
    path = dest / SDIST_NAME
    if not path.is_file():
        raise SampleDataError(f"pip download finished but wrote no {SDIST_NAME}")
    return path


def _verify(path: Path, sha256: str, *, delete: bool) -> None:
    try:
        actual = sha256_of(path)
    except OSError as exc:
        raise SampleDataError(f"{path.name} cannot be read: {exc.strerror or exc}") from exc
    if actual != sha256:
        if delete:
            path.unlink(missing_ok=True)
        raise SampleDataError(
            f"{path.name} has sha256 {actual}, expected {sha256}"
            + ("; the file was deleted" if delete else "; refusing to use it")
        )


def cached_sdist(
    cache_dir: Path,
    *,
    download: Callable[[Path], Path] = pip_download,
    sha256: str = SDIST_SHA256,
) -> Path:
    """The verified sdist in ``cache_dir``, downloaded with ``download(dir)`` only when not cached.

    A cached file whose sha256 is wrong is deleted and fetched again; a download whose sha256
    is wrong is deleted and refused.

    Raises:
        SampleDataError: the download failed or its sha256 is not ``sha256``.
    """
    cached = cache_dir / SDIST_NAME
    if cached.is_file():
        if sha256_of(cached) == sha256:
            logger.info("using the cached %s", cached)
            return cached
        logger.warning("the cached %s has a wrong sha256; deleting it and downloading again", cached)
        cached.unlink()
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir, prefix=".download-") as tmp:
        fetched = download(Path(tmp))
        _verify(fetched, sha256, delete=True)
        os.replace(fetched, cached)
    logger.info("downloaded and verified %s", cached, extra={"action": "sdist_cached", "sha256": sha256})
    return cached


# ---------------------------------------------------------------- conversion


def _read_member(tar: tarfile.TarFile, name: str, scratch: Path) -> Volume:
    """Read one NRRD member of ``tar`` by name (never extracting the archive) as a volume."""
    try:
        member = tar.getmember(name)
    except KeyError as exc:
        raise SampleDataError(f"The sdist has no {name}") from exc
    source = tar.extractfile(member) if member.isfile() else None
    if source is None:
        raise SampleDataError(f"{name} in the sdist is not a regular file")
    path = scratch / Path(name).name
    with source, open(path, "wb") as f:
        shutil.copyfileobj(source, f)
    try:
        return read_volume(path)
    except LabelloopError as exc:
        raise SampleDataError(f"{name} in the sdist cannot be read: {exc.message}") from exc
    finally:
        path.unlink(missing_ok=True)


def _convert_case(tar: tarfile.TarFile, case: str, out: Path, scratch: Path) -> None:
    """Write ``out/<case>.nii.gz`` (the image's dtype) and ``out/labels/reference/<case>.nii.gz``."""
    image = _read_member(tar, f"{_DATA_PREFIX}/{case}_image.nrrd", scratch)
    label = _read_member(tar, f"{_DATA_PREFIX}/{case}_label.nrrd", scratch)
    try:
        check_same_grid(image.geometry, label.geometry)
    except LabelloopError as exc:
        raise SampleDataError(f"{case}: {exc.message}") from exc
    lesion = np.where(label.array != 0, LESION_LABEL, 0).astype(np.uint8)
    write_volume(out / f"{case}.nii.gz", image.array, image.geometry.affine)
    write_volume(out / "labels" / "reference" / f"{case}.nii.gz", lesion, image.geometry.affine)
    logger.info(
        "converted %s: %s voxels of %s mm",
        case,
        "x".join(str(n) for n in image.geometry.shape),
        "x".join(f"{s:.3g}" for s in image.geometry.spacing),
    )


def convert_sdist(sdist: Path, out: Path, progress: Progress | None = None) -> list[str]:
    """Convert the sdist's five cases into the studies folder ``out``; return their ids.

    Images keep their dtype (int16 HU for CT, int16 for MR) and geometry; labels become uint8 with
    every nonzero voxel set to 5 ("lesion"), written with the image's affine.

    Raises:
        SampleDataError: the archive is unreadable, lacks a case, or a label is off its image's grid.
    """
    (out / "labels" / "reference").mkdir(parents=True, exist_ok=True)
    try:
        tar = tarfile.open(sdist, "r:gz")
    except (OSError, tarfile.TarError) as exc:
        raise SampleDataError(f"{sdist.name} is not a readable tar.gz: {exc}") from exc
    with tar, tempfile.TemporaryDirectory(prefix="labelloop-nrrd-") as tmp:
        for done, case in enumerate(REAL_CASES, start=1):
            try:
                _convert_case(tar, case, out, Path(tmp))
            except (OSError, tarfile.TarError, EOFError) as exc:
                raise SampleDataError(f"{case} cannot be read from {sdist.name}: {exc}") from exc
            if progress is not None:
                progress(done, len(REAL_CASES), case)
    return list(REAL_CASES)


def fetch_real(
    out: Path,
    cache_dir: Path | None = None,
    progress: Progress | None = None,
    sdist: Path | None = None,
    *,
    verify: bool = True,
) -> list[str]:
    """Write the five real pyradiomics cases into the studies folder ``out``; return their ids.

    Without ``sdist`` the archive comes from ``cache_dir`` (default ``default_cache_dir()``),
    downloaded with pip when it is not cached there. With ``sdist`` that local archive is used
    and nothing is downloaded; its sha256 is still checked unless ``verify=False`` (for tests
    that build a small archive of their own). ``verify=False`` without ``sdist`` is refused.

    Layout: ``out/<case>.nii.gz`` and ``out/labels/reference/<case>.nii.gz`` (values 0 and 5).

    Raises:
        SampleDataError: download failed, sha256 mismatch, or an unreadable archive.
        ValueError: ``verify=False`` without ``sdist``.
    """
    if sdist is None and not verify:
        raise ValueError("verify=False is only allowed with a local sdist")
    if progress is not None:
        progress(0, len(REAL_CASES), SDIST_NAME)
    if sdist is None:
        archive = cached_sdist(cache_dir if cache_dir is not None else default_cache_dir())
    else:
        if verify:
            _verify(sdist, SDIST_SHA256, delete=False)
        archive = sdist
    return convert_sdist(archive, out, progress)
