"""MONAI Label's roles, made hierarchical: user ⊂ annotator ⊂ reviewer ⊂ admin.

The reference accepts exactly one role per endpoint, so an admin gets 403 on user endpoints;
here a role includes every role below it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["ADMIN", "ANNOTATOR", "REVIEWER", "ROLES", "USER", "Principal", "Role", "includes", "parse_role"]

Role = Literal["monailabel-user", "monailabel-annotator", "monailabel-reviewer", "monailabel-admin"]

USER: Role = "monailabel-user"
ANNOTATOR: Role = "monailabel-annotator"
REVIEWER: Role = "monailabel-reviewer"
ADMIN: Role = "monailabel-admin"

#: Lowest first; each role includes the ones before it.
ROLES: tuple[Role, ...] = (USER, ANNOTATOR, REVIEWER, ADMIN)


def parse_role(name: str) -> Role:
    """``name`` as a role; ``ValueError`` naming the roles otherwise."""
    for role in ROLES:
        if name == role:
            return role
    raise ValueError(f"unknown role {name!r}; roles are {', '.join(ROLES)}")


def includes(held: Iterable[str], required: Role) -> bool:
    """Whether any role in ``held`` is ``required`` or above it (unknown names count for nothing)."""
    rank = ROLES.index(required)
    return any(name in ROLES and ROLES.index(name) >= rank for name in held)


@dataclass(frozen=True)
class Principal:
    """Who a request acts for.

    Attributes:
        name: the user name recorded with everything they do.
        roles: the roles they hold (as granted; ``includes`` applies the hierarchy).
        via: how they were recognised: ``anonymous`` (auth off), ``password`` (a JWT this server
            signed), ``api_token``, or ``oidc`` (a token of the external issuer).
    """

    name: str
    roles: frozenset[str] = field(default_factory=frozenset)
    via: Literal["anonymous", "password", "api_token", "oidc"] = "anonymous"

    def has(self, required: Role) -> bool:
        return includes(self.roles, required)
