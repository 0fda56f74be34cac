"""What the datastore hands out: plain frozen records, never table rows."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from labelloop.datastore.blobs import BlobStore
from labelloop.db import Database
from labelloop.errors import NotFoundError
from labelloop.imaging import Geometry
from labelloop.settings import DatastoreSettings

__all__ = ["ImageRecord", "LabelVersion", "SessionRecord", "Context", "RemoteImages", "REMOTE_PREFIX"]


class RemoteImages(Protocol):
    """Where images that live elsewhere (a PACS) are cached and fetched from."""

    def cached_path(self, series_uid: str) -> Path: ...

    def local_path(self, location: str) -> Path: ...

    def export_label(self, location: str, label: Any, author: Any) -> dict[str, Any]:
        """Write a final label back (a DICOM SEG); returns what to record with the version."""
        ...


REMOTE_PREFIX = "dicomweb:"


@dataclass(frozen=True)
class Context:
    """What every part of the datastore shares."""

    db: Database
    blobs: BlobStore
    settings: DatastoreSettings
    clock: Callable[[], float]
    remote: RemoteImages | None = None

    def resolve(self, location: str, owned: bool) -> Path:
        """Where an image's file is (for a PACS image: where its cached copy is or will be)."""
        if location.startswith(REMOTE_PREFIX) and self.remote is not None:
            return self.remote.cached_path(location.rsplit("/", 1)[-1])
        return self.blobs.path(location) if owned else Path(location)

    def materialize(self, location: str, owned: bool) -> Path:
        """The image's file, fetched from the PACS first when it is not cached yet."""
        if location.startswith(REMOTE_PREFIX):
            if self.remote is None:
                raise NotFoundError("This image lives in a PACS that this server is not connected to")
            return self.remote.local_path(location)
        return self.resolve(location, owned)


@dataclass(frozen=True)
class ImageRecord:
    """A registered image. ``geometry.shape`` is ``(I, J, K)``; its affine maps to RAS mm."""

    id: str
    name: str
    ext: str
    format: str
    geometry: Geometry
    sha256: str
    size_bytes: int
    info: dict[str, Any]
    created_by: str
    created_at: float
    updated_at: float
    path: Path
    owned: bool
    location: str = ""

    @property
    def remote(self) -> bool:
        """Whether the image lives in a PACS (``path`` is then its local cache)."""
        return self.location.startswith(REMOTE_PREFIX)

    @property
    def checksum(self) -> str:
        """MONAI Label's checksum form, ``SHA256:<hex>``."""
        return f"SHA256:{self.sha256}"

    def public_info(self) -> dict[str, Any]:
        """The info dict MONAI Label clients read: stored info plus ``ts`` and ``name``."""
        return {**self.info, "ts": int(self.created_at), "name": self.name}


@dataclass(frozen=True)
class LabelVersion:
    """One immutable version of the label ``(image_id, tag)``."""

    image_id: str
    tag: str
    version: int
    name: str
    ext: str
    sha256: str
    size_bytes: int
    image_sha256: str
    params: dict[str, Any]
    info: dict[str, Any]
    author: str
    client_id: str | None
    created_at: float
    parent_version: int | None
    model: str | None
    model_version: int | None
    source: str
    path: Path = field(compare=False)

    @property
    def etag(self) -> str:
        """A strong ETag naming this version (quoted, as HTTP wants it)."""
        return f'"v{self.version}-{self.sha256[:16]}"'

    def public_info(self) -> dict[str, Any]:
        """The label info MONAI Label clients read: save params, later info, ``ts`` and ``name``."""
        return {**self.params, **self.info, "ts": int(self.created_at), "name": self.name}

    def provenance(self) -> dict[str, Any]:
        """The history entry curators see."""
        return {
            "image": self.image_id,
            "tag": self.tag,
            "version": self.version,
            "etag": self.etag,
            "name": self.name,
            "sha256": self.sha256,
            "size_bytes": self.size_bytes,
            "image_sha256": self.image_sha256,
            "author": self.author,
            "client_id": self.client_id,
            "ts": self.created_at,
            "parent_version": self.parent_version,
            "model": self.model,
            "model_version": self.model_version,
            "source": self.source,
            "label_info": self.params.get("label_info"),
            "info": self.public_info(),
        }


@dataclass(frozen=True)
class SessionRecord:
    """A temporary server-side image (``/session/``)."""

    id: str
    directory: Path
    image_name: str
    meta: dict[str, Any]
    client_id: str | None
    created_at: float
    last_access_at: float
    expiry_s: int

    @property
    def image_path(self) -> Path:
        return self.directory / self.image_name

    def expired(self, now: float) -> bool:
        return self.last_access_at + self.expiry_s < now
