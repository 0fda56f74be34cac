"""What the datastore hands out: plain frozen records, never table rows."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from labelloop.datastore.blobs import BlobStore
from labelloop.datastore.intake import Decoder
from labelloop.db import Database
from labelloop.errors import NotFoundError, PayloadTooLargeError
from labelloop.imaging import Geometry
from labelloop.settings import DatastoreSettings

__all__ = [
    "ImageRecord",
    "LabelFile",
    "LabelSource",
    "LabelVersion",
    "Provenance",
    "SessionRecord",
    "Context",
    "RemoteImages",
    "StoreOutcome",
    "REMOTE_PREFIX",
]


class RemoteImages(Protocol):
    """Where images that live elsewhere (a PACS) are cached and fetched from."""

    def cached_path(self, series_uid: str) -> Path: ...

    def local_path(self, location: str) -> Path: ...

    def prepare_seg(self, location: str, label: Any, author: Any) -> tuple[str, str, bytes]:
        """A final label as a DICOM SEG, built and checked but not sent:
        ``(SOPInstanceUID, SeriesInstanceUID, Part 10 bytes)``."""
        ...

    def push_seg(self, raw: bytes) -> StoreOutcome:
        """Send a SEG (Part 10 bytes) to the PACS by STOW-RS."""
        ...


@dataclass(frozen=True)
class StoreOutcome:
    """What a STOW-RS of a SEG gave: stored, or not (``permanent``: the PACS refused it, so
    trying again will not help)."""

    stored: bool
    error: str | None = None
    permanent: bool = False


REMOTE_PREFIX = "dicomweb:"


@dataclass(frozen=True)
class Context:
    """What every part of the datastore shares."""

    db: Database
    blobs: BlobStore
    settings: DatastoreSettings
    clock: Callable[[], float]
    decoder: Decoder
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


#: How a label version came to be: a client saved it, an import registered it, a model wrote it.
LabelSource = Literal["upload", "import", "infer"]


@dataclass(frozen=True)
class Provenance:
    """Who saved a label version, how, and from which model output it started.

    Built once where a save enters the server (the HTTP layer, an import, a job), so the
    datastore never has to guess it from a client's params.

    Attributes:
        author: the user the server acted for.
        client_id: the client's name for the annotator (MONAI Label's ``client_id``), if sent.
        source: ``upload``, ``import`` or ``infer``.
        model: the model whose output the label started from, if known.
        model_version: that model's version; with ``model`` but no version, the save looks up the
            version of the newest output of ``model`` for the image.
        params: the client's params as sent, stored verbatim with the version (label info).
        signed_in: the author logged in, so their name (not the client's) holds leases.
        model_link: how ``model`` was found when the client did not send it (the holder's last
            inference on the image: ``{"source": "last_inference", "holder", "ts"}``); stored in
            the version's info as ``model_link``.
    """

    author: str
    client_id: str | None = None
    source: LabelSource = "upload"
    model: str | None = None
    model_version: int | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    signed_in: bool = False
    model_link: Mapping[str, Any] | None = None

    @property
    def holder(self) -> str:
        """Who holds leases for this save: a logged-in author; else the client's annotator name, else
        the user (with auth off, ``client_id`` is all that tells annotators apart)."""
        return self.author if self.signed_in else self.client_id or self.author


@dataclass(frozen=True)
class LabelFile:
    """A label file to save.

    Attributes:
        path: the file (NIfTI or NRRD, on the image's voxel grid).
        filename: the client's name for it, whose extension tells the format; ``None``: ``path``'s.
        disposable: a scratch file the caller no longer needs, which may be moved into place.
    """

    path: Path
    filename: str | None = None
    disposable: bool = False


@dataclass(frozen=True)
class LabelVersion:
    """One immutable version of the label ``(image_id, tag)``.

    ``measurements``: each label's volume (mL), components, largest component (mL), centroid (RAS
    mm and voxel indices) and bounding box as measured when it was saved (``Measurer.to_json``);
    ``None`` for versions saved before the server measured them.
    """

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
    measurements: dict[str, Any] | None = field(default=None, compare=False)

    @property
    def etag(self) -> str:
        """A strong ETag naming this version (quoted, as HTTP wants it)."""
        return f'"v{self.version}-{self.sha256[:16]}"'

    def public_info(self) -> dict[str, Any]:
        """The label info MONAI Label clients read: save params, later info, ``ts`` and ``name``."""
        return {**self.params, **self.info, "ts": int(self.created_at), "name": self.name}


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
    created_by: str = ""

    @property
    def image_path(self) -> Path:
        return self.directory / self.image_name

    def expired(self, now: float) -> bool:
        return self.last_access_at + self.expiry_s < now


def check_info_size(info: Mapping[str, Any], max_bytes: int | None) -> None:
    """``PayloadTooLargeError`` (413) when ``info`` as stored (JSON) would pass ``max_bytes``."""
    if max_bytes is None:
        return
    import json

    size = len(json.dumps(info, separators=(",", ":"), default=str).encode())
    if size > max_bytes:
        raise PayloadTooLargeError(
            f"The info would take {size:,} bytes with what is stored already, over the limit of "
            f"{max_bytes:,} (setting datastore.max_info_bytes)"
        )
