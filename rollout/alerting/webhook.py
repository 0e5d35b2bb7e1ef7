"""Alert notifications to an outgoing webhook: one signed JSON POST per notification.

The request
-----------
``POST <url>`` with the notification as compact JSON (keys sorted, no spaces, UTF-8) and::

    Content-Type: application/json
    User-Agent: rollout/<version> (alert webhook)
    X-Rollout-Timestamp: <unix seconds when it was sent>
    X-Rollout-Signature: sha256=<hex>

Verifying it (for receivers)
----------------------------
Rollout and the receiver share a secret (bytes). The signature is the hex HMAC-SHA256, keyed
with the secret, of the timestamp header's value as ASCII digits, a full stop, then the exact
body bytes as received::

    hex(HMAC-SHA256(secret, b"<timestamp>." + body))

A receiver must compute it over the raw body (before any JSON parsing), compare it with the
header's value in constant time, and refuse a timestamp too far from its own clock (five
minutes by default) so that a recorded request cannot be replayed later. :func:`verify` does
all three. A notification may be delivered more than once (an attempt that timed out after the
receiver had it is tried again), so receivers should treat repeats of the same alert as one.

Answers
-------
Any 2xx is delivered. A redirect is not followed: it counts as a permanent failure, because the
webhook URL has to be corrected. Other 4xx answers are permanent too, except 408, 425 and 429;
5xx answers, time-outs and connection errors are worth another attempt, after
:func:`retry_delay` (which honours a ``Retry-After`` sent with a 429 or 503).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import email.utils
import hashlib
import hmac
import json
import math
import random
import re
from collections.abc import Mapping
from typing import Any

import httpx

from rollout import __version__
from rollout.alerting.result import DeliveryResult, one_line
from rollout.clock import Clock

__all__ = [
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "USER_AGENT",
    "DeliveryResult",
    "encode_body",
    "parse_retry_after",
    "post",
    "retry_delay",
    "sign",
    "verify",
]

SIGNATURE_HEADER = "X-Rollout-Signature"
"""Carries ``sha256=<hex HMAC>`` (see the module docstring)."""

TIMESTAMP_HEADER = "X-Rollout-Timestamp"
"""Carries the unix seconds at which the request was signed; part of the signed material."""

USER_AGENT = f"rollout/{__version__} (alert webhook)"

DEFAULT_TOLERANCE_S = 300
"""How far (either way) a receiver lets the timestamp be from its own clock."""

MAX_RETRY_AFTER = 86_400.0
"""A ``Retry-After`` longer than a day is taken as a day."""

RETRYABLE_4XX = frozenset({408, 425, 429})
"""Client errors that another attempt can get past (time-out, too early, too many requests)."""

_SNIPPET_BYTES = 512
_DIGITS = re.compile(r"[0-9]{1,15}")


def sign(body: bytes, secret: bytes, timestamp: int) -> str:
    """The ``X-Rollout-Signature`` value for ``body`` sent at ``timestamp`` (unix seconds)."""
    if not secret:
        raise ValueError("a webhook secret must not be empty")
    if isinstance(timestamp, bool) or not isinstance(timestamp, int) or timestamp < 0:
        raise ValueError("the timestamp must be a non-negative integer (unix seconds)")
    digest = hmac.new(secret, f"{timestamp}.".encode("ascii") + body, hashlib.sha256)
    return "sha256=" + digest.hexdigest()


def verify(
    body: bytes,
    secret: bytes,
    timestamp: int | str | None,
    header_value: str | None,
    *,
    now: float,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
) -> bool:
    """Whether a received webhook request is genuine and fresh.

    ``body`` is the raw request body, ``timestamp`` the ``X-Rollout-Timestamp`` header (as sent,
    or as an int), ``header_value`` the ``X-Rollout-Signature`` header and ``now`` the
    receiver's unix time. False when either header is missing or malformed, the timestamp is
    more than ``tolerance_s`` seconds from ``now`` either way, or the signature does not match
    (compared in constant time).
    """
    if not secret or header_value is None:
        return False
    ts = _parse_timestamp(timestamp)
    if ts is None or not abs(now - ts) <= tolerance_s:
        return False
    expected = sign(body, secret, ts).encode("ascii")
    given = header_value.strip().encode("utf-8", "surrogateescape")
    return hmac.compare_digest(expected, given)


def encode_body(payload: Mapping[str, Any]) -> bytes:
    """The request body: compact JSON, keys sorted, UTF-8; datetimes and dates in ISO 8601.

    Raises ``TypeError`` or ``ValueError`` for a value JSON cannot carry (NaN included).
    """
    text = json.dumps(
        payload,
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
        default=_json_default,
    )
    return text.encode("utf-8")


def post(
    client: httpx.Client,
    url: str,
    payload: Mapping[str, Any],
    secret: bytes,
    clock: Clock,
    *,
    timeout: float = 10.0,
) -> DeliveryResult:
    """POST one notification to ``url``, signed with ``secret``; what came of it.

    Never raises for a failed delivery: a bad URL, an unusable payload, a refusal, a time-out
    or a lost connection all come back as a :class:`DeliveryResult`. ``timeout`` applies to
    connecting, sending and waiting for the answer each. Redirects are never followed.
    """
    hide = (*_secret_forms(secret), url)
    if not secret:
        return DeliveryResult(delivered=False, permanent=True, error="no webhook secret is set")
    try:
        body = encode_body(payload)
    except (TypeError, ValueError) as exc:
        error = one_line(f"the notification cannot be sent as JSON: {exc}", hide=hide)
        return DeliveryResult(delivered=False, permanent=True, error=error)
    timestamp = int(clock.now().timestamp())
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: sign(body, secret, timestamp),
    }
    try:
        request = client.build_request("POST", url, content=body, headers=headers, timeout=timeout)
        response = client.send(request, stream=True, follow_redirects=False)
    except httpx.InvalidURL as exc:
        error = one_line(f"the webhook URL is not valid: {exc}", hide=hide)
        return DeliveryResult(delivered=False, permanent=True, error=error)
    except httpx.UnsupportedProtocol:
        error = "the webhook URL must start with http:// or https://"
        return DeliveryResult(delivered=False, permanent=True, error=error)
    except httpx.TimeoutException as exc:
        error = one_line(f"timed out after {timeout:g}s ({type(exc).__name__})", hide=hide)
        return DeliveryResult(delivered=False, permanent=False, error=error)
    except httpx.HTTPError as exc:
        error = one_line(f"{type(exc).__name__}: {exc}", hide=hide)
        return DeliveryResult(delivered=False, permanent=False, error=error)
    try:
        return _result(response, clock, hide)
    finally:
        response.close()


def retry_delay(
    attempt: int,
    retry_after: float | None,
    *,
    base: float = 30.0,
    cap: float = 3600.0,
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait before the next attempt, after ``attempt`` failed ones (1, 2, ...).

    Exponential with "equal jitter": drawn from ``[c/2, c]`` with ``c = min(cap, base *
    2**(attempt-1))``, so that notifications that failed together do not all come back
    together, and never zero. A ``retry_after`` the receiver asked for wins when it is longer.
    """
    if attempt < 1:
        raise ValueError("attempt counts failed attempts and starts at 1")
    if not (base > 0 and cap > 0):
        raise ValueError("base and cap must be positive")
    ceiling = min(cap, base * 2.0 ** min(attempt - 1, 64))
    uniform = rng.uniform if rng is not None else random.uniform
    delay = uniform(ceiling / 2, ceiling)
    if retry_after is not None and math.isfinite(retry_after) and retry_after > delay:
        delay = float(retry_after)
    return delay


def parse_retry_after(value: str | None, now: dt.datetime) -> float | None:
    """A ``Retry-After`` header (seconds, or an HTTP date compared with ``now``) in seconds.

    None when absent or unreadable; never negative; at most :data:`MAX_RETRY_AFTER`.
    """
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        seconds = float(value) if len(value) <= 15 else MAX_RETRY_AFTER
    else:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        seconds = (when - now).total_seconds()
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


# --- helpers --------------------------------------------------------------------------------


def _result(response: httpx.Response, clock: Clock, hide: tuple[str, ...]) -> DeliveryResult:
    status = response.status_code
    if 200 <= status < 300:
        return DeliveryResult(delivered=True, permanent=False, status=status)
    if 300 <= status < 400:
        target = _origin(response)
        error = one_line(
            f"HTTP {status}: the webhook redirects{target} and redirects are not followed; "
            "set the webhook URL to the final address",
            hide=hide,
        )
        return DeliveryResult(delivered=False, permanent=True, status=status, error=error)
    retry_after = None
    if status in (429, 503):
        retry_after = parse_retry_after(response.headers.get("retry-after"), clock.now())
    permanent = 400 <= status < 500 and status not in RETRYABLE_4XX
    head = f"HTTP {status} {response.reason_phrase}".strip()
    snippet = _snippet(response)
    error = one_line(f"{head}: {snippet}" if snippet else head, hide=hide)
    return DeliveryResult(
        delivered=False, permanent=permanent, status=status, error=error, retry_after=retry_after
    )


def _snippet(response: httpx.Response) -> str:
    """The start of the answer's body, for the error line (empty if it cannot be read)."""
    chunks: list[bytes] = []
    size = 0
    try:
        for chunk in response.iter_bytes():
            chunks.append(chunk)
            size += len(chunk)
            if size >= _SNIPPET_BYTES:
                break
    except httpx.HTTPError:
        pass
    return b"".join(chunks)[:_SNIPPET_BYTES].decode("utf-8", "replace")


def _origin(response: httpx.Response) -> str:
    """' to <scheme://host[:port]>' of a redirect's target, or '' (paths may hold tokens)."""
    location = response.headers.get("location")
    if not location:
        return ""
    try:
        target = response.request.url.join(location)
    except (httpx.InvalidURL, ValueError):
        return ""
    port = f":{target.port}" if target.port is not None else ""
    return f" to {target.scheme}://{target.host}{port}"


def _json_default(value: object) -> str:
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _parse_timestamp(value: int | str | None) -> int | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, str) and _DIGITS.fullmatch(value.strip()):
        return int(value.strip())
    return None


def _secret_forms(secret: bytes) -> tuple[str, ...]:
    """The ways the secret could be spelled in a message, to keep it out of errors."""
    if not secret:
        return ()
    forms = {secret.decode("latin-1"), repr(secret)[2:-1], secret.hex()}
    with contextlib.suppress(UnicodeDecodeError):
        forms.add(secret.decode("utf-8"))
    return tuple(forms)
