"""Push client configuration: small frozen value objects with explicit defaults."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from urllib.parse import urlsplit

from rollout.apns.errors import ConfigError

PRODUCTION_HOST = "api.push.apple.com"
SANDBOX_HOST = "api.sandbox.push.apple.com"
APNS_PORT = 443


@dataclass(frozen=True)
class PushConfig:
    """How the client reaches APNs and how hard it tries.

    ``base_url`` (``https://host:port``) overrides ``host``/``port``; the stand-in and the
    benchmark use it. ``ca_file`` adds a trust anchor for the server certificate (the stand-in's
    test CA); ``None`` trusts the system store, as production needs.
    """

    host: str = PRODUCTION_HOST
    port: int = APNS_PORT
    base_url: str | None = None
    ca_file: str | None = None
    max_connections: int = 4
    """Most HTTP/2 connections in the pool; a new one opens only when the others are full."""
    max_streams: int = 1000
    """Cap on concurrent streams per connection (the server's SETTINGS may lower it)."""
    timeout: float = 10.0
    """Seconds to wait for one push's answer before counting a transient failure."""
    connect_timeout: float = 10.0
    max_attempts: int = 5
    """Attempts per push for transient failures (1 = no retry)."""
    backoff_base: float = 0.5
    backoff_cap: float = 30.0
    rate_limit: float | None = None
    """Pushes per second across every process sharing the limiter; None = unlimited."""
    rate_burst: int | None = None
    """Token bucket size; None = a tenth of a second's worth (at least 1)."""
    priority: int = 10
    expiration: int | None = 86_400
    """Seconds from now written to apns-expiration; 0 = deliver once, None = omit the header."""
    ping_interval: float = 600.0
    """Send a PING after this many idle seconds (Apple suggests reusing connections for hours)."""
    breaker_cooldown: float = 300.0
    """Seconds the circuit stays open after a certificate failure before a half-open probe."""

    def __post_init__(self) -> None:
        if self.max_connections < 1 or self.max_streams < 1 or self.max_attempts < 1:
            raise ConfigError("max_connections, max_streams and max_attempts must be >= 1")
        if self.timeout <= 0 or self.connect_timeout <= 0:
            raise ConfigError("timeouts must be positive")
        if self.rate_limit is not None and self.rate_limit <= 0:
            raise ConfigError("rate_limit must be positive or None")
        if self.base_url is not None:
            self.endpoint()  # validates

    @classmethod
    def production(cls, **overrides: object) -> PushConfig:
        """Apple's production gateway (MDM push certificates are production-only)."""
        return cls(host=PRODUCTION_HOST, **overrides)  # type: ignore[arg-type]

    @classmethod
    def sandbox(cls, **overrides: object) -> PushConfig:
        """Apple's sandbox gateway."""
        return cls(host=SANDBOX_HOST, **overrides)  # type: ignore[arg-type]

    def replace(self, **changes: object) -> PushConfig:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    def endpoint(self) -> tuple[str, int]:
        """The (host, port) to connect to, from ``base_url`` when set."""
        if self.base_url is None:
            return self.host, self.port
        parts = urlsplit(self.base_url)
        if parts.scheme != "https" or not parts.hostname:
            raise ConfigError(f"base_url must look like https://host:port, not {self.base_url!r}")
        return parts.hostname, parts.port or APNS_PORT

    def burst(self) -> int:
        """The token-bucket size used with ``rate_limit``."""
        if self.rate_burst is not None:
            return max(1, self.rate_burst)
        return max(1, int((self.rate_limit or 0) / 10))
