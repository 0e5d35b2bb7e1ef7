"""A client for MicroMDM's API (HTTP Basic auth: user ``micromdm``, the API key as password).

MicroMDM takes one device per call, so the hand-over makes one call per command:

* ``PUT /v1/commands/{udid}`` with the raw command plist (rollout picks the CommandUUID;
  MicroMDM answers 201 with ``{"payload": {...}}`` or an ``{"error": ...}``);
* ``GET /push/{udid}`` to wake a device;
* ``GET /v1/commands/{udid}`` to view the device's queue (``device_command``: ``Commands``
  still to send and ``NotNow`` ones, beside ``Completed`` and ``Failed``);
* ``DELETE /v1/commands/{udid}`` to clear it;
* ``GET /v1/devices`` (a JSON body: ``filter_serial`` / ``filter_udid``; some deployments
  route it as ``POST``) for its device list (``{"devices": [{"udid", "serial_number",
  "os_version", "product_name", "model", "device_name", "enrolled", ...}]}``; a field whose
  value is empty or false is left out).

Its webhook posts the same events as NanoMDM's (the format started here).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

import httpx

from rollout.delivery.server import BasicAuthApi, IdResult, ListedDevice, MDMServerError

USER = "micromdm"
MAX_LIST_BYTES = 512 * 1024 * 1024
"""The device list is read up to this size (~1 KB a device: 500,000 devices fit)."""
PROBE_SERIAL = "ROLLOUT-CHECK"
"""The serial number ``rollout check`` filters the device list on (no device has it)."""


class MicroMDMClient(BasicAuthApi):
    """MicroMDM's API over one pooled HTTP client (safe to share between threads)."""

    user = USER
    max_ids_per_call = 1

    def enqueue(self, ids: Sequence[str], command: bytes, *, push: bool) -> dict[str, IdResult]:
        """Queue the raw command plist for each of ``ids`` (one call each), then push it
        when ``push``."""
        out: dict[str, IdResult] = {}
        for udid in ids:
            try:
                self._call("PUT", f"/v1/commands/{quote(udid, safe='')}", content=command)
            except MDMServerError as exc:
                out[udid] = IdResult(command_error=str(exc))
                continue
            out[udid] = self._push_one(udid) if push else IdResult()
        return out

    def push(self, ids: Sequence[str]) -> dict[str, IdResult]:
        """Wake ``ids``, one call each."""
        return {udid: self._push_one(udid) for udid in ids}

    def clear_queues(self, ids: Sequence[str]) -> dict[str, IdResult]:
        """Clear each device's queue."""
        out: dict[str, IdResult] = {}
        for udid in ids:
            try:
                self._call("DELETE", f"/v1/commands/{quote(udid, safe='')}")
            except MDMServerError as exc:
                out[udid] = IdResult(command_error=str(exc))
                continue
            out[udid] = IdResult()
        return out

    def queued(self, enrollment_id: str) -> set[str]:
        """CommandUUIDs MicroMDM still holds for a device: to send, or answered NotNow."""
        answer = self._call("GET", f"/v1/commands/{quote(enrollment_id, safe='')}")
        queue = answer.get("device_command") or {}
        if not isinstance(queue, dict):
            raise MDMServerError("the queue answer holds no device_command")
        found: set[str] = set()
        for part in ("Commands", "NotNow"):
            for c in queue.get(part) or []:
                if isinstance(c, dict) and isinstance(c.get("UUID"), str):
                    found.add(c["UUID"])
        return found

    def devices(self) -> list[ListedDevice]:
        """Every device MicroMDM knows, enrolled or not (DEP-assigned devices that never
        enrolled are listed too, with ``enrolled`` false)."""
        answer = self._list({})
        found = answer.get("devices")
        if found is None:
            return []
        if not isinstance(found, list):
            raise MDMServerError("the device list answer holds no devices list")
        return [d for d in (_listed(item) for item in found) if d is not None]

    def check(self) -> str:
        """An authenticated device-list read filtered to a serial number no device has."""
        self._list({"filter_serial": [PROBE_SERIAL]})
        return "MicroMDM"

    def _list(self, body: dict[str, Any]) -> dict[str, Any]:
        """The device list call: ``GET`` with a JSON body as MicroMDM routes it, ``POST`` when
        the server answers 405 to that."""
        content = json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        data = b""
        status = 0
        try:
            for method in ("GET", "POST"):
                with self._http.stream(
                    method, "/v1/devices", content=content, headers=headers
                ) as resp:
                    status = resp.status_code
                    if status == 405:
                        continue
                    data = _read_capped(resp, MAX_LIST_BYTES)
                    break
        except httpx.HTTPError as exc:
            raise MDMServerError(f"devices: no answer: {type(exc).__name__}: {exc}") from exc
        if status in (401, 403):
            raise MDMServerError(f"MicroMDM refused the API key ({status})")
        if status != 200:
            raise MDMServerError(f"devices: HTTP {status}")
        try:
            answer = json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise MDMServerError("devices: the answer is not JSON") from None
        if not isinstance(answer, dict):
            raise MDMServerError("devices: the answer is not a JSON object")
        if answer.get("err") or answer.get("error"):
            why = answer.get("err") or answer.get("error")
            raise MDMServerError(f"devices: {str(why)[:200]}")
        return answer

    def _push_one(self, udid: str) -> IdResult:
        # only success or failure is read from the answer: its fields are not relied on
        try:
            self._call("GET", f"/push/{quote(udid, safe='')}")
        except MDMServerError as exc:
            return IdResult(push_error=str(exc))
        return IdResult()

    def _call(self, method: str, path: str, **kw: Any) -> dict[str, Any]:
        what = f"{method} {path.split('/')[1] if path.startswith('/push') else 'commands'}"
        try:
            resp = self._http.request(method, path, **kw)
        except httpx.HTTPError as exc:
            raise MDMServerError(f"{what}: {exc}") from exc
        if resp.status_code in (401, 403):
            raise MDMServerError(f"MicroMDM refused the API key ({resp.status_code})")
        try:
            answer = resp.json() if resp.content else {}
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise MDMServerError(f"{what}: HTTP {resp.status_code} without a JSON answer") from None
        if not isinstance(answer, dict):
            raise MDMServerError(f"{what}: HTTP {resp.status_code}")
        if resp.status_code >= 300 or answer.get("error"):
            raise MDMServerError(
                f"{what}: HTTP {resp.status_code}: {answer.get('error', '')}"[:300]
            )
        return answer


def _read_capped(resp: httpx.Response, cap: int) -> bytes:
    parts: list[bytes] = []
    size = 0
    for chunk in resp.iter_bytes():
        size += len(chunk)
        if size > cap:
            raise MDMServerError(f"devices: the answer is larger than {cap // (1024 * 1024)} MB")
        parts.append(chunk)
    return b"".join(parts)


def _text(item: dict[str, Any], key: str) -> str | None:
    value = item.get(key)
    return value.strip() or None if isinstance(value, str) else None


def _listed(item: Any) -> ListedDevice | None:
    """One entry of the device list (None for one that is no JSON object). An entry without
    a UDID (a device Apple's Device Enrollment list assigned that never enrolled) is listed as
    not enrolled."""
    if not isinstance(item, dict):
        return None
    udid = _text(item, "udid")
    return ListedDevice(
        udid=udid or "",
        enrolled=udid is not None and item.get("enrolled") is True,
        serial_number=_text(item, "serial_number"),
        os_version=_text(item, "os_version"),
        product_name=_text(item, "product_name"),
        model=_text(item, "model"),
        device_name=_text(item, "device_name"),
    )
