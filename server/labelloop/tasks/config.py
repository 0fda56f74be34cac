"""Typed task options: pydantic models that a task declares and the server validates once, at submission.

A trainer declares ``config_model``, a subclass of ``TrainConfig``. ``validate_options`` turns a
client's JSON options into that model when the job is submitted (``InvalidParamsError`` naming the
option otherwise); the job stores ``model_dump(mode="json")``, and the worker rebuilds the model
from it and hands the typed object to ``TrainTask.train``. ``options_view`` is what ``/info/``
shows clients: each option's default, or its choices (default first) where it has any.

The field types below keep the server's long-standing input rules, stricter than pydantic's lax
mode: ``true``/``false`` (or those strings) for flags, never ``1`` or ``"yes"``; numbers may come
as strings, but a flag is never a number; numbers are finite.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, TypeVar

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from labelloop.errors import InvalidParamsError

__all__ = [
    "DeviceName",
    "Flag",
    "Fraction",
    "TaskConfig",
    "TrainConfig",
    "Whole",
    "options_view",
    "validate_options",
]

ConfigT = TypeVar("ConfigT", bound="TaskConfig")


def _flag(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ValueError("must be true or false")


def _not_a_flag(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("must be a number")
    return value


def _finite(value: Any) -> Any:
    value = _not_a_flag(value)
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("must be a finite number")
    return value


_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


def _device(value: str) -> str:
    if not _DEVICE.fullmatch(value):
        raise ValueError("must be auto, cpu, cuda or cuda:N")
    return value


#: ``true`` or ``false`` (JSON booleans, or those words as strings).
Flag = Annotated[bool, BeforeValidator(_flag)]
#: A whole number (``10``, ``10.0`` or ``"10"``); add bounds with ``Field(ge=...)``.
Whole = Annotated[int, BeforeValidator(_not_a_flag)]
#: A finite number; add bounds with ``Field(ge=..., le=...)``.
Fraction = Annotated[float, BeforeValidator(_finite), Field(allow_inf_nan=False)]
#: Where a task runs: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
DeviceName = Annotated[
    str,
    AfterValidator(_device),
    Field(json_schema_extra={"choices": ["auto", "cpu", "cuda"]}),
]


class TaskConfig(BaseModel):
    """Options of a task run. Unknown keys are ignored (clients send ``client_id``, ``model``...)
    unless they look like a misspelt option; instances are immutable."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    #: The order clients list the options in (``/info/``); options not named follow in field order.
    option_order: ClassVar[tuple[str, ...]] = ()


class TrainConfig(TaskConfig):
    """What every training run has, and what the server itself reads of a run's options.

    Attributes:
        max_epochs: epochs to run, 1 to 100,000 (a resumed run continues up to this count).
        val_split: fraction of the images held out for validation, ``[0, 1)``; the server splits.
        pretrained: fine-tune from the active model version when there is one.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``; the server resolves it into ``ctx.device``.
        seed: seeds weight initialisation, sampling and augmentation (not shown in ``/info/``).
    """

    max_epochs: Whole = Field(50, ge=1, le=100_000)
    val_split: Fraction = Field(0.2, ge=0.0, lt=1.0)
    pretrained: Flag = True
    device: DeviceName = "auto"
    seed: Whole = Field(0, ge=0, le=2**32 - 1, json_schema_extra={"hidden": True})


def options_view(model: type[TaskConfig]) -> dict[str, Any]:
    """The options clients see (``/info/``): default values, or the choices with the default first."""
    view: dict[str, Any] = {}
    named = [n for n in model.option_order if n in model.model_fields]
    order = [*named, *(n for n in model.model_fields if n not in named)]
    for name in order:
        field = model.model_fields[name]
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        for meta in field.metadata:
            schema = getattr(meta, "json_schema_extra", None)
            if isinstance(schema, dict):
                extra = {**schema, **extra}
        if extra.get("hidden"):
            continue
        choices = extra.get("choices")
        if isinstance(choices, list):
            view[name] = [field.default, *(c for c in choices if c != field.default)]
        else:
            view[name] = field.default
    return view


def _describe(error: Mapping[str, Any]) -> str:
    key = ".".join(str(part) for part in error.get("loc", ())) or "options"
    message = str(error.get("msg", "is not valid")).removeprefix("Value error, ")
    return f"'{key}': {message[0].lower()}{message[1:]}, not {error.get('input')!r}"


def validate_options(model: type[ConfigT], options: Mapping[str, Any]) -> ConfigT:
    """``options`` as ``model``; ``InvalidParamsError`` naming the first bad or misspelt option."""
    known = list(model.model_fields)
    for key in options:
        if key in known:
            continue
        close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.88)
        if close:
            raise InvalidParamsError(f"Unknown option '{key}'; did you mean '{close[0]}'?")
    try:
        return model.model_validate(dict(options))
    except ValidationError as exc:
        raise InvalidParamsError(_describe(exc.errors()[0])) from None
