"""The ``Datastore``: the catalogue of images, label versions and sessions."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path

from labelloop.datastore.blobs import BlobStore
from labelloop.datastore.export import write_dataset_zip
from labelloop.datastore.images import ImageStore
from labelloop.datastore.labels import LabelStore
from labelloop.datastore.records import Context, RemoteImages
from labelloop.datastore.sessions import SessionStore
from labelloop.datastore.sources.folder import ImportReport, Progress, import_folder
from labelloop.datastore.sources.pacs import PacsLink, RefreshReport
from labelloop.datastore.views import Views
from labelloop.db import Database
from labelloop.settings import DatastoreSettings, SessionSettings

__all__ = ["Datastore"]


class Datastore:
    """Images (``.images``), label versions (``.labels``), sessions (``.sessions``) and views.

    Files live under ``data_dir``; rows in ``db``. Every method is synchronous and safe to
    call from many threads and processes at once.
    """

    def __init__(
        self,
        db: Database,
        data_dir: Path,
        *,
        settings: DatastoreSettings | None = None,
        session_settings: SessionSettings | None = None,
        name: str = "labelloop",
        description: str = "labelloop datastore",
        clock: Callable[[], float] = time.time,
        remote: RemoteImages | None = None,
    ) -> None:
        self.db = db
        self.ctx = Context(
            db=db,
            blobs=BlobStore(data_dir),
            settings=settings or DatastoreSettings(),
            clock=clock,
            remote=remote,
        )
        self.images = ImageStore(self.ctx)
        self.labels = LabelStore(self.ctx, self.images)
        self.sessions = SessionStore(self.ctx, session_settings or SessionSettings())
        self.views = Views(self.ctx, name, description)
        self._name = name
        self._description = description

    @property
    def blobs(self) -> BlobStore:
        return self.ctx.blobs

    def refresh_remote(self, user: str) -> RefreshReport | None:
        """Look for new series and SEGs in the PACS, when the studies are a DICOMweb server."""
        remote = self.ctx.remote
        if not isinstance(remote, PacsLink):
            return None
        return remote.refresh(self.images, self.labels, self.blobs, user)

    def import_folder(self, folder: Path, *, user: str, progress: Progress | None = None) -> ImportReport:
        """Register a MONAI Label-style studies folder in place (incremental)."""
        return import_folder(folder, self.images, self.labels, user=user, progress=progress)

    def export(self, dest: Path, *, label_names: Mapping[str, int], limit_cases: int | None = None) -> int:
        """Write the dataset zip (MSD layout) to ``dest``; returns the number of cases."""
        return write_dataset_zip(
            dest,
            self.images,
            self.labels,
            name=self._name,
            description=self._description,
            label_names=label_names,
            datastore_model=self.views.model(),
            limit_cases=limit_cases,
        )
