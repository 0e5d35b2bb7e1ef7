"""What one attempt to deliver a notification came to, shared by the webhook and e-mail."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

MAX_ERROR_CHARS = 300
"""Errors are cut to this many characters (they are stored with the notification)."""

_SPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class DeliveryResult:
    """One delivery attempt.

    ``delivered``: the receiver accepted the notification. ``permanent``: it was not delivered
    and another attempt cannot help (a refusal, a wrong address, a redirect). ``status``: the
    receiver's answer code (HTTP status or SMTP reply code), if it answered. ``error``: one line
    for the operator, never containing a secret. ``retry_after``: seconds the receiver asked us
    to wait before the next attempt, if it said so.
    """

    delivered: bool
    permanent: bool
    status: int | None = None
    error: str | None = None
    retry_after: float | None = None


def one_line(text: str, *, hide: Iterable[str] = ()) -> str:
    """``text`` as one short line: whitespace collapsed, each of ``hide`` replaced by ``***``."""
    for secret in sorted((s for s in hide if s), key=len, reverse=True):
        text = text.replace(secret, "***")
    text = _SPACE.sub(" ", text).strip()
    if len(text) > MAX_ERROR_CHARS:
        text = text[: MAX_ERROR_CHARS - 1] + "…"
    return text
