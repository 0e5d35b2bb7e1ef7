"""Bounded plist values: the size checks of the parsers, and JSON views of device data.

:mod:`plistlib` hands back whatever tree the XML describes: nested as deep as the body allows,
with NaN or infinite reals, integers of thousands of digits, dates and raw bytes. None of that
may reach the ledger, where one report's bad value would fail a whole batch. The parsers run
every value of a message through :func:`json_view`, which refuses what cannot be stored and
turns the rest into plain JSON:

* strings and booleans as they are;
* integers only inside Apple's 64-bit range (``out_of_range`` otherwise);
* reals only when finite (``not_finite`` for NaN and ±infinity);
* dates as ISO 8601 text in UTC with an explicit offset (``2030-01-02T03:04:05+00:00``);
  plist dates carry no zone and are UTC by definition;
* data as lower-case **hex**, the form rollout already stores push tokens and command results
  in (one form for every stored byte string);
* arrays and dictionaries no deeper than :data:`rollout.bounds.NESTING_DEPTH` levels, the
  message's own dictionary being level 1 (``too_deep``).

The walk recurses at most that many levels, so it can never raise ``RecursionError`` itself.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from typing import Any, TypeAlias

from rollout import bounds
from rollout.mdm.errors import MDMProtocolError

JSONValue: TypeAlias = "bool | int | float | str | list[JSONValue] | dict[str, JSONValue] | None"
"""A value :func:`json.dumps` encodes as it is (``allow_nan=False`` included)."""

_SHOWN = 40  # characters of a device-chosen key shown in an error message


class _Refusal(Exception):
    """Raised deep in the walk; the path to the value is added on the way out, so the walk
    itself never builds path strings for values that are fine."""

    def __init__(self, reason: str, what: str) -> None:
        super().__init__(what)
        self.reason = reason
        self.what = what
        self.path: list[str] = []


def shown(key: str) -> str:
    """A key as error messages show it: device-chosen keys can be any length."""
    return key if len(key) <= _SHOWN else key[:_SHOWN] + "..."


def check_length(value: str | bytes, limit: int, what: str) -> None:
    """Refuse (``too_long``) a string longer than ``limit`` characters or data longer than
    ``limit`` bytes; ``what`` names the key in the message."""
    if len(value) > limit:
        unit = "byte" if isinstance(value, bytes) else "character"
        raise MDMProtocolError(
            "too_long", f"{what} is {len(value)} {unit}s long, over the {limit}-{unit} limit"
        )


def json_view(value: Any, *, where: str, level: int = 1) -> JSONValue:
    """``value``, found at ``where`` inside a container at nesting ``level``, as plain JSON.

    Raises :class:`MDMProtocolError` (``not_finite``, ``out_of_range``, ``too_deep``,
    ``wrong_type``) naming the path to the offending value.
    """
    try:
        return _view(value, level)
    except _Refusal as refusal:
        path = where + "".join(reversed(refusal.path))
        raise MDMProtocolError(refusal.reason, f"{path} {refusal.what}") from None


def json_size(view: dict[str, JSONValue]) -> int:
    """Bytes of ``view`` as compact UTF-8 JSON (the measure of
    :data:`rollout.bounds.EXTRA_JSON_BYTES`)."""
    text = json.dumps(view, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return len(text.encode("utf-8"))


def iso_utc(when: dt.datetime) -> str:
    """A plist date as ISO 8601 text in UTC (a date without a zone is UTC)."""
    if when.tzinfo is None:
        return when.replace(tzinfo=dt.UTC).isoformat()
    return when.astimezone(dt.UTC).isoformat()


def _view(value: Any, level: int) -> JSONValue:
    # Ordered by how often each type occurs in real messages.
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        if bounds.INTEGER_MIN <= value <= bounds.INTEGER_MAX:
            return value
        raise _Refusal("out_of_range", "is an integer outside the 64-bit range")
    if isinstance(value, dict | list):
        if level >= bounds.NESTING_DEPTH:
            raise _Refusal("too_deep", f"nests deeper than the {bounds.NESTING_DEPTH}-level limit")
        if isinstance(value, list):
            items: list[JSONValue] = []
            for i, item in enumerate(value):
                try:
                    items.append(_view(item, level + 1))
                except _Refusal as refusal:
                    refusal.path.append(f"[{i}]")
                    raise
            return items
        fields: dict[str, JSONValue] = {}
        for key, item in value.items():
            if not isinstance(key, str):  # plistlib's XML reader only makes string keys
                raise _Refusal("wrong_type", "has a key that is not a string")
            try:
                fields[key] = _view(item, level + 1)
            except _Refusal as refusal:
                refusal.path.append(f".{shown(key)}")
                raise
        return fields
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dt.datetime):
        try:
            return iso_utc(value)
        except OverflowError:  # an aware date near year 1 or 9999
            raise _Refusal("out_of_range", "is a date outside the representable range") from None
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        raise _Refusal("not_finite", f"is {value!r}: only finite reals are accepted")
    if value is None:
        return None
    raise _Refusal("wrong_type", f"has a type no plist holds ({type(value).__name__})")
