"""The one place where domain errors become HTTP responses: ``{"detail": message}``."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from labelloop.datastore import PacsError
from labelloop.errors import (
    AlreadyRunningError,
    AuthenticationError,
    BusyError,
    ConflictError,
    FeatureDisabledError,
    GeometryMismatchError,
    ImageFormatError,
    ImageReadError,
    InvalidIdError,
    InvalidInputError,
    InvalidParamsError,
    LabelloopError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    QuotaExceededError,
    StorageFullError,
    TooManyAttemptsError,
)

__all__ = ["STATUS_BY_ERROR", "status_for", "install_error_handlers", "CatchAllMiddleware"]

logger = logging.getLogger(__name__)

#: Most specific first; the first class an error is an instance of decides its status.
STATUS_BY_ERROR: tuple[tuple[type[LabelloopError], int], ...] = (
    (InvalidIdError, 400),
    (InvalidParamsError, 422),
    (InvalidInputError, 400),
    (NotFoundError, 404),
    (ImageFormatError, 415),
    (ImageReadError, 422),
    (GeometryMismatchError, 422),
    (PayloadTooLargeError, 413),
    (AlreadyRunningError, 429),
    (ConflictError, 409),
    (FeatureDisabledError, 406),
    (BusyError, 503),
    (AuthenticationError, 401),
    (PermissionDeniedError, 403),
    (TooManyAttemptsError, 429),
    (QuotaExceededError, 429),
    (StorageFullError, 507),
    (PacsError, 502),
)


def status_for(exc: LabelloopError) -> int:
    """The HTTP status of a domain error (500 for the root class and anything unmapped)."""
    for cls, status in STATUS_BY_ERROR:
        if isinstance(exc, cls):
            return status
    return 500


async def _labelloop_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, LabelloopError)
    status = status_for(exc)
    if status >= 500:
        logger.error("request failed: %s", exc.message, exc_info=exc)
    # OAuth 2 bearer (RFC 6750): a 401 says which scheme to use, as MONAI Label's does.
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"detail": exc.message}, status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    """Map the ``LabelloopError`` tree onto status codes."""
    app.add_exception_handler(LabelloopError, _labelloop_error)


class CatchAllMiddleware:
    """Turn an unexpected exception into a JSON 500 *inside* the CORS middleware.

    Starlette answers unhandled errors in its outermost middleware, past CORS, so browsers
    (OHIF) would see a network error instead of a 500 (MONAI Label's bug 24).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            logger.exception("unhandled error in %s %s", scope.get("method"), scope.get("path"))
            if started:
                raise
            response = JSONResponse({"detail": "Internal server error; see the server log"}, status_code=500)
            await response(scope, receive, send)
