"""What the hand-over and the sweep need from another MDM server, whichever it is."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit, urlunsplit

import httpx


def public_url(url: str) -> str:
    """``url`` as it may be shown: scheme, host, port and path, without credentials or
    query."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc = f"{host}:{port}" if port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


class MDMServerError(RuntimeError):
    """A call to the other MDM server could not be made or was refused as a whole."""


class NoDeviceListError(MDMServerError):
    """The server's API offers no list of its enrolled devices."""


@dataclass(frozen=True)
class ListedDevice:
    """One device in the server's own device list, as the server describes it."""

    udid: str
    enrolled: bool
    serial_number: str | None = None
    os_version: str | None = None
    product_name: str | None = None
    model: str | None = None
    device_name: str | None = None


@dataclass(frozen=True)
class IdResult:
    """What the server said about one enrollment id: its command and push errors, if any."""

    command_error: str | None = None
    push_error: str | None = None
    push_result: str | None = None


class MDMServer(Protocol):
    """An MDM server's API as rollout uses it (NanoMDM's, MicroMDM's)."""

    max_ids_per_call: int
    """Enrollment ids one enqueue call may name (they then share the command's UUID)."""

    def enqueue(self, ids: Sequence[str], command: bytes, *, push: bool) -> dict[str, IdResult]:
        """Queue one raw command plist for ``ids`` (and have them pushed when ``push``)."""

    def push(self, ids: Sequence[str]) -> dict[str, IdResult]:
        """Wake ``ids`` through the server's APNs client."""

    def clear_queues(self, ids: Sequence[str]) -> dict[str, IdResult]:
        """Clear the queues of ``ids``."""

    def queued(self, enrollment_id: str) -> set[str]:
        """CommandUUIDs the server still holds for an enrollment with no final answer."""

    def devices(self) -> list[ListedDevice]:
        """Every device the server knows (:class:`NoDeviceListError` when its API has no
        such list)."""

    def check(self) -> str:
        """One cheap authenticated call: what the server said (its version, when it tells),
        or :class:`MDMServerError` saying why it cannot be used."""

    def close(self) -> None:
        """Close the pooled connections."""


class BasicAuthApi:
    """An MDM server's API over one pooled HTTP client (safe to share between threads), with
    HTTP Basic auth: the user is the server's own name (:attr:`user`), the password its API
    key."""

    user = ""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.base_url,
            auth=(self.user, api_key),
            timeout=timeout,
            transport=transport,
            limits=httpx.Limits(max_connections=32, max_keepalive_connections=32),
        )

    def close(self) -> None:
        """Close the pooled connections."""
        self._http.close()
