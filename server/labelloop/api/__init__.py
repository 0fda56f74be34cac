"""HTTP only: one router per resource; parse, call a service, shape the MONAI Label response."""

from labelloop.api.deps import Services
from labelloop.api.errors import CatchAllMiddleware, install_error_handlers
from labelloop.api.limits import BodySizeLimitMiddleware
from labelloop.api.routers import ROUTERS

__all__ = ["ROUTERS", "BodySizeLimitMiddleware", "CatchAllMiddleware", "Services", "install_error_handlers"]
