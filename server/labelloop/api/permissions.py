"""Who may call what: the one table of the role every route needs, and the check that applies it.

Roles are hierarchical (``labelloop.auth.roles``): a route that needs ``monailabel-user`` admits
every role. With auth off everyone acts as the configured user with every role. The README's role
table is this table; a test keeps them equal, and ``check_routes`` refuses to start a server with a
route that is not in it.
"""

from __future__ import annotations

from collections.abc import Iterable
from http.cookies import CookieError, SimpleCookie

import anyio.to_thread
from fastapi import Request
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from labelloop.api.docs import DOCS_PATHS
from labelloop.api.ohif import OHIF_PREFIX
from labelloop.api.web import WEB_PATHS
from labelloop.auth import ADMIN, ANNOTATOR, REVIEWER, USER, Auth, Principal, Role
from labelloop.errors import AuthenticationError, PermissionDeniedError

__all__ = [
    "COOKIE_PATHS",
    "OPEN_PATHS",
    "SESSION_COOKIE",
    "PUBLIC",
    "ROUTE_ROLES",
    "AuthenticationMiddleware",
    "authorize",
    "check_routes",
    "cookie_signed_in",
    "principal_of",
]

#: Answered without a log-in even when auth is on: MONAI Label's clients log in through the first
#: two; load balancers and container health checks call the third.
PUBLIC: frozenset[tuple[str, str]] = frozenset(
    {("GET", "/auth/"), ("POST", "/auth/token"), ("DELETE", "/auth/token"), ("GET", "/health")}
)

#: The cookie ``POST /auth/token`` sets beside the token it answers (HttpOnly, SameSite=Strict): the
#: log-in of a page that cannot send a bearer token (OHIF, served at ``/ohif/``).
SESSION_COOKIE = "labelloop_session"
#: The only paths where the cookie stands for a bearer token: the DICOMweb proxy that OHIF reads
#: and stores through. SameSite=Strict keeps it off other sites' requests, and STOW-RS's
#: ``multipart/related`` is no content type a cross-site form can send without CORS's consent.
COOKIE_PATHS: tuple[str, ...] = ("/proxy/dicom/",)

#: Paths open without a log-in: the log-in routes, the API's own description and explorer, and the
#: dashboard's page and files (no data in them: the page reads the API with the user's token).
OPEN_PATHS: frozenset[str] = frozenset(
    {path for _, path in PUBLIC} | {"/openapi.json"} | DOCS_PATHS | WEB_PATHS | {OHIF_PREFIX.rstrip("/")}
)
#: ... and every path under these: OHIF's site (its files hold no data; ``api/ohif.py``).
OPEN_PREFIXES: tuple[str, ...] = (OHIF_PREFIX,)

#: (method, route path) -> the lowest role that may call it.
ROUTE_ROLES: dict[tuple[str, str], Role] = {
    # reading: info, the datastore, inference, next sample, sessions, task status
    ("GET", "/info/"): USER,
    ("GET", "/auth/token/valid"): USER,
    ("GET", "/datastore/"): USER,
    ("GET", "/datastore/image"): USER,
    ("HEAD", "/datastore/image"): USER,
    ("GET", "/datastore/image/info"): USER,
    ("GET", "/datastore/label"): USER,
    ("HEAD", "/datastore/label"): USER,
    ("GET", "/datastore/label/info"): USER,
    ("GET", "/datastore/label/versions"): USER,
    ("POST", "/infer/{model}"): USER,
    ("POST", "/activelearning/{strategy}"): USER,
    ("GET", "/activelearning/{strategy}/ranking"): USER,
    ("DELETE", "/activelearning/lease"): USER,
    ("PUT", "/session/"): USER,
    ("GET", "/session/{session_id}"): USER,
    ("DELETE", "/session/{session_id}"): USER,
    ("GET", "/train/"): USER,
    ("GET", "/train/{task_id}"): USER,
    ("GET", "/scoring/"): USER,
    ("GET", "/batch/infer"): USER,
    ("GET", "/model/info/{model}"): USER,
    ("GET", "/model/{model}/versions"): USER,
    ("GET", "/proxy/dicom/qido/{path:path}"): USER,
    ("GET", "/proxy/dicom/wado"): USER,
    ("GET", "/proxy/dicom/wado/{path:path}"): USER,
    ("GET", "/proxy/dicom/{path:path}"): USER,
    # annotating: upload images, save labels and label info, store DICOM to the PACS
    ("PUT", "/datastore/image"): ANNOTATOR,
    ("PUT", "/datastore/"): ANNOTATOR,
    ("PUT", "/datastore/image/info"): ANNOTATOR,
    ("PUT", "/datastore/label"): ANNOTATOR,
    ("PUT", "/datastore/label/info"): ANNOTATOR,
    ("PUT", "/datastore/updatelabelinfo"): ANNOTATOR,
    ("POST", "/proxy/dicom/stow/{path:path}"): ANNOTATOR,
    ("POST", "/proxy/dicom/wado/{path:path}"): ANNOTATOR,
    ("POST", "/proxy/dicom/{path:path}"): ANNOTATOR,
    # reviewing: everyone's work, dataset export
    ("GET", "/activelearning/leases"): REVIEWER,
    ("GET", "/datastore/progress"): REVIEWER,
    ("GET", "/measurements/patients/{patient_id}"): REVIEWER,
    ("GET", "/datastore/pacs"): REVIEWER,
    ("GET", "/activelearning/skips"): REVIEWER,
    ("GET", "/activelearning/agreement"): REVIEWER,
    ("GET", "/datastore/dataset"): REVIEWER,
    # administering: delete, train and stop, batch inference and scoring, model weights, logs, the audit trail
    ("DELETE", "/datastore/image"): ADMIN,
    ("DELETE", "/datastore/"): ADMIN,
    ("DELETE", "/datastore/label"): ADMIN,
    ("POST", "/train/{model}"): ADMIN,
    ("POST", "/train/"): ADMIN,
    ("DELETE", "/train/"): ADMIN,
    ("POST", "/batch/infer/{model}"): ADMIN,
    ("POST", "/scoring/{method}"): ADMIN,
    ("POST", "/scoring/"): ADMIN,
    ("DELETE", "/scoring/"): ADMIN,
    ("DELETE", "/batch/infer"): ADMIN,
    ("GET", "/model/{model}"): ADMIN,
    ("PUT", "/model/{model}"): ADMIN,
    ("DELETE", "/model/{model}"): ADMIN,
    ("POST", "/model/{model}/versions/{version}/activate"): ADMIN,
    ("GET", "/logs/"): ADMIN,
    ("GET", "/logs/gpu"): ADMIN,
    ("GET", "/metrics"): ADMIN,
    ("GET", "/audit/"): ADMIN,
}


def check_routes(routes: Iterable[object]) -> None:
    """Refuse an app with a route that the table does not name (a new route must say who may call it)."""
    missing = [
        f"{method} {route.path}"
        for route in routes
        if isinstance(route, APIRoute)
        for method in sorted(route.methods or ())
        if (method, route.path) not in ROUTE_ROLES and (method, route.path) not in PUBLIC
    ]
    if missing:
        raise RuntimeError(f"routes without a role in labelloop.api.permissions.ROUTE_ROLES: {missing}")


class AuthenticationMiddleware:
    """Who calls: the bearer token checked before anything else, the request body included.

    A request without a valid token gets 401 (``{"detail"}`` with ``WWW-Authenticate: Bearer``, as
    MONAI Label answers) before a byte of its body is read, so an anonymous client cannot make the
    server spool or parse an upload. The principal goes to ``scope["state"]["principal"]``; with auth
    off it is the configured user with every role.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        auth: Auth = scope["app"].state.services.auth
        principal = auth.anonymous
        if auth.enabled and scope["path"] not in OPEN_PATHS and not scope["path"].startswith(OPEN_PREFIXES):
            header = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"authorization"), None)
            if header is None and scope["path"].startswith(COOKIE_PATHS):
                header = cookie_authorization(scope)
            try:
                principal = await anyio.to_thread.run_sync(auth.principal, header)
            except AuthenticationError as exc:
                answer = JSONResponse(
                    {"detail": exc.message}, status_code=401, headers={"WWW-Authenticate": "Bearer"}
                )
                await answer(scope, receive, send)
                return
        scope.setdefault("state", {})["principal"] = principal
        await self.app(scope, receive, send)


def cookie_authorization(scope: Scope) -> str | None:
    """``Bearer <token>`` from the request's ``labelloop_session`` cookie, or None."""
    for key, value in scope["headers"]:
        if key == b"cookie":
            jar = SimpleCookie()
            try:
                jar.load(value.decode("latin-1"))
            except CookieError:
                return None
            if SESSION_COOKIE in jar and jar[SESSION_COOKIE].value:
                return f"Bearer {jar[SESSION_COOKIE].value}"
    return None


async def cookie_signed_in(request: Request) -> bool:
    """Whether the request's session cookie is a valid log-in (what the proxy will accept)."""
    authorization = cookie_authorization(request.scope)
    if authorization is None:
        return False
    auth: Auth = request.app.state.services.auth
    try:
        await anyio.to_thread.run_sync(auth.principal, authorization)
    except AuthenticationError:
        return False
    return True


def principal_of(request: Request) -> Principal:
    """The principal ``AuthenticationMiddleware`` found for this request."""
    principal: Principal = request.state.principal
    return principal


def authorize(request: Request) -> None:
    """Every route's first dependency: may the caller's role call this route?

    ``PermissionDeniedError`` (403, MONAI Label's wording) if not.
    """
    route = request.scope.get("route")
    key = (request.method, getattr(route, "path", ""))
    if key in PUBLIC:
        return
    required = ROUTE_ROLES.get(key, ADMIN)
    if not principal_of(request).has(required):
        raise PermissionDeniedError(f'Role "{required}" is required to perform this action')
