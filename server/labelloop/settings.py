"""One typed ``Settings`` object, read from CLI flags and ``LABELLOOP_*`` environment variables.

Nested groups use a double underscore: ``LABELLOOP_SESSIONS__MAX_EXPIRY_S=600``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = [
    "Settings",
    "ActiveLearningSettings",
    "AuthSettings",
    "DicomWebSettings",
    "DatastoreSettings",
    "InferenceSettings",
    "JobSettings",
    "RaySettings",
    "SessionSettings",
    "default_data_dir",
]


def default_data_dir() -> Path:
    """``$XDG_DATA_HOME/labelloop``, else ``~/.local/share/labelloop``."""
    import os

    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "labelloop"


class DatastoreSettings(BaseModel):
    """Limits and defaults of the datastore."""

    upload_max_bytes: int = Field(
        2 * 1024**3, gt=0, description="Largest accepted upload (image, label, session) in bytes"
    )
    dicom_zip_max_bytes: int = Field(
        4 * 1024**3, gt=0, description="Largest total uncompressed size of a zipped DICOM series"
    )
    spacing_tolerance: float = Field(
        1e-3, ge=0, description="Relative tolerance when a label's spacing is compared with its image's"
    )
    direction_tolerance: float = Field(
        1e-3,
        ge=0,
        description="Absolute tolerance on direction cosines when a label is compared with its image",
    )
    origin_tolerance_voxels: float = Field(
        0.5, ge=0, description="Largest origin difference between label and image, in voxels"
    )
    max_voxels: int = Field(
        2**30,
        gt=0,
        description="Most voxels an uploaded image or label may declare (1024^3; 512x512x2000 is 0.5 G)",
    )
    max_decoded_bytes: int = Field(
        4 * 1024**3,
        gt=0,
        description="Most bytes decoding one upload may hold (stored pixels plus the array), from its header",
    )
    decode_budget_bytes: int = Field(
        6 * 1024**3,
        gt=0,
        description="Bytes all uploads being decoded at once may hold together; more wait, then get 503",
    )
    decode_wait_s: float = Field(
        30.0, ge=0, description="How long an upload waits for decode budget before 503"
    )
    max_label_value: int | None = Field(
        None,
        ge=1,
        description="Largest value a label may hold; default: the largest label index of the app's models",
    )
    max_info_bytes: int = Field(
        64 * 1024, gt=0, description="Largest image or label info object (serialized JSON, bytes)"
    )


class SessionSettings(BaseModel):
    """Temporary server-side images (``/session/``)."""

    enabled: bool = True
    max_expiry_s: int = Field(3600, gt=0, description="Longest allowed session lifetime in seconds")
    cleanup_interval_s: float = Field(300.0, gt=0, description="How often expired sessions are removed")
    max_sessions: int = Field(100, ge=1, description="Most live sessions at once; more get 429")
    max_total_bytes: int = Field(
        20 * 1024**3, gt=0, description="Most bytes all live sessions' images may take on disk; more get 507"
    )


class InferenceSettings(BaseModel):
    """The inference service: devices, concurrency and caches."""

    device: str = Field("auto", description="'auto' (CUDA when present), 'cpu', 'cuda' or 'cuda:N'")
    workers: int = Field(1, ge=1, description="Inference threads (each runs one request at a time)")
    queue_size: int = Field(16, ge=1, description="Requests waiting or running before new ones get 503")
    max_clicks: int = Field(
        1000, ge=1, description="Most clicks (foreground and background points) in one request"
    )
    cache_bytes: int = Field(
        2 * 1024**3, ge=0, description="Memory for loaded and preprocessed images, in bytes"
    )
    amp: bool = Field(True, description="Mixed precision on CUDA")
    warmup: bool = Field(True, description="Load the active model versions when the server starts")


#: A job's worker must miss this many heartbeats in a row before the job is declared lost.
STALE_BEATS = 5


class JobSettings(BaseModel):
    """Background jobs (training, scoring, batch inference) and the worker processes that run them."""

    workers: int = Field(
        1, ge=0, description="Worker processes the server starts (0: only standalone workers)"
    )
    runner: Literal["local", "ray"] = Field(
        "local",
        description="Where a job's work runs: 'local', in the job's own process on the worker's machine; "
        "'ray', on the Ray cluster at ray.address (training under Ray Train, batch inference and scoring "
        "as Ray tasks; needs the `ray` extra)",
    )
    heartbeat_interval_s: float = Field(
        2.0, gt=0, description="How often workers heartbeat for themselves and the job they run"
    )
    stale_after_s: float = Field(
        60.0,
        gt=0,
        description="A running job whose worker is silent this long is declared lost: marked ERROR, its "
        f"results refused and its process killed (at least {STALE_BEATS} heartbeat intervals)",
    )
    poll_interval_s: float = Field(0.5, gt=0, description="How often idle workers look for jobs")
    cancel_grace_s: float = Field(10.0, ge=0, description="Time a stopped job gets before it is killed")
    run_sync_timeout_s: float = Field(6 * 3600.0, gt=0, description="Longest a run_sync request waits")
    autotrain_after: int = Field(
        5,
        ge=0,
        description="Queue training after this many final labels saved by people since the last run "
        "(imported labels do not count; 0: never automatically)",
    )
    autotrain_models: list[str] | None = Field(
        None, description="The trainers automatic training queues (unset: every trainer of the app)"
    )
    autotrain_options: dict[str, Any] = Field(
        default_factory=dict,
        description='Training options of automatic runs, e.g. {"max_epochs": 10} (unset: the defaults)',
    )
    promotion: Literal["always", "if_better", "manual"] = Field(
        "if_better", description="When a finished training run becomes the active model version"
    )
    rescore: bool = Field(
        True,
        description="Rescore with the app's scoring methods when a model's active version changes",
    )
    nice: int = Field(
        10,
        ge=0,
        le=19,
        description="Niceness added to job processes, so interactive inference in the server wins the CPU",
    )

    @model_validator(mode="after")
    def _stale_after_several_beats(self) -> JobSettings:
        # A beat can be late (a busy machine, a database lock held by another writer): one or two
        # late beats must not make a live job look dead.
        if self.stale_after_s < STALE_BEATS * self.heartbeat_interval_s:
            raise ValueError(
                f"stale_after_s ({self.stale_after_s:g}) must be at least {STALE_BEATS} heartbeat "
                f"intervals ({STALE_BEATS} x {self.heartbeat_interval_s:g} s)"
            )
        return self


class RaySettings(BaseModel):
    """The Ray cluster that jobs run on when ``jobs.runner`` is ``ray`` (``LABELLOOP_RAY__ADDRESS``).

    Every node sees the data directory and the app folder at the same paths (a shared file system)
    and has the same Python environment; only the job's own process reads and writes the database.
    """

    address: str = Field(
        "auto",
        description="The cluster to join: its head's GCS address (host:port, as `ray start --head` "
        "prints it), or 'auto' for the cluster this machine's `ray start` joined",
    )
    train_workers: int = Field(
        1,
        ge=1,
        description="Ray Train workers of a training run (data-parallel ranks, one GPU each with GPUs)",
    )
    cpus_per_worker: float = Field(1.0, gt=0, description="CPUs each training worker reserves on the cluster")
    use_gpu: bool | None = Field(
        None, description="Train on GPUs, one per worker (unset: when the cluster has GPUs)"
    )
    task_cpus: float = Field(
        1.0, gt=0, description="CPUs each batch inference or scoring task (one per image) reserves"
    )
    task_gpus: float | None = Field(
        None,
        ge=0,
        description="GPUs each batch inference or scoring task reserves; fractions share one (unset: 1 "
        "when the cluster has GPUs, else 0)",
    )
    max_tasks_in_flight: int = Field(
        8, ge=1, description="Image tasks a job keeps submitted at once (the rest wait their turn)"
    )
    torch_threads: int | None = Field(
        None, ge=1, description="Threads torch uses in each task and training worker (unset: its CPUs)"
    )


class ActiveLearningSettings(BaseModel):
    """Leases and double reading."""

    lease_s: float = Field(1800.0, gt=0, description="How long an annotator holds an image they were given")
    reads: int = Field(
        1,
        ge=1,
        le=10,
        description="Annotators per image (double reading: 2); the image completes with that many",
    )


class AuthSettings(BaseModel):
    """Log-in, roles and tokens (``LABELLOOP_AUTH__ENABLED=true``), and an optional external OIDC issuer."""

    enabled: bool = Field(False, description="Require a log-in (a bearer token) on every API route")
    token_expiry_s: int = Field(
        3600, ge=60, le=30 * 86400, description="Lifetime of the access tokens POST /auth/token signs"
    )
    login_failures_per_minute: int = Field(
        10, ge=1, description="Failed log-ins per user and address in a minute before 429"
    )
    oidc_issuer: str | None = Field(
        None, description="Also accept bearer tokens of this OpenID Connect issuer (verified with its JWKS)"
    )
    oidc_audience: str | None = Field(None, description="The 'aud' the issuer's tokens must carry, if any")
    oidc_username_claim: str = Field("preferred_username", description="Claim that holds the user name")
    oidc_roles_claim: str = Field(
        "realm_access.roles", description="Dotted path of the claim that holds the roles (Keycloak's)"
    )
    oidc_jwks_cache_s: float = Field(
        300.0, gt=0, description="How long the issuer's keys are cached (an unknown key id refetches)"
    )


class DicomWebSettings(BaseModel):
    """A DICOMweb studies source (``--studies http://host/dicom-web``)."""

    username: str | None = Field(None, description="HTTP basic-auth user of the PACS")
    password: str | None = Field(None, description="HTTP basic-auth password of the PACS")
    modalities: list[str] = Field(
        default_factory=lambda: ["CT", "MR"], description="Series modalities to list"
    )
    timeout_s: float = Field(30.0, gt=0, description="Timeout of each request to the PACS")
    cache_bytes: int = Field(20 * 1024**3, gt=0, description="Disk budget of retrieved series, bytes")
    refresh_interval_s: float = Field(60.0, gt=0, description="How often new series and SEGs are looked for")
    wado_uri_url: str | None = Field(
        None,
        description="The PACS's WADO-URI endpoint, which /proxy/dicom/wado relays to (default: for a "
        "studies URL ending in /dicom-web, its sibling /wado, as Orthanc serves it)",
    )
    writeback_interval_s: float = Field(
        15.0,
        gt=0,
        description="How often the SEGs of saved final labels that have not reached the PACS are sent "
        "again; each SEG's own retries back off from this to an hour",
    )


class Settings(BaseSettings):
    """Everything the server and the CLI can be told; every field is also ``LABELLOOP_<NAME>``."""

    model_config = SettingsConfigDict(
        env_prefix="LABELLOOP_", env_nested_delimiter="__", extra="ignore", validate_default=True
    )

    app: Path = Field(Path("apps/radiology"), description="Folder of the app to serve")
    studies: str | None = Field(
        None,
        description="Folder of studies to register in place, or a DICOMweb URL (http://host/dicom-web)",
    )
    data_dir: Path = Field(
        default_factory=default_data_dir,
        description="Where the database, uploaded images, label versions and logs live",
    )
    host: str = Field("127.0.0.1", description="Address to listen on")
    port: int = Field(8000, ge=0, le=65535, description="Port to listen on")
    database_url: str | None = Field(
        None,
        description="SQLAlchemy URL; default: SQLite (WAL) at DATA_DIR/labelloop.db. "
        "PostgreSQL: postgresql+psycopg://user:pass@host/db",
    )
    log_level: str = Field("INFO", description="Log level of the server log")
    cors_origins: list[str] = Field(
        default_factory=list,
        description="Web origins whose pages may call the API (JSON list, e.g. an OHIF served elsewhere); "
        '"*" admits every origin but without credentials',
    )
    user: str = Field("admin", description="User name recorded while authentication is off")
    datastore: DatastoreSettings = Field(default_factory=DatastoreSettings)
    sessions: SessionSettings = Field(default_factory=SessionSettings)
    inference: InferenceSettings = Field(default_factory=InferenceSettings)
    jobs: JobSettings = Field(default_factory=JobSettings)
    ray: RaySettings = Field(default_factory=RaySettings)
    activelearning: ActiveLearningSettings = Field(default_factory=ActiveLearningSettings)
    dicomweb: DicomWebSettings = Field(default_factory=DicomWebSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    bundles: list[Path] = Field(
        default_factory=list, description="MONAI bundle folders to serve as extra models (JSON list)"
    )

    @property
    def resolved_database_url(self) -> str:
        """The database URL, defaulting to SQLite under the data directory."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'labelloop.db').resolve()}"

    @property
    def log_file(self) -> Path:
        """The server log that ``/logs/`` serves."""
        return self.data_dir / "logs" / "app.log"
