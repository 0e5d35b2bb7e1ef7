"""HTTP to Apple's provisioning APIs: the bearer token, JSON:API errors, waiting and retrying.

What the APIs document (pages "About the HTTP Status Code", "Identifying Rate Limits" and
"ErrorResponse" of the App Store Connect API and of the Enterprise Program API):

* 2xx carries a JSON:API document (``data``, ``links``; lists page with ``links.next``);
* failures carry ``{"errors": [{"status", "code", "title", "detail", ...}]}``;
* 429 (``RATE_LIMIT_EXCEEDED``) when the key's hourly budget is spent, 5xx for a server fault:
  both are worth another try later; 401 (``NOT_AUTHORIZED``) or 403 when the token or the key
  is refused: trying again with the same key does not help.

:class:`AppleHttp` waits for a 429 as long as ``Retry-After`` says (seconds or an HTTP date),
otherwise, and for 5xx and connection failures, with exponential back-off and jitter, up to
``max_attempts`` tries. Every error is one line and carries neither the key nor the token;
log lines name the method, path, status and wait, never a header.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import json
import logging
import random
import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx

from rollout.clock import Clock
from rollout.sources.apple_jwt import TokenMinter

log = logging.getLogger(__name__)

API_LABELS = {
    "appstoreconnect-v1": "the App Store Connect API",
    "apple-developer-enterprise-v1": "the Enterprise Program API",
}

MAX_BODY_BYTES = 64 * 1024 * 1024
"""Largest answer read (a page of 200 profiles with their contents stays far below)."""

MAX_PAGES = 100
_DETAIL_CHARS = 300


class AppleApiError(Exception):
    """Apple's API refused or failed a request; ``str()`` is one line without secrets.

    ``status`` is the HTTP status (None when no answer came), ``code`` Apple's error code.
    """

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None):
        super().__init__(" ".join(message.split()))
        self.status = status
        self.code = code


class AppleAuthError(AppleApiError):
    """Apple refused the API key or its token (401 or 403)."""


class RetryableFailure(Exception):
    """One try failed in a way another try may not (429, 5xx, no connection)."""

    def __init__(self, reason: str, *, status: int | None, retry_after: float | None = None):
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.retry_after = retry_after


class AppleHttp:
    """Requests to one API with one key; see the module docs for what it retries."""

    def __init__(
        self,
        minter: TokenMinter,
        base_url: str,
        *,
        clock: Clock,
        client: httpx.Client | None = None,
        sleep: Callable[[float], None] = time.sleep,
        max_attempts: int = 5,
        backoff_base: float = 1.0,
        backoff_cap: float = 60.0,
        max_wait: float = 300.0,
        rng: random.Random | None = None,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.base_url = base_url.rstrip("/")
        self.label = API_LABELS.get(minter.audience, "Apple's API")
        self._minter = minter
        self._clock = clock
        self._own_client = client is None
        self._client = client or httpx.Client(timeout=httpx.Timeout(30.0, connect=10.0))
        self._sleep = sleep
        self.max_attempts = max_attempts
        self._base = backoff_base
        self._cap = backoff_cap
        self._max_wait = max_wait
        self._rng = rng or random.Random()

    def close(self) -> None:
        """Close the HTTP client if this object made it."""
        if self._own_client:
            self._client.close()

    # --- one try ------------------------------------------------------------------------------

    def attempt(
        self,
        method: str,
        path_or_url: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """One request; the JSON document of a 2xx answer.

        Raises :class:`RetryableFailure` for 429, 5xx and connection failures, and
        :class:`AppleApiError` (:class:`AppleAuthError` for 401/403) for the rest.
        """
        url = self._url(path_or_url)
        path = httpx.URL(url).path
        token = self._minter.token()
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        try:
            request = self._client.build_request(
                method, url, params=params, json=body, headers=headers
            )
            response = self._client.send(request, stream=True)
            try:
                raw = _read_capped(response)
            finally:
                response.close()
        except httpx.TransportError as exc:
            log.warning(
                "apple_api.unreachable method=%s path=%s error=%s", method, path, _kind(exc)
            )
            raise RetryableFailure(
                f"could not reach {self.base_url} ({_kind(exc)})", status=None
            ) from None
        status = response.status_code
        log.info("apple_api.response method=%s path=%s status=%d", method, path, status)
        if 200 <= status < 300:
            return self._document(raw, method, path, status)
        code, text = _error_text(raw)
        text = text.replace(token, "[token]")
        if status == 429 or status >= 500:
            raise RetryableFailure(
                f"HTTP {status}{' ' + code if code else ''}",
                status=status,
                retry_after=self._retry_after(response.headers.get("Retry-After")),
            )
        if status in (401, 403):
            self._minter.forget()
            raise AppleAuthError(
                f"{self.label} refused API key {self._minter.key.key_id}"
                f" (HTTP {status}{' ' + code if code else ''}: {text or 'no reason given'})",
                status=status,
                code=code,
            )
        raise AppleApiError(
            f"{self.label} answered HTTP {status}{' ' + code if code else ''} to {method} {path}"
            f": {text or 'no reason given'}",
            status=status,
            code=code,
        )

    def _url(self, path_or_url: str) -> str:
        if path_or_url.startswith("/"):
            return self.base_url + path_or_url
        # paging links are absolute; the token goes to no other host than the API's
        if not path_or_url.startswith(self.base_url + "/"):
            raise AppleApiError(f"{self.label} sent a link outside {self.base_url}; not followed")
        return path_or_url

    def _document(self, raw: bytes, method: str, path: str, status: int) -> dict[str, Any]:
        if not raw and status == 204:
            return {}
        try:
            document = json.loads(raw)
        except ValueError:
            document = None
        if not isinstance(document, dict):
            raise AppleApiError(
                f"{self.label} answered {method} {path} with HTTP {status} but no JSON document",
                status=status,
            )
        return document

    def _retry_after(self, value: str | None) -> float | None:
        """``Retry-After`` in seconds (RFC 9110: a number of seconds or an HTTP date)."""
        if not value:
            return None
        value = value.strip()
        if value.isdigit():
            return float(value)
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        return max(0.0, (when - self._clock.now()).total_seconds())

    # --- waiting and retrying -----------------------------------------------------------------

    def pause(self, failure: RetryableFailure, attempt: int, what: str) -> None:
        """Wait before try ``attempt + 1``, or raise when ``attempt`` was the last one."""
        if attempt >= self.max_attempts:
            raise AppleApiError(
                f"{self.label} gave up on {what} after {attempt} attempt"
                f"{'s' if attempt != 1 else ''}: {failure.reason}",
                status=failure.status,
            )
        if failure.retry_after is not None:
            wait = failure.retry_after
        else:
            ceiling = min(self._cap, self._base * 2 ** (attempt - 1))
            wait = ceiling * (0.5 + self._rng.random() / 2)
        if wait > self._max_wait:
            raise AppleApiError(
                f"{self.label} asks to wait {wait:.0f} s before {what} ({failure.reason});"
                f" not waiting over {self._max_wait:.0f} s",
                status=failure.status,
            )
        log.warning(
            "apple_api.retry what=%s attempt=%d reason=%s wait_s=%.1f",
            what,
            attempt,
            failure.reason,
            wait,
        )
        self._sleep(wait)

    def get(self, path_or_url: str, params: Mapping[str, str] | None = None) -> dict[str, Any]:
        """GET with retries (a GET changes nothing, so trying again is always safe)."""
        what = f"GET {httpx.URL(self._url(path_or_url)).path}"
        attempt = 0
        while True:
            attempt += 1
            try:
                return self.attempt("GET", path_or_url, params=params)
            except RetryableFailure as failure:
                self.pause(failure, attempt, what)

    def get_all(self, path: str, params: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
        """Every resource of a list, following ``links.next`` page after page."""
        items: list[dict[str, Any]] = []
        document = self.get(path, params)
        for _page in range(MAX_PAGES):
            data = document.get("data")
            if not isinstance(data, list):
                raise AppleApiError(f"{self.label} answered GET {path} without a list of data")
            items.extend(item for item in data if isinstance(item, dict))
            links = document.get("links")
            following = links.get("next") if isinstance(links, dict) else None
            if not isinstance(following, str) or not following:
                return items
            document = self.get(following)
        raise AppleApiError(f"{self.label} listed more than {MAX_PAGES} pages for GET {path}")


def _read_capped(response: httpx.Response) -> bytes:
    chunks: list[bytes] = []
    total = 0
    for chunk in response.iter_bytes():
        total += len(chunk)
        if total > MAX_BODY_BYTES:
            raise AppleApiError(
                f"answer to {response.request.method} {response.request.url.path}"
                f" is over {MAX_BODY_BYTES} bytes",
                status=response.status_code,
            )
        chunks.append(chunk)
    return b"".join(chunks)


def _error_text(raw: bytes) -> tuple[str | None, str]:
    """Apple's first error: (code, detail or title), from an ErrorResponse document."""
    try:
        document = json.loads(raw)
    except ValueError:
        return None, ""
    errors = document.get("errors") if isinstance(document, dict) else None
    if not isinstance(errors, list) or not errors or not isinstance(errors[0], dict):
        return None, ""
    first = errors[0]
    code = first.get("code") if isinstance(first.get("code"), str) else None
    title = first.get("title") if isinstance(first.get("title"), str) else ""
    detail = first.get("detail") if isinstance(first.get("detail"), str) else ""
    text = " ".join((detail or title or "").split())
    if len(text) > _DETAIL_CHARS:
        text = text[: _DETAIL_CHARS - 1] + "…"
    return code, text


def _kind(exc: Exception) -> str:
    return type(exc).__name__
