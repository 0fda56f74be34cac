"""What routers receive: the services ``create_app`` wired, the current user, request helpers."""

from __future__ import annotations

import json
import math
import re
import shutil
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, Request, Response, UploadFile
from fastapi.dependencies.models import Dependant
from pydantic import BaseModel

from labelloop.activelearning import ActiveLearning
from labelloop.api.permissions import principal_of
from labelloop.auth import AuditTrail, Auth, Principal
from labelloop.datastore import Datastore, PacsLink, Provenance
from labelloop.errors import InvalidInputError, InvalidParamsError, PayloadTooLargeError
from labelloop.inference import InferenceService
from labelloop.jobs import JobService
from labelloop.registry import Registry
from labelloop.settings import Settings
from labelloop.tasks import App

__all__ = [
    "Services",
    "ServicesDep",
    "DatastoreDep",
    "JSON_MAX_DEPTH",
    "PrincipalDep",
    "STRICT_QUERY",
    "UserDep",
    "client_provenance",
    "epoch_seconds",
    "lease_holder",
    "octet_stream",
    "parse_json_object",
    "reject_unknown_query",
    "spooled_upload",
    "spooled_uploads",
]


@dataclass(frozen=True)
class Services:
    """Everything the routers may call; built once per application by ``create_app``."""

    settings: Settings
    app: App
    datastore: Datastore
    registry: Registry
    inference: InferenceService
    jobs: JobService
    activelearning: ActiveLearning
    auth: Auth
    audit: AuditTrail
    pacs: PacsLink | None = None


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def get_datastore(request: Request) -> Datastore:
    return get_services(request).datastore


def get_principal(request: Request) -> Principal:
    """Who the request acts for (``permissions.authorize`` found them before any route runs)."""
    return principal_of(request)


def get_user(request: Request) -> str:
    """The acting user's name: the logged-in user, or the configured name while auth is off (MONAI
    Label: ``admin``). It is recorded with every label version, job, upload and lease."""
    return principal_of(request).name


ServicesDep = Annotated[Services, Depends(get_services)]
DatastoreDep = Annotated[Datastore, Depends(get_datastore)]
UserDep = Annotated[str, Depends(get_user)]
PrincipalDep = Annotated[Principal, Depends(get_principal)]


def _query_names(dependant: Dependant) -> set[str]:
    """The query parameters a route takes: its own and its dependencies' (a model's fields too)."""
    names: set[str] = set()
    for field in dependant.query_params:
        names.add(field.alias)
        annotation = field.field_info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names |= {info.alias or name for name, info in annotation.model_fields.items()}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names


def reject_unknown_query(request: Request) -> None:
    """400 naming every query parameter the matched route does not take (``STRICT_QUERY``).

    For labelloop's own endpoints, where a misspelt or unsupported filter (``?autor=``) would
    otherwise answer as if it had not been given. MONAI Label's endpoints do not use it: they ignore
    what they do not know, as the reference does, since its clients send extras.
    """
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if not isinstance(dependant, Dependant):
        return
    known = _query_names(dependant)
    unknown = sorted({name for name in request.query_params if name not in known})
    if not unknown:
        return
    # Echo at most a few names, each cut short: they are the client's strings.
    named = ", ".join(repr(name[:64]) for name in unknown[:10]) + (", ..." if len(unknown) > 10 else "")
    takes = ", ".join(sorted(known)) or "no query parameters"
    raise InvalidInputError(
        f"Unknown query parameter{'s' if len(unknown) > 1 else ''} {named}: "
        f"{request.method} {getattr(route, 'path', request.url.path)} takes {takes}"
    )


#: ``dependencies=[STRICT_QUERY]`` on a route of our own: an unknown query parameter is a 400.
STRICT_QUERY = Depends(reject_unknown_query)


def epoch_seconds(value: str | None, name: str) -> float | None:
    """A time query parameter: epoch seconds, or ISO 8601 (UTC unless it carries an offset).

    Raises:
        InvalidParamsError: (422) neither, naming ``name``.
    """
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            parsed = datetime.fromisoformat(value.strip())
            seconds = (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()
        except (ValueError, OverflowError):
            raise InvalidParamsError(
                f"'{name}' must be epoch seconds or an ISO 8601 time (2025-03-01T12:00:00Z), "
                f"not {value[:64]!r}"
            ) from None
    if not math.isfinite(seconds):
        raise InvalidParamsError(f"'{name}' must be a finite time, not {value[:64]!r}")
    return seconds


#: Deepest nesting of objects and arrays a ``params``/``info`` field may have. MONAI Label's clients
#: send 3 or 4 levels (``label_info``, ``segmentationMeta``); deeper JSON is refused before it is parsed,
#: so that no parser or serialiser ever recurses past Python's limit.
JSON_MAX_DEPTH = 32

_JSON_STRUCTURE = re.compile(r'[\[\]{}"\\]')


def _nesting_exceeds(raw: str, limit: int) -> bool:
    """Whether ``raw`` nests objects and arrays deeper than ``limit`` (a scan, not a recursion).

    Only brackets outside strings count; it needs no valid JSON (the parser judges that after).
    """
    if raw.count("[") + raw.count("{") <= limit:
        return False
    depth, in_string, skip = 0, False, -1
    for match in _JSON_STRUCTURE.finditer(raw):
        position, char = match.start(), match.group()
        if position == skip:
            continue
        if in_string:
            if char == "\\":
                skip = position + 1  # the escaped character
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > limit:
                return True
        elif char in "]}":
            depth -= 1
    return False


def parse_json_object(raw: str | None, field: str, *, max_bytes: int | None = None) -> dict[str, Any]:
    """Parse a form field holding a JSON object (MONAI Label's ``params``/``info`` convention).

    Missing, empty or ``null`` means ``{}``; anything but an object is a 422, and so is JSON nested
    deeper than ``JSON_MAX_DEPTH`` or a number too long to convert. A field over ``max_bytes``
    (UTF-8) is a 413, checked first (it is the cheaper check).
    """
    if raw is None or raw.strip() in ("", "null"):
        return {}
    if max_bytes is not None:
        size = len(raw.encode("utf-8", errors="surrogatepass"))
        if size > max_bytes:
            raise PayloadTooLargeError(f"'{field}' is {size} bytes; the limit is {max_bytes} bytes")
    if _nesting_exceeds(raw, JSON_MAX_DEPTH):
        raise InvalidParamsError(f"'{field}' nests objects and arrays deeper than {JSON_MAX_DEPTH} levels")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise InvalidParamsError(f"'{field}' is not valid JSON: {exc.msg} at position {exc.pos}") from exc
    except ValueError as exc:  # e.g. an integer of more digits than Python converts
        raise InvalidParamsError(f"'{field}' is not valid JSON: {exc}") from exc
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidParamsError(f"'{field}' must be a JSON object, not {type(value).__name__}")
    return value


def _model_version(value: Any) -> int | None:
    """A client's ``model_version`` param: a whole number (or its digits), else unknown."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def lease_holder(principal: Principal, client_id: str | None) -> str:
    """Who holds a lease: the logged-in user; with auth off, the client's ``client_id`` if it sends
    one (it is all that tells annotators apart), else the configured user. A logged-in annotator
    can therefore never take, end or give back a lease in someone else's name."""
    if principal.via != "anonymous":
        return principal.name
    return client_id or principal.name


def client_provenance(params: dict[str, Any], principal: Principal) -> Provenance:
    """The provenance of a label a client saves, from MONAI Label's ``params`` form field.

    The author is who the request acts for; ``client_id`` is the client's own name for the
    annotator; ``model`` and ``model_version`` (sent by our clients after an inference) say which
    output the label started from. Anything else is stored as sent.
    """
    client_id = params.get("client_id")
    model = params.get("model")
    return Provenance(
        signed_in=principal.via != "anonymous",
        author=principal.name,
        client_id=str(client_id) if client_id is not None else None,
        source="upload",
        model=model if isinstance(model, str) else None,
        model_version=_model_version(params.get("model_version")),
        params=params,
    )


def octet_stream(response: Response) -> Response:
    """A volume or weights download as ``application/octet-stream`` (MONAI Label section 1.4), whatever
    the host's ``mime.types`` says its extension is (some map ``.pt`` to a Super NES page table)."""
    response.headers["content-type"] = "application/octet-stream"
    return response


@contextmanager
def spooled_upload(datastore: Datastore, upload: UploadFile) -> Iterator[Path]:
    """The upload as a file under the data directory's scratch space, removed afterwards."""
    with datastore.blobs.scratch() as path:
        upload.file.seek(0)
        with open(path, "wb") as out:
            shutil.copyfileobj(upload.file, out, 1024 * 1024)
        yield path


@contextmanager
def spooled_uploads(
    datastore: Datastore, uploads: list[UploadFile]
) -> Iterator[list[tuple[str | None, Path]]]:
    """Several uploads as ``(client filename, scratch path)`` pairs, removed afterwards."""
    with ExitStack() as stack:
        yield [
            (upload.filename, stack.enter_context(spooled_upload(datastore, upload))) for upload in uploads
        ]
