"""``/auth/``: log-in for MONAI Label's clients (section 2.11), mounted only while auth is on.

With auth off these paths answer 404, which is how Slicer and the Python client learn that no
log-in is needed.
"""

from __future__ import annotations

from typing import Annotated, Any

import anyio.to_thread
from fastapi import APIRouter, Form, Request, Response
from pydantic import BaseModel, Field

from labelloop.api import schemas
from labelloop.api.deps import PrincipalDep, ServicesDep
from labelloop.api.permissions import SESSION_COOKIE
from labelloop.errors import InvalidParamsError

__all__ = ["router"]

router = APIRouter(prefix="/auth", tags=["auth"])


class AuthInfoRead(BaseModel):
    enabled: bool = Field(description="Always true here: with auth off, /auth/ answers 404")
    client_id: str
    realm: str = Field(description="The OIDC issuer whose tokens are accepted too, else labelloop")
    token_endpoint: str
    token_expiry_s: int


class TokenRead(BaseModel):
    """OAuth 2's token response (RFC 6749 section 5.1)."""

    access_token: str
    token_type: str = Field(description="Bearer")
    expires_in: int = Field(description="Seconds")


class WhoRead(BaseModel):
    username: str
    roles: list[str]
    via: str = Field(description="password, api_token or oidc")


@router.get("/", summary="Whether auth is on, and where tokens come from", response_model=AuthInfoRead)
def auth_info(services: ServicesDep) -> dict[str, Any]:
    settings = services.settings.auth
    return {
        "enabled": True,
        "client_id": "labelloop",
        "realm": settings.oidc_issuer or "labelloop",
        "token_endpoint": "/auth/token",
        "token_expiry_s": settings.token_expiry_s,
    }


@router.post(
    "/token",
    summary="Log in with a user name and password (OAuth 2 password grant)",
    response_model=TokenRead,
    responses=schemas.errors(401, 422, 429),
)
async def token(
    services: ServicesDep,
    request: Request,
    response: Response,
    username: Annotated[str, Form(max_length=256)],
    password: Annotated[str, Form(max_length=1024)],
    grant_type: Annotated[str | None, Form()] = None,
) -> dict[str, Any]:
    if grant_type not in (None, "", "password"):
        raise InvalidParamsError("Only grant_type=password is supported")
    address = request.client.host if request.client else None
    issued = await anyio.to_thread.run_sync(services.auth.login, username, password, address)
    # The same token as a cookie, for the pages that cannot send one (OHIF at /ohif/): only the
    # DICOMweb proxy reads it; MONAI Label's clients ignore it.
    response.set_cookie(
        SESSION_COOKIE,
        issued.access_token,
        max_age=issued.expires_in,
        path="/",
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )
    return {
        "access_token": issued.access_token,
        "token_type": issued.token_type,
        "expires_in": issued.expires_in,
    }


@router.delete(
    "/token",
    summary="Log this browser out: forget the session cookie that POST /auth/token set",
    status_code=204,
    response_class=Response,
)
def forget_cookie(request: Request) -> Response:
    answer = Response(status_code=204)
    answer.delete_cookie(
        SESSION_COOKIE, path="/", secure=request.url.scheme == "https", httponly=True, samesite="strict"
    )
    return answer


@router.get(
    "/token/valid",
    summary="Who the bearer token belongs to, with their roles",
    response_model=WhoRead,
    responses=schemas.AUTH_ERRORS,
)
def token_valid(principal: PrincipalDep) -> dict[str, Any]:
    return {"username": principal.name, "roles": sorted(principal.roles), "via": principal.via}
