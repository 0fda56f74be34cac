"""HTTP only: one router per resource; parse, authorize, call a service or a workflow, shape the response."""

from labelloop.api.audit import AUDITED, AuditMiddleware
from labelloop.api.audit import router as audit_router
from labelloop.api.auth import router as auth_router
from labelloop.api.deps import Services
from labelloop.api.docs import mount_docs
from labelloop.api.errors import CatchAllMiddleware, install_error_handlers
from labelloop.api.health import router as health_router
from labelloop.api.limits import BodySizeLimitMiddleware
from labelloop.api.metrics import Metrics, MetricsMiddleware
from labelloop.api.ohif import mount_ohif
from labelloop.api.permissions import (
    PUBLIC,
    ROUTE_ROLES,
    AuthenticationMiddleware,
    authorize,
    check_routes,
    cookie_signed_in,
)
from labelloop.api.routers import ROUTERS, build_routes
from labelloop.api.web import mount_web

__all__ = [
    "AUDITED",
    "PUBLIC",
    "ROUTERS",
    "ROUTE_ROLES",
    "AuditMiddleware",
    "AuthenticationMiddleware",
    "BodySizeLimitMiddleware",
    "CatchAllMiddleware",
    "Metrics",
    "MetricsMiddleware",
    "Services",
    "audit_router",
    "authorize",
    "build_routes",
    "auth_router",
    "check_routes",
    "cookie_signed_in",
    "health_router",
    "install_error_handlers",
    "mount_docs",
    "mount_ohif",
    "mount_web",
]
