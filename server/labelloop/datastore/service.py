"""The ``Datastore``: the catalogue of images, label versions and sessions."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path

from sqlalchemy import select

from labelloop.datastore.blobs import BlobStore
from labelloop.datastore.export import write_dataset_zip
from labelloop.datastore.images import ImageStore
from labelloop.datastore.intake import Decoder
from labelloop.datastore.labels import LabelStore
from labelloop.datastore.measured import Measurer
from labelloop.datastore.models import images, label_versions
from labelloop.datastore.patients import Patients
from labelloop.datastore.records import Context, RemoteImages
from labelloop.datastore.runs import InferenceRuns
from labelloop.datastore.segs import PacsSegs
from labelloop.datastore.sessions import SessionStore
from labelloop.datastore.sources.folder import ImportReport, Progress, import_folder
from labelloop.datastore.sources.pacs import PacsLink, RefreshReport
from labelloop.datastore.views import Views
from labelloop.db import Database
from labelloop.settings import DatastoreSettings, SessionSettings

__all__ = ["Datastore"]


class Datastore:
    """Images (``.images``), label versions (``.labels``), sessions (``.sessions``), annotators' last
    inference runs (``.runs``), patients' studies (``.patients``) and views.

    Files live under ``data_dir``; rows in ``db``. ``measurer`` measures every label version saved
    (the app's label names and lesions; by default every value present, named ``label_<value>``).
    Every method is synchronous and safe to call from many threads and processes at once.
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
        label_max: int | None = None,
        writeback_retry_s: float = 15.0,
        writeback_timeout_s: float = 60.0,
        measurer: Measurer | None = None,
    ) -> None:
        self.db = db
        settings = settings or DatastoreSettings()
        self.ctx = Context(
            db=db,
            blobs=BlobStore(data_dir),
            settings=settings,
            clock=clock,
            decoder=Decoder(settings, label_max=label_max),
            remote=remote,
        )
        self.images = ImageStore(self.ctx)
        self.segs = PacsSegs(self.ctx, retry_after_s=writeback_retry_s, claim_s=writeback_timeout_s)
        self.labels = LabelStore(self.ctx, self.images, self.segs, measurer)
        self.patients = Patients(self.ctx, self.images, self.labels)
        self.sessions = SessionStore(self.ctx, session_settings or SessionSettings())
        self.runs = InferenceRuns(self.ctx)
        self.views = Views(self.ctx, name, description)
        self._name = name
        self._description = description

    @property
    def blobs(self) -> BlobStore:
        return self.ctx.blobs

    @property
    def decoder(self) -> Decoder:
        """Reads uploads within the size limits and the process-wide decode budget."""
        return self.ctx.decoder

    def clean_leftovers(
        self, *, scratch_after_s: float = 3600.0, orphan_after_s: float = 600.0
    ) -> tuple[int, int]:
        """Remove what a crash or an out-of-memory kill left: scratch files no live process of this
        host owns (another host's after ``scratch_after_s``), and image and label files whose row
        never committed, once ``orphan_after_s`` old (a save in flight on another server stores its
        file a moment before its row). Returns ``(scratch files, orphan files)`` removed.
        """
        scratch = self.blobs.clean_scratch(older_than_s=scratch_after_s)
        with self.db.read() as conn:
            known = {row.location for row in conn.execute(select(label_versions.c.location))}
            known |= {
                row.location
                for row in conn.execute(select(images.c.location).where(images.c.owned.is_(True)))
            }
        known |= self.segs.keys()
        orphans = 0
        for kind in ("labels", "images", "segs"):
            for key in list(self.blobs.keys_under(kind, older_than_s=orphan_after_s)):
                if key not in known:
                    self.blobs.delete(key)
                    orphans += 1
        return scratch, orphans

    def refresh_remote(self, user: str) -> RefreshReport | None:
        """Look for new series and SEGs in the PACS, when the studies are a DICOMweb server."""
        remote = self.ctx.remote
        if not isinstance(remote, PacsLink):
            return None
        return remote.refresh(self.images, self.labels, self.segs, self.blobs, user)

    def push_write_backs(self) -> int:
        """Send the PACS the SEGs of committed final labels it does not have yet (due retries)."""
        remote = self.ctx.remote
        if not isinstance(remote, PacsLink):
            return 0
        return self.segs.push_due(remote.push_seg)

    def import_folder(self, folder: Path, *, user: str, progress: Progress | None = None) -> ImportReport:
        """Register a MONAI Label-style studies folder in place (incremental)."""
        return import_folder(folder, self.images, self.labels, user=user, progress=progress)

    def export(self, dest: Path, *, label_names: Mapping[str, int], limit_cases: int | None = None) -> int:
        """Write the dataset zip (MSD layout) to ``dest``; returns the number of cases."""
        return write_dataset_zip(
            dest,
            self.images,
            self.labels,
            self.ctx,
            name=self._name,
            description=self._description,
            label_names=label_names,
            datastore_model=self.views.model(),
            limit_cases=limit_cases,
        )
