"""A client for NanoMDM's HTTP API (HTTP Basic auth: user ``nanomdm``, the API key as password).

The calls rollout makes:

* ``PUT /v1/enqueue/{id,id,...}`` with a raw command plist as the body (rollout picks the
  CommandUUID), ``?nopush=1`` when rollout wakes the devices itself;
* ``GET /v1/push/{id,id,...}`` to wake enrollments through NanoMDM's own APNs client;
* ``GET /v1/queue/{id}`` to list an enrollment's commands that have no final answer;
* ``DELETE /v1/queue/{id,id,...}`` to clear enrollments' queues;
* ``GET /version`` (no auth) and an authenticated queue read of an id no device has, for
  ``rollout check``.

NanoMDM's API has no list of its enrollments: devices reach rollout's registry through the
webhook's check-in events, or through an inventory import.

Enqueue and push answer with one JSON object: ``status`` maps each id to its own
``push_error`` / ``command_error`` / ``push_result``, beside whole-call errors, with 200 (all
went), 207 (some failed) or 500 (all failed). A result per id is what the callers act on; a
call that cannot be made at all (no answer, not JSON, refused credentials) raises
:class:`NanoMDMError`.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

import httpx

from rollout.config import Settings
from rollout.delivery.server import (
    BasicAuthApi,
    IdResult,
    ListedDevice,
    MDMServer,
    MDMServerError,
    NoDeviceListError,
)

USER = "nanomdm"
PROBE_ID = "rollout-check"
"""The enrollment id ``rollout check`` reads the queue of (no device has it: nothing changes)."""
MAX_IDS_PER_CALL = 200
"""Enrollment ids per push or clear call (they travel in the URL path: ~45 bytes each)."""


NanoMDMError = MDMServerError


class NanoMDMClient(BasicAuthApi):
    """NanoMDM's API over one pooled HTTP client (safe to share between threads)."""

    user = USER
    max_ids_per_call = MAX_IDS_PER_CALL

    def enqueue(self, ids: Sequence[str], command: bytes, *, push: bool) -> dict[str, IdResult]:
        """Queue one command plist for ``ids`` (and let NanoMDM push them when ``push``)."""
        params = {} if push else {"nopush": "1"}
        answer = self._call("PUT", f"/v1/enqueue/{_ids(ids)}", content=command, params=params)
        return _per_id(ids, answer)

    def push(self, ids: Sequence[str]) -> dict[str, IdResult]:
        """Wake ``ids`` through NanoMDM's APNs client."""
        out: dict[str, IdResult] = {}
        for chunk in _chunks(ids):
            answer = self._call("GET", f"/v1/push/{_ids(chunk)}")
            out.update(_per_id(chunk, answer))
        return out

    def clear_queues(self, ids: Sequence[str]) -> dict[str, IdResult]:
        """Clear the queues of ``ids`` (NanoMDM answers 204 when every one was cleared)."""
        out: dict[str, IdResult] = {}
        for chunk in _chunks(ids):
            answer = self._call("DELETE", f"/v1/queue/{_ids(chunk)}")
            status = answer.get("status") or {} if isinstance(answer, dict) else {}
            for i in chunk:
                err = status.get(i) if isinstance(status, dict) else None
                out[i] = IdResult(command_error=_error_text(err) if err else None)
        return out

    def queued(self, enrollment_id: str, *, page: int = 100) -> set[str]:
        """CommandUUIDs NanoMDM still holds for an enrollment with no final answer (queued,
        or answered NotNow)."""
        found: set[str] = set()
        offset = 0
        while True:
            answer = self._call(
                "GET",
                f"/v1/queue/{quote(enrollment_id, safe='')}",
                params={"limit": str(page), "offset": str(offset)},
            )
            commands = answer.get("commands") if isinstance(answer, dict) else None
            if not isinstance(commands, list):
                raise NanoMDMError("the queue answer holds no command list")
            for c in commands:
                if isinstance(c, dict) and isinstance(c.get("command_uuid"), str):
                    found.add(c["command_uuid"])
            if len(commands) < page:
                return found
            offset += page

    def devices(self) -> list[ListedDevice]:
        """NanoMDM's API lists no enrollments: always :class:`NoDeviceListError`."""
        raise NoDeviceListError(
            "NanoMDM's API offers no list of its enrollments: each device joins rollout's "
            "registry with its next TokenUpdate through the webhook, or from an inventory "
            "(rollout devices import)"
        )

    def check(self) -> str:
        """NanoMDM's version (``GET /version``), once an authenticated read of the queue API
        (``GET /v1/queue/<an id no device has>``) was answered."""
        try:
            version = self._http.get("/version")
            queue = self._http.get(f"/v1/queue/{PROBE_ID}", params={"limit": "1"})
        except httpx.HTTPError as exc:
            raise NanoMDMError(f"no answer: {type(exc).__name__}: {exc}") from exc
        if queue.status_code in (401, 403):
            raise NanoMDMError(f"NanoMDM refused the API key ({queue.status_code})")
        if queue.status_code == 404:
            raise NanoMDMError("no queue API (GET /v1/queue answered 404): NanoMDM too old")
        if queue.status_code != 200:
            raise NanoMDMError(f"GET /v1/queue answered HTTP {queue.status_code}")
        try:
            named = version.json().get("version") if version.status_code == 200 else None
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            named = None
        if isinstance(named, str) and named.isprintable() and named:
            return f"NanoMDM {named[:40]}"
        return "NanoMDM"

    def _call(self, method: str, path: str, **kw: Any) -> Any:
        try:
            resp = self._http.request(method, path, **kw)
        except httpx.HTTPError as exc:
            raise NanoMDMError(f"{method} {path.split('/')[2]}: {exc}") from exc
        if resp.status_code == 204:
            return {}
        if resp.status_code in (401, 403):
            raise NanoMDMError(f"NanoMDM refused the API key ({resp.status_code})")
        try:
            answer = resp.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise NanoMDMError(
                f"{method} {path.split('/')[2]}: HTTP {resp.status_code} without a JSON answer"
            ) from None
        if resp.status_code not in (200, 207, 500) or not isinstance(answer, dict):
            raise NanoMDMError(f"{method} {path.split('/')[2]}: HTTP {resp.status_code}")
        return answer


def _ids(ids: Sequence[str]) -> str:
    if not ids:
        raise ValueError("no enrollment ids")
    return ",".join(quote(i, safe="") for i in ids)


def _chunks(ids: Sequence[str]) -> list[Sequence[str]]:
    return [ids[i : i + MAX_IDS_PER_CALL] for i in range(0, len(ids), MAX_IDS_PER_CALL)]


def _error_text(value: Any) -> str:
    if isinstance(value, str):
        return value or "error"
    if isinstance(value, dict):
        return str(value.get("error") or value)
    return str(value)


def _per_id(ids: Sequence[str], answer: dict[str, Any]) -> dict[str, IdResult]:
    """Each id's result: its own errors, or else the whole call's (a call that failed as a
    whole may name no id)."""
    status = answer.get("status")
    status = status if isinstance(status, dict) else {}
    out: dict[str, IdResult] = {}
    for i in ids:
        mine = status.get(i)
        mine = mine if isinstance(mine, dict) else {}
        errors = []
        for key in ("command_error", "push_error"):
            err = mine.get(key) or (None if mine else answer.get(key))
            errors.append(_error_text(err) if err else None)
        result = mine.get("push_result")
        out[i] = IdResult(errors[0], errors[1], result if isinstance(result, str) else None)
    return out


def decode_command(encoded: str) -> bytes:
    """A queue entry's command plist (base64 in the queue answer)."""
    return base64.b64decode(encoded)


def server_from_settings(settings: Settings, *, timeout: float = 30.0) -> MDMServer:
    """The client of the MDM server the settings name (``ROLLOUT_DELIVERY``), each call
    waiting ``timeout`` seconds at most."""
    if settings.delivery == "micromdm":
        from rollout.delivery.micromdm import MicroMDMClient

        if not settings.micromdm_url or not settings.micromdm_api_key:
            raise MDMServerError("ROLLOUT_MICROMDM_URL and ROLLOUT_MICROMDM_API_KEY must be set")
        return MicroMDMClient(settings.micromdm_url, settings.micromdm_api_key, timeout=timeout)
    if not settings.nanomdm_url or not settings.nanomdm_api_key:
        raise MDMServerError("ROLLOUT_NANOMDM_URL and ROLLOUT_NANOMDM_API_KEY must be set")
    return NanoMDMClient(settings.nanomdm_url, settings.nanomdm_api_key, timeout=timeout)
