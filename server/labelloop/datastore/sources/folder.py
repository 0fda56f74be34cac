"""Registering a MONAI Label-style studies folder in place.

Layout: images at the top (``<id>.nii.gz``, ``.nii``, ``.nrrd``), labels under
``labels/<tag>/<id>.<ext>``. Images are not copied; labels are copied in as version 1 (or
a new version when the file changed), because label versions must never change under us.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from labelloop.datastore.blobs import sha256_file
from labelloop.datastore.ids import ID_PATTERN
from labelloop.datastore.images import ImageStore
from labelloop.datastore.labels import LabelStore
from labelloop.datastore.records import LabelFile, Provenance
from labelloop.errors import LabelloopError, LabelNotFoundError
from labelloop.imaging import VOLUME_EXTENSIONS

__all__ = ["ImportReport", "import_folder", "studies_id"]

logger = logging.getLogger(__name__)

Progress = Callable[[int, int, str], None]


@dataclass
class ImportReport:
    """What an import did."""

    added: int = 0
    updated: int = 0
    unchanged: int = 0
    missing: int = 0
    labels_added: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"{self.added} images added, {self.updated} updated, {self.unchanged} unchanged, "
            f"{self.missing} gone missing, {self.labels_added} label versions added, "
            f"{len(self.skipped)} skipped"
        )


def studies_id(name: str) -> str | None:
    """MONAI Label's id for a studies file: the name minus the known extension it ends with."""
    lower = name.lower()
    for ext in VOLUME_EXTENSIONS:
        if lower.endswith(ext) and len(name) > len(ext):
            return name[: -len(ext)]
    return None


def _volume_files(folder: Path) -> list[tuple[str, Path]]:
    found = []
    for path in sorted(folder.iterdir()):
        if path.is_file() and not path.name.startswith("."):
            image_id = studies_id(path.name)
            if image_id is not None:
                found.append((image_id, path))
    return found


def import_folder(
    folder: Path,
    images: ImageStore,
    labels: LabelStore,
    *,
    user: str,
    progress: Progress | None = None,
) -> ImportReport:
    """Register ``folder``'s images in place and copy in its labels; safe to run again (incremental)."""
    folder = folder.resolve()
    if not folder.is_dir():
        raise LabelloopError(f"Studies folder {folder} does not exist")
    report = ImportReport()
    candidates = _volume_files(folder)
    label_files: list[tuple[str, str, Path]] = []
    labels_dir = folder / "labels"
    if labels_dir.is_dir():
        for tag_dir in sorted(p for p in labels_dir.iterdir() if p.is_dir()):
            for image_id, path in _volume_files(tag_dir):
                label_files.append((tag_dir.name, image_id, path))
    total = len(candidates) + len(label_files)
    done = 0
    seen: set[str] = set()
    for image_id, path in candidates:
        done += 1
        if progress:
            progress(done, total, path.name)
        if not ID_PATTERN.fullmatch(image_id) or ".." in image_id:
            report.skipped.append((path.name, f"'{image_id}' is not a valid image id"))
            continue
        if image_id in seen:
            report.skipped.append((path.name, f"another file already has id '{image_id}'"))
            continue
        seen.add(image_id)
        try:
            existed = images.exists(image_id)
            _, changed = images.register(path, image_id, user)
        except LabelloopError as exc:
            report.skipped.append((path.name, exc.message))
            continue
        if not changed:
            report.unchanged += 1
        elif existed:
            report.updated += 1
        else:
            report.added += 1
    for image_id, path in images.registered_in(folder):
        if not path.exists():
            images.delete(image_id, reason="missing")
            report.missing += 1
    for tag, image_id, path in label_files:
        done += 1
        if progress:
            progress(done, total, f"labels/{tag}/{path.name}")
        if not ID_PATTERN.fullmatch(tag) or ".." in tag:
            report.skipped.append((f"labels/{tag}/{path.name}", f"'{tag}' is not a valid tag"))
            continue
        try:
            if not images.exists(image_id):
                report.skipped.append((f"labels/{tag}/{path.name}", f"no image '{image_id}'"))
                continue
            if _already_imported(labels, image_id, tag, path):
                continue
            labels.save(
                image_id,
                tag,
                LabelFile(path),
                Provenance(
                    author=user, source="import", params={"imported_from": f"labels/{tag}/{path.name}"}
                ),
            )
            report.labels_added += 1
        except LabelloopError as exc:
            report.skipped.append((f"labels/{tag}/{path.name}", exc.message))
    for name, reason in report.skipped:
        logger.warning("import skipped %s: %s", name, reason)
    logger.info("import of %s: %s", folder, report.summary())
    return report


def _already_imported(labels: LabelStore, image_id: str, tag: str, path: Path) -> bool:
    """Whether the newest imported version of ``(image, tag)`` came from this very file content."""
    try:
        current = labels.get(image_id, tag)
    except LabelNotFoundError:
        current = None
    if current is not None and current.source != "import":
        return True  # people have worked on it since; the studies file is older than their work
    for version in labels.versions(image_id, tag):
        if version.source == "import":
            return version.sha256 == sha256_file(path) if current is not None else True
    return False
