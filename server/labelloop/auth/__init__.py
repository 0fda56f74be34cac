"""Users, roles, tokens, OIDC verification and the audit trail (each with its tables)."""

from labelloop.auth.audit import (
    GENESIS_HASH,
    AuditEvent,
    AuditTrail,
    AuditVerification,
)
from labelloop.auth.fhir import fhir_audit_event, fhir_bundle
from labelloop.auth.keys import SigningKey, SigningKeys
from labelloop.auth.oidc import OidcVerifier
from labelloop.auth.roles import (
    ADMIN,
    ANNOTATOR,
    REVIEWER,
    ROLES,
    USER,
    Principal,
    Role,
    includes,
    parse_role,
)
from labelloop.auth.service import ISSUER, AccessToken, Auth
from labelloop.auth.users import TOKEN_PREFIX, USER_NAME, ApiToken, User, UserStore

__all__ = [
    "ADMIN",
    "ANNOTATOR",
    "GENESIS_HASH",
    "ISSUER",
    "REVIEWER",
    "ROLES",
    "TOKEN_PREFIX",
    "USER",
    "USER_NAME",
    "AccessToken",
    "ApiToken",
    "AuditEvent",
    "AuditTrail",
    "AuditVerification",
    "Auth",
    "OidcVerifier",
    "Principal",
    "Role",
    "SigningKey",
    "SigningKeys",
    "User",
    "UserStore",
    "fhir_audit_event",
    "fhir_bundle",
    "includes",
    "parse_role",
]
