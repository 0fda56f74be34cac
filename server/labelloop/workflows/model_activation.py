"""Changing the model version inference serves: the registry's activation and the rescoring it calls for.

Scores that strategies rank by came from the version being replaced, so every activation
(an upload, a promotion by hand, a rollback) stops the scoring jobs still running with the old
version and queues the scoring methods that read the model. The new active version and those
job changes are one transaction: there is never an active version whose rescoring was lost, nor
a scoring job told too late that its version is gone. A promotion at the end of a training run
does the same inside the jobs package (``jobs.training``), which owns that run.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Connection

from labelloop.errors import ConflictError, InvalidParamsError
from labelloop.inference import InferenceService
from labelloop.jobs import JobService
from labelloop.registry import ModelVersion, Registry

__all__ = ["activate_version", "publish_upload"]


def _needs_weights(inference: InferenceService, model: str) -> None:
    if not inference.spec(model).needs_weights:
        raise ConflictError(f"Model '{model}' takes no weights from the registry")


def activate_version(
    registry: Registry, jobs: JobService, inference: InferenceService, model: str, version: int, user: str
) -> ModelVersion:
    """Serve ``version`` of ``model`` (promotion or rollback), stop scoring with the version it
    replaces and queue its rescoring, atomically."""
    _needs_weights(inference, model)

    def rescore(conn: Connection, active: ModelVersion) -> None:
        jobs.version_changed_in(conn, model, active.version, user, cause="activate")

    return registry.activate(model, version, in_transaction=rescore)


def publish_upload(
    registry: Registry, jobs: JobService, inference: InferenceService, model: str, weights: Path, user: str
) -> ModelVersion:
    """Publish uploaded ``weights`` as the active version of ``model`` and queue its rescoring.

    The weights must load into the model's network first (on the CPU); otherwise
    ``InvalidParamsError`` and nothing is stored.
    """
    _needs_weights(inference, model)
    try:
        inference.task(model).load(weights, "cpu")
    except Exception as exc:
        raise InvalidParamsError(f"The weights do not load into model '{model}': {exc}") from exc

    def rescore(conn: Connection, active: ModelVersion) -> None:
        jobs.version_changed_in(conn, model, active.version, user, cause="upload")

    return registry.publish(model, weights, source="upload", user=user, activate=True, in_transaction=rescore)
