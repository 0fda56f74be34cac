"""The audit trail over HTTP: which routes are recorded and as what, the middleware that records
them, and ``GET /audit/`` (as JSON, or as a FHIR R4 ``Bundle`` of ``AuditEvent``).

An audited request is written to the trail when its answer starts, *before* the client gets a byte,
so no image or label leaves the server unrecorded; the request's outcome is ``failure`` for a 4xx or
5xx (a refused log-in, a 403, a 404 for a missing case). Log-ins are recorded by ``Auth.login``
itself; user and token changes by the ``labelloop user`` commands.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from urllib.parse import parse_qsl

import anyio.to_thread
from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy import Connection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from labelloop.api import schemas
from labelloop.api.deps import ServicesDep, epoch_seconds
from labelloop.auth import AuditEvent, AuditTrail, fhir_bundle

__all__ = ["AUDITED", "AuditMiddleware", "PendingAudit", "pending_audit", "router"]

logger = logging.getLogger(__name__)
_UNAVAILABLE = b'{"detail":"The audit trail is unavailable; try again shortly"}'

#: (method, route path) -> the action recorded: reads of patient data, and every change.
AUDITED: dict[tuple[str, str], str] = {
    ("GET", "/datastore/image"): "image.download",
    ("GET", "/datastore/image/info"): "image.read",
    ("PUT", "/datastore/image"): "image.upload",
    ("PUT", "/datastore/"): "image.upload",
    ("PUT", "/datastore/image/info"): "image.update",
    ("DELETE", "/datastore/image"): "image.delete",
    ("DELETE", "/datastore/"): "image.delete",
    ("GET", "/datastore/label"): "label.download",
    ("GET", "/datastore/label/info"): "label.read",
    ("GET", "/datastore/label/versions"): "label.read",
    ("GET", "/measurements/patients/{patient_id}"): "label.read",
    ("PUT", "/datastore/label"): "label.save",
    ("PUT", "/datastore/label/info"): "label.update",
    ("PUT", "/datastore/updatelabelinfo"): "label.update",
    ("DELETE", "/datastore/label"): "label.delete",
    ("GET", "/datastore/dataset"): "dataset.export",
    ("POST", "/infer/{model}"): "image.infer",
    ("POST", "/activelearning/{strategy}"): "image.assign",
    ("PUT", "/session/"): "session.create",
    ("GET", "/session/{session_id}"): "session.download",
    ("DELETE", "/session/{session_id}"): "session.delete",
    ("GET", "/proxy/dicom/wado/{path:path}"): "study.download",
    ("GET", "/proxy/dicom/qido/{path:path}"): "study.query",
    ("POST", "/proxy/dicom/stow/{path:path}"): "study.upload",
    ("POST", "/proxy/dicom/wado/{path:path}"): "study.upload",
    ("POST", "/proxy/dicom/{path:path}"): "study.upload",
    ("GET", "/proxy/dicom/wado"): "study.download",
    ("POST", "/train/{model}"): "training.start",
    ("POST", "/train/"): "training.start",
    ("DELETE", "/train/"): "training.stop",
    ("POST", "/batch/infer/{model}"): "batch.start",
    ("DELETE", "/batch/infer"): "batch.stop",
    ("GET", "/model/{model}"): "model.download",
    ("PUT", "/model/{model}"): "model.upload",
    ("DELETE", "/model/{model}"): "model.delete",
    ("POST", "/model/{model}/versions/{version}/activate"): "model.activate",
    ("GET", "/logs/"): "logs.read",
    ("GET", "/audit/"): "audit.read",
}

# Methods whose audited routes may record their event in their own transaction (PendingAudit).
_CHANGES = frozenset({"PUT", "POST", "DELETE"})

# Query parameters that name what a request acts on (with the path parameters).
_TARGET_PARAMS = ("image", "label", "id", "tag", "version", "model")


def _target(scope: Scope) -> str | None:
    parts = [f"{k}={v}" for k, v in scope.get("path_params", {}).items()]
    query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
    parts += [f"{k}={query[k]}" for k in _TARGET_PARAMS if k in query]
    return " ".join(parts) or None


def _event(scope: Scope, action: str, status: int) -> dict[str, Any]:
    """The audit event of ``scope``'s request answered ``status``, as ``AuditTrail.record`` takes it."""
    principal = scope.get("state", {}).get("principal")
    client = scope.get("client")
    return {
        "action": action,
        "user": principal.name if principal is not None else "anonymous",
        "outcome": "success" if status < 400 else "failure",
        "target": _target(scope),
        "address": client[0] if client else None,
        "details": {"method": scope["method"], "path": scope["path"], "status": status},
    }


@dataclass
class PendingAudit:
    """An audited request's event, which its route may write inside its own write transaction.

    A change that commits its event with it spares a transaction (and, on SQLite, a commit's fsync)
    of its own, and the two stand or fall together. The middleware then writes nothing more for a
    successful answer; a failed one is still recorded as a failure when its answer starts.
    """

    scope: Scope
    trail: AuditTrail
    recorded: bool = False

    def record_in(self, conn: Connection, status: int = 200) -> None:
        """Write the event (answered ``status``) in ``conn``'s write transaction, if the matched route
        is audited."""
        action = _action(self.scope)
        if action is None or self.recorded:
            return
        self.trail.record_in(conn, **_event(self.scope, action, status))
        self.recorded = True


def _action(scope: Scope) -> str | None:
    return AUDITED.get((scope["method"], getattr(scope.get("route"), "path", "")))


def pending_audit(scope: Scope) -> PendingAudit | None:
    """The event ``AuditMiddleware`` will record for this request, for routes that record it first."""
    pending = scope.get("state", {}).get("audit")
    return pending if isinstance(pending, PendingAudit) else None


class AuditMiddleware:
    """Record each audited request (``AUDITED``) in the trail before its answer goes out.

    Innermost of the middlewares: the route has been matched (``scope["route"]``) and
    ``permissions.authorize`` has put the principal in ``scope["state"]`` by the time the answer
    starts. If the trail cannot be written, the request answers 503 instead of going unrecorded.
    A route may write its event in its own transaction first (``pending_audit``); a successful answer
    is then not recorded a second time.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        pending: PendingAudit | None = None
        state = scope.setdefault("state", {})
        trail = getattr(getattr(scope["app"].state, "services", None), "audit", None)
        if trail is not None and scope["method"] in _CHANGES:
            # The route is matched later; the action is looked up again when the answer starts.
            pending = PendingAudit(scope, trail)
            state["audit"] = pending

        async def recording_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                action = _action(scope)
                status = message["status"]
                done = pending is not None and pending.recorded and status < 400
                recorded = action is None or done or await self._record(scope, action, status)
                if not recorded and scope["method"] in ("GET", "HEAD"):
                    # A read goes out recorded or not at all; a change has happened already, so its
                    # answer goes out (its own row names who made it) and the failure is logged.
                    await send(
                        {**message, "status": 503, "headers": [(b"content-type", b"application/json")]}
                    )
                    await send({"type": "http.response.body", "body": _UNAVAILABLE})
                    raise _Unrecorded()
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        except _Unrecorded:
            return

    async def _record(self, scope: Scope, action: str, status: int) -> bool:
        trail: AuditTrail = scope["app"].state.services.audit
        event = _event(scope, action, status)
        try:
            await anyio.to_thread.run_sync(lambda: trail.record(**event))
        except Exception:
            logger.exception("could not write the audit trail for %s %s", scope["method"], scope["path"])
            return False
        return True


class _Unrecorded(Exception):
    """The answer was replaced by a 503 because the trail could not be written."""


# ------------------------------------------------------------ GET /audit/

router = APIRouter(prefix="/audit", tags=["audit"], responses=schemas.AUTH_ERRORS)


class AuditEventRead(BaseModel):
    """One row of the trail, with its place in the hash chain."""

    seq: int
    ts: float = Field(description="Epoch seconds (UTC)")
    time: str = Field(description="ISO 8601, UTC")
    user: str
    action: str = Field(description="<noun>.<verb>, e.g. label.download, or login")
    outcome: Literal["success", "failure"]
    target: str | None
    address: str | None
    details: dict[str, Any]
    prev_hash: str
    hash: str

    @classmethod
    def of(cls, event: AuditEvent) -> AuditEventRead:
        when = datetime.fromtimestamp(event.ts, UTC).isoformat().replace("+00:00", "Z")
        return cls(**{**event.__dict__, "time": when})


class AuditPage(BaseModel):
    events: list[AuditEventRead]
    next_after_seq: int | None = Field(description="Pass as after_seq for the next page; null at the end")


@router.get(
    "/",
    summary="The audit trail (admin): who read and changed what, as JSON or FHIR AuditEvent",
    response_model=AuditPage,
    responses={
        200: {
            "description": "JSON, or with format=fhir a FHIR R4 Bundle of AuditEvent resources",
            "content": {"application/fhir+json": {"schema": {"type": "object"}}},
        },
        **schemas.errors(422, 503),
    },
)
async def audit_events(
    services: ServicesDep,
    since: Annotated[str | None, Query(description="From (inclusive): epoch seconds or ISO 8601")] = None,
    until: Annotated[str | None, Query(description="Until (exclusive): epoch seconds or ISO 8601")] = None,
    user: Annotated[str | None, Query(max_length=256)] = None,
    action: Annotated[str | None, Query(max_length=64, description="e.g. label.download, login")] = None,
    after_seq: Annotated[int | None, Query(ge=0, le=2**62, description="Page after this seq")] = None,
    limit: Annotated[int, Query(ge=1, le=10000)] = 1000,
    format: Annotated[Literal["json", "fhir"], Query()] = "json",
) -> Any:
    trail = services.audit
    start, end = epoch_seconds(since, "since"), epoch_seconds(until, "until")
    events = await anyio.to_thread.run_sync(
        lambda: trail.events(
            since=start, until=end, user=user, action=action, limit=limit, after_seq=after_seq
        )
    )
    if format == "fhir":
        return JSONResponse(fhir_bundle(events, kind="searchset"), media_type="application/fhir+json")
    more = after_seq is not None and len(events) == limit
    return AuditPage(
        events=[AuditEventRead.of(e) for e in events], next_after_seq=events[-1].seq if more else None
    )
