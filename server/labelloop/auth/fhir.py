"""The audit trail as FHIR R4 ``AuditEvent`` resources, for a hospital's audit repository.

An event's action, ``<noun>.<verb>`` or a bare verb, chooses its DICOM audit event type and FHIR action code.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, Literal

from labelloop.auth.audit import AuditEvent, canonical_json

__all__ = ["fhir_audit_event", "fhir_bundle"]


_DCM = "http://dicom.nema.org/resources/ontology/DCM"
_ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
_SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"
_Code = tuple[str, str]

# DICOM audit event types (PS3.16 CID 400), the codes of FHIR's audit-event-type value set.
_APPLICATION: _Code = ("110100", "Application Activity")
_AUDIT_LOG: _Code = ("110101", "Audit Log Used")
_EXPORT: _Code = ("110106", "Export")
_IMPORT: _Code = ("110107", "Import")
_PATIENT_RECORD: _Code = ("110110", "Patient Record")
_QUERY: _Code = ("110112", "Query")
_SECURITY_ALERT: _Code = ("110113", "Security Alert")
_AUTHENTICATION: _Code = ("110114", "User Authentication")

_AUTH_VERBS: dict[str, _Code] = {"login": ("110122", "Login"), "logout": ("110123", "Logout")}
# Changes to who may do what: Security Alert with its DICOM subtype (CID 403).
_SECURITY_NOUNS: dict[str, _Code] = {
    "user": ("110137", "User Security Attributes Changed"),
    "password": ("110137", "User Security Attributes Changed"),
    "token": ("110137", "User Security Attributes Changed"),
    "role": ("110136", "Security Roles Changed"),
    "key": ("110129", "Security Configuration"),
    "settings": ("110129", "Security Configuration"),
}
_PATIENT_NOUNS = frozenset({"image", "label", "session", "study", "series", "volume", "dataset", "datastore"})
_QUERY_VERBS = frozenset({"query", "search", "list", "find"})
# FHIR AuditEventAction; any other verb (log-in, query, inference, training) is E, Execute.
_ACTION_CODES = {
    **dict.fromkeys(("create", "upload", "save", "submit", "add", "import"), "C"),
    **dict.fromkeys(("read", "get", "view", "download", "fetch", "export"), "R"),
    **dict.fromkeys(("update", "edit", "change", "rename", "enable", "disable", "revoke", "rotate"), "U"),
    **dict.fromkeys(("delete", "remove", "purge"), "D"),
}


def _classify(action: str) -> tuple[_Code, _Code | None, str]:
    """The DICOM event type, subtype and FHIR action code of ``<noun>.<verb>`` (or a bare verb)."""
    parts = action.lower().split(".")
    noun, verb = parts[0], parts[-1]
    code = _ACTION_CODES.get(verb, "E")
    if verb in _AUTH_VERBS:
        return _AUTHENTICATION, _AUTH_VERBS[verb], code
    if noun == "audit":
        return _AUDIT_LOG, None, code
    if verb in ("export", "import"):
        return (_EXPORT if verb == "export" else _IMPORT), None, code
    if noun in _SECURITY_NOUNS:
        return _SECURITY_ALERT, _SECURITY_NOUNS[noun], code
    if verb in _QUERY_VERBS:
        return _QUERY, None, code
    return (_PATIENT_RECORD if noun in _PATIENT_NOUNS else _APPLICATION), None, code


def _coding(system: str, code: _Code) -> dict[str, str]:
    return {"system": system, "code": code[0], "display": code[1]}


def _agent(event: AuditEvent) -> dict[str, Any]:
    who = {"identifier": {"value": event.user}, "display": event.user}
    agent: dict[str, Any] = {"who": who, "requestor": True}
    if event.address:
        try:
            ipaddress.ip_address(event.address)
            kind = "2"  # IP address
        except ValueError:
            kind = "1"  # machine name
        agent["network"] = {"address": event.address, "type": kind}
    return agent


def _entity(event: AuditEvent) -> dict[str, Any] | None:
    """What the event was about: the target, with each detail as an ``entity.detail`` string."""
    details = [
        {"type": key, "valueString": value if isinstance(value, str) else canonical_json(value)}
        for key, value in sorted(event.details.items())
    ]
    if event.target is None and not details:
        return None
    entity: dict[str, Any] = {"type": _coding(_ENTITY_TYPE, ("2", "System Object"))}
    if event.target is not None:
        entity["what"] = {"identifier": {"value": event.target}, "display": event.target}
    if details:
        entity["detail"] = details
    return entity


def fhir_audit_event(event: AuditEvent) -> dict[str, Any]:
    """``event`` as a FHIR R4 ``AuditEvent`` resource (JSON), ``id`` its seq.

    ``type`` is a DICOM audit event type chosen by the action's noun and verb: ``login``/``logout``
    User Authentication (with its subtype), ``audit.*`` Audit Log Used, ``*.export``/``*.import``
    Export/Import, ``user.*``/``token.*``/``role.*`` Security Alert, ``*.list``/``*.search`` Query,
    ``image.*``/``label.*``/``session.*`` Patient Record, anything else Application Activity. A
    failure is outcome ``4`` (minor failure), with ``details["reason"]`` as ``outcomeDesc``.
    """
    event_type, subtype, action_code = _classify(event.action)
    resource: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "id": str(event.seq),
        "type": _coding(_DCM, event_type),
    }
    if subtype is not None:
        resource["subtype"] = [_coding(_DCM, subtype)]
    resource["action"] = action_code
    recorded = datetime.fromtimestamp(event.ts, UTC).isoformat(timespec="microseconds")
    resource["recorded"] = recorded.replace("+00:00", "Z")
    resource["outcome"] = "0" if event.outcome == "success" else "4"
    reason = event.details.get("reason")
    if event.outcome == "failure" and isinstance(reason, str):
        resource["outcomeDesc"] = reason
    resource["agent"] = [_agent(event)]
    resource["source"] = {
        "observer": {"display": "labelloop"},
        "type": [_coding(_SOURCE_TYPE, ("4", "Application Server"))],
    }
    if (entity := _entity(event)) is not None:
        resource["entity"] = [entity]
    return resource


def fhir_bundle(
    events: Iterable[AuditEvent], *, kind: Literal["collection", "searchset"] = "collection"
) -> dict[str, Any]:
    """A FHIR R4 ``Bundle`` of the events' ``AuditEvent`` resources: a ``collection`` (an export) or the
    ``searchset`` answering a query (each entry ``search.mode`` ``match``)."""
    entries: list[dict[str, Any]] = []
    for event in events:
        entry: dict[str, Any] = {"resource": fhir_audit_event(event)}
        if kind == "searchset":
            entry["search"] = {"mode": "match"}
        entries.append(entry)
    return {"resourceType": "Bundle", "type": kind, "entry": entries}
