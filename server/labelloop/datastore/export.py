"""Dataset export: images, their final labels and an MSD-style ``dataset.json`` in one zip."""

from __future__ import annotations

import json
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from labelloop.datastore.ids import DEFAULT_TAG
from labelloop.datastore.images import ImageStore
from labelloop.datastore.labels import LabelStore
from labelloop.errors import ImageNotFoundError, NotFoundError

__all__ = ["write_dataset_zip"]


def _compression(name: str) -> int:
    return zipfile.ZIP_STORED if name.endswith(".gz") else zipfile.ZIP_DEFLATED


def write_dataset_zip(
    dest: Path,
    images: ImageStore,
    labels: LabelStore,
    *,
    name: str,
    description: str,
    label_names: Mapping[str, int],
    datastore_model: dict[str, Any],
    limit_cases: int | None = None,
) -> int:
    """Write ``dest`` as a zip with ``imagesTr/``, ``labelsTr/``, ``dataset.json`` and ``metadata.json``.

    Only images with a ``final`` label are exported, each with its current final version;
    ``dataset.json`` records which version (and checksum and author) each case used.
    Returns the number of cases.

    Raises:
        NotFoundError: no image has a final label.
    """
    finals = labels.current(DEFAULT_TAG)
    if not finals:
        raise NotFoundError("No image has a final label yet; there is nothing to export")
    if limit_cases is not None and 1 <= limit_cases < len(finals):
        finals = finals[:limit_cases]
    training: list[dict[str, Any]] = []
    modalities: set[str] = set()
    with zipfile.ZipFile(dest, "w", allowZip64=True) as archive:
        for label in finals:
            try:
                image = images.get(label.image_id)
            except ImageNotFoundError:
                continue
            image_entry = f"imagesTr/{image.name}"
            label_entry = f"labelsTr/{label.name}"
            archive.write(images.file(image), image_entry, compress_type=_compression(image.name))
            archive.write(label.path, label_entry, compress_type=_compression(label.name))
            if isinstance(image.info.get("Modality"), str):
                modalities.add(image.info["Modality"])
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
                    },
                }
            )
        dataset = {
            "name": name,
            "description": description,
            "tensorImageSize": "3D",
            "modality": {"0": sorted(modalities)[0] if len(modalities) == 1 else "unknown"},
            "labels": {
                str(index): label for label, index in sorted(label_names.items(), key=lambda kv: kv[1])
            },
            "numTraining": len(training),
            "numTest": 0,
            "training": training,
            "test": [],
        }
        archive.writestr("dataset.json", json.dumps(dataset, indent=2))
        archive.writestr("metadata.json", json.dumps(datastore_model))
    return len(training)
