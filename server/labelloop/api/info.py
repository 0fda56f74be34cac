"""``GET /info/``: the app descriptor MONAI Label clients build their UI from."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from labelloop.api import schemas
from labelloop.api.deps import ServicesDep

__all__ = ["router"]

router = APIRouter(tags=["info"], responses=schemas.AUTH_ERRORS)


def _model(services: ServicesDep, name: str) -> dict[str, Any]:
    spec = services.inference.spec(name)
    return {
        "type": spec.type,
        "description": spec.description,
        "labels": dict(spec.labels) if spec.labels else [],
        "dimension": spec.dimension,
        "config": dict(spec.config),
        # ours, additive: whether it can run yet, and on which weights
        **services.inference.state(name),
    }


@router.get(
    "/info/",
    summary="App descriptor: labels, models, trainers, strategies, stats",
    response_model=schemas.InfoRead,
)
def info(services: ServicesDep) -> dict[str, Any]:
    # One read transaction for the reads of every service below (one view of them, one BEGIN).
    with services.datastore.db.snapshot():
        return _info(services)


def _info(services: ServicesDep) -> dict[str, Any]:
    app = services.app
    # No top-level "config": Slicer refuses to work with a server whose info has one.
    return {
        "name": app.name,
        "description": app.description,
        "version": app.version,
        "labels": app.label_names,
        # ours, additive: which labels are lesions (their measurements count lesions)
        "lesions": [name for name in app.label_names if name in app.lesions],
        "models": {name: _model(services, name) for name in services.inference.names},
        "trainers": services.jobs.trainers(),
        "strategies": services.activelearning.describe(),
        "scoring": services.jobs.scoring_methods(),
        "train_stats": services.jobs.train_stats(),
        # ours, additive: when training starts by itself, which trainers and with which options
        "autotrain": services.jobs.autotrain_plan(),
        "datastore": services.datastore.views.stats(),
        # ours, additive: whether images come from a PACS (then GET /datastore/pacs says how it goes)
        "pacs": services.pacs is not None,
    }
