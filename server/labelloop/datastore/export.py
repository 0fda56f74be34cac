"""Dataset export: images, their final labels and an MSD-style ``dataset.json`` in one zip.

Every image and label goes in as gzipped NIfTI (``.nii.gz``), as the Medical Segmentation Decathlon
and nnU-Net expect, whatever it was stored as: a ``.nii.gz`` is copied, a ``.nii`` gzipped on the
way in, an NRRD decoded and written as NIfTI on the same grid (RAS affine, so spacing, origin and
direction are kept) with an integer dtype for labels. One volume is decoded at a time, within the
datastore's decode budget, and the zip is written entry by entry to a file, never held in memory.
"""

from __future__ import annotations

import gzip
import json
import shutil
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from labelloop.datastore.ids import DEFAULT_TAG
from labelloop.datastore.images import ImageStore
from labelloop.datastore.labels import LabelStore
from labelloop.datastore.records import Context, ImageRecord
from labelloop.errors import ImageNotFoundError, ImageReadError, NotFoundError
from labelloop.imaging import declared_size, read_volume, sniff, write_volume

__all__ = ["image_modality", "write_dataset_zip"]

_CHUNK = 1 << 20
#: nibabel's level for ``.nii.gz``: fast, and most of what gzip can save on volumes.
_GZIP_LEVEL = 1
_EXT = ".nii.gz"

#: Image info keys that may hold a DICOM modality: DICOM's keyword (PACS series), a client's param.
_INFO_KEYS = ("Modality", "modality")
#: NRRD key-value fields that hold it: a plain ``modality``, and DICOM (0008,0060) as ITK and
#: SimpleITK write a series' tags (``0008|0060``) and as MITK does (``DICOM.0008.0060``, JSON).
_NRRD_KEYS = ("modality", "dicom_modality", "0008|0060", "dicom_0008_0060", "dicom.0008.0060")
#: Names that are not DICOM's code for the same modality.
_SYNONYMS = {"MRI": "MR", "PET": "PT"}


def _modality_code(value: Any) -> str | None:
    """A DICOM modality code (``CT``, ``MR``, ``PT``...) from a stored value, if it holds one."""
    if isinstance(value, str) and value.strip().startswith("{"):
        try:  # MITK: {"values": [{"z": 0, "t": 0, "value": "CT"}]}
            value = json.loads(value)["values"][0]["value"]
        except (ValueError, KeyError, IndexError, TypeError):
            return None
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if not isinstance(value, str):
        return None
    code = value.strip().upper()
    if not code or len(code) > 16 or not code.replace("_", "").isalnum():
        return None
    return _SYNONYMS.get(code, code)


def image_modality(image: ImageRecord, path: Path | None = None) -> str | None:
    """The image's modality as a DICOM code (``CT``, ``MR``), or ``None`` when nothing records it.

    From its info first (a PACS series' ``Modality``, or what the client sent at upload), then,
    for an NRRD ``path``, from its header's key-value fields. NIfTI has no field for it.
    """
    for key in _INFO_KEYS:
        code = _modality_code(image.info.get(key))
        if code is not None:
            return code
    if path is None or sniff(path) != "nrrd":
        return None
    import nrrd

    try:
        header = nrrd.read_header(str(path))
    except Exception:  # an unreadable header is the conversion's to report
        return None
    fields = {str(key).lower(): value for key, value in header.items()}
    for key in _NRRD_KEYS:
        code = _modality_code(fields.get(key))
        if code is not None:
            return code
    return None


def _smallest_int(low: int, high: int) -> np.dtype[Any]:
    for dtype in (np.uint8, np.int16, np.uint16, np.int32, np.uint32):
        info = np.iinfo(dtype)
        if info.min <= low and high <= info.max:
            return np.dtype(dtype)
    return np.dtype(np.float64)


def _nifti_array(array: npt.NDArray[Any], *, label: bool) -> npt.NDArray[Any]:
    """``array`` in a dtype NIfTI-1 stores: a label as integers (its values are whole numbers, checked
    when it was saved), 64-bit integers narrowed to what their range needs, bool and float16 widened."""
    kind, size = array.dtype.kind, array.dtype.itemsize
    if kind == "b":
        return array.astype(np.uint8)
    if kind in "iu" and size < 8:
        return array
    if kind in "iu" or (label and kind == "f"):
        if array.size == 0:
            return array.astype(np.uint8)
        low, high = int(np.min(array)), int(np.max(array))
        return array.astype(_smallest_int(low, high))
    if kind == "f" and size < 4:
        return array.astype(np.float32)
    return array


def _add_gzipped(archive: zipfile.ZipFile, source: Path, entry: str) -> None:
    """Gzip an uncompressed NIfTI file into ``entry``, a chunk at a time (no decoding: same bytes inside)."""
    info = zipfile.ZipInfo.from_file(source, entry)
    info.compress_type = zipfile.ZIP_STORED
    # ZipInfo.from_file set file_size to the uncompressed size: zip64 is chosen from it.
    with (
        open(source, "rb") as src,
        archive.open(info, "w") as out,
        gzip.GzipFile(filename="", mode="wb", fileobj=out, compresslevel=_GZIP_LEVEL, mtime=0) as gz,
    ):
        shutil.copyfileobj(src, gz, _CHUNK)


def _add_converted(archive: zipfile.ZipFile, ctx: Context, source: Path, entry: str, *, label: bool) -> None:
    """Decode an NRRD volume and add it as NIfTI on the same grid (within the decode budget)."""
    size = declared_size(source)
    with ctx.decoder.budget.reserve(size.bytes), ctx.blobs.scratch(_EXT) as converted:
        volume = read_volume(source)
        write_volume(converted, _nifti_array(volume.array, label=label), volume.geometry.affine)
        del volume
        archive.write(converted, entry, compress_type=zipfile.ZIP_STORED)


def _add_volume(archive: zipfile.ZipFile, ctx: Context, source: Path, entry: str, *, label: bool) -> None:
    kind = sniff(source)
    if kind == "nifti-gz":
        archive.write(source, entry, compress_type=zipfile.ZIP_STORED)
    elif kind == "nifti":
        _add_gzipped(archive, source, entry)
    elif kind == "nrrd":
        _add_converted(archive, ctx, source, entry, label=label)
    else:  # stored files are NIfTI or NRRD (a DICOM series is converted when it arrives)
        raise ImageReadError(f"A stored {'label' if label else 'image'} is {kind}, not NIfTI or NRRD")


def _dataset_modality(modalities: list[str | None]) -> str:
    """``dataset.json``'s channel 0: the images' one modality; ``CT/MR`` for a mix; else ``unknown``."""
    known = sorted({m for m in modalities if m is not None})
    return "/".join(known) if known else "unknown"


def write_dataset_zip(
    dest: Path,
    images: ImageStore,
    labels: LabelStore,
    ctx: Context,
    *,
    name: str,
    description: str,
    label_names: Mapping[str, int],
    datastore_model: dict[str, Any],
    limit_cases: int | None = None,
) -> int:
    """Write ``dest`` as a zip with ``imagesTr/``, ``labelsTr/``, ``dataset.json`` and ``metadata.json``.

    Only images with a ``final`` label are exported, each with its current final version, both as
    ``<image id>.nii.gz`` (see the module's docstring). ``dataset.json`` records which version (and
    author, and the stored files' checksums, which a converted entry's bytes do not have) each case
    used, each case's modality, and as ``modality`` the images' own (a DICOM code such as ``CT`` or
    ``MR``; ``unknown`` only when no image records one).
    Returns the number of cases.

    Raises:
        NotFoundError: no image has a final label.
        BusyError: the decode budget stayed taken (an NRRD to convert).
    """
    finals = labels.current(DEFAULT_TAG)
    if not finals:
        raise NotFoundError("No image has a final label yet; there is nothing to export")
    if limit_cases is not None and 1 <= limit_cases < len(finals):
        finals = finals[:limit_cases]
    training: list[dict[str, Any]] = []
    modalities: list[str | None] = []
    with zipfile.ZipFile(dest, "w", allowZip64=True) as archive:
        for label in finals:
            try:
                image = images.get(label.image_id)
            except ImageNotFoundError:
                continue
            image_entry = f"imagesTr/{image.id}{_EXT}"
            label_entry = f"labelsTr/{image.id}{_EXT}"
            image_path = images.file(image)
            _add_volume(archive, ctx, image_path, image_entry, label=False)
            _add_volume(archive, ctx, label.path, label_entry, label=True)
            modality = image_modality(image, image_path)
            modalities.append(modality)
            training.append(
                {
                    "image": f"./{image_entry}",
                    "label": f"./{label_entry}",
                    "labelloop": {
                        "image_sha256": image.sha256,
                        "label_version": label.version,
                        "label_sha256": label.sha256,
                        "author": label.author,
                        "model": label.model,
                        "model_version": label.model_version,
                        "modality": modality,
                    },
                }
            )
        dataset = {
            "name": name,
            "description": description,
            "tensorImageSize": "3D",
            "modality": {"0": _dataset_modality(modalities)},
            "labels": {
                str(index): label for label, index in sorted(label_names.items(), key=lambda kv: kv[1])
            },
            "file_ending": _EXT,
            "numTraining": len(training),
            "numTest": 0,
            "training": training,
            "test": [],
        }
        archive.writestr("dataset.json", json.dumps(dataset, indent=2))
        archive.writestr("metadata.json", json.dumps(datastore_model))
    return len(training)
