"""``GET /info/``: the app descriptor MONAI Label clients build their UI from."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from labelloop.api.deps import ServicesDep

__all__ = ["router"]

router = APIRouter(tags=["info"])


@router.get("/info/", summary="App descriptor: labels, models, trainers, strategies, stats")
def info(services: ServicesDep) -> dict[str, Any]:
    app = services.app
    # No top-level "config": Slicer refuses to work with a server whose info has one.
    return {
        "name": app.name,
        "description": app.description,
        "version": app.version,
        "labels": app.label_names,
        "models": {},
        "trainers": {},
        "strategies": {},
        "scoring": {},
        "train_stats": {},
        "datastore": services.datastore.views.stats(),
    }
