"""Validation of ids and tags, before any of them comes near the file system."""

from __future__ import annotations

import re

from labelloop.errors import InvalidIdError

__all__ = ["ID_PATTERN", "validate_id", "validate_tag", "DEFAULT_TAG", "ORIGINAL_TAG"]

ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
DEFAULT_TAG = "final"
ORIGINAL_TAG = "original"


def validate_id(value: str | None, what: str = "image id") -> str:
    """Return ``value`` if it is a valid id, else raise ``InvalidIdError`` naming the rule."""
    if value is None or not ID_PATTERN.fullmatch(value) or ".." in value:
        raise InvalidIdError(
            f"Invalid {what} {value!r}: use 1-128 characters from A-Z a-z 0-9 . _ -, "
            "starting with a letter or digit, without '..'"
        )
    return value


def validate_tag(value: str | None) -> str:
    """A label tag; empty or missing means ``final`` (as in MONAI Label)."""
    if value is None or value == "":
        return DEFAULT_TAG
    return validate_id(value, "tag")
