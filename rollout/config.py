"""Configuration read from the environment (prefix ``ROLLOUT_``) with explicit defaults."""

from __future__ import annotations

import dataclasses
import datetime as dt
from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from rollout.policy import EnginePolicy

DEFAULT_BROKER_URL = "redis://127.0.0.1:6379/0"
EMBEDDED_BROKER_URL = "filesystem://"


class Settings(BaseSettings):
    """Every setting the product reads; each one can be set as ``ROLLOUT_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="ROLLOUT_", extra="ignore")

    home: Path = Field(
        default=Path("var"),
        description="Folder for the embedded database, the demo's keys and other local state.",
    )
    database_url: str = Field(
        default="",
        description="SQLAlchemy URL of the ledger; empty means a SQLite file in `home`.",
    )
    broker_url: str = Field(
        default=DEFAULT_BROKER_URL,
        description="Celery broker URL (Redis or RabbitMQ); filesystem:// is the embedded "
        "broker (files under ROLLOUT_HOME), which the demo uses by default.",
    )
    trust_anchors: str = Field(
        default="",
        description="Comma-separated paths of DER or PEM root certificates that profile "
        "signatures must chain to (for example Apple Root CA).",
    )
    max_body_bytes: int = Field(default=1024 * 1024, description="Largest MDM request body.")
    device_ca: str = Field(
        default="",
        description="Comma-separated PEM files of the CAs that issue device identity "
        "certificates; empty means signatures are checked but not their chain (development).",
    )
    identity_sources: str = Field(
        default="mdm-signature",
        description="Where a device's identity comes from, in order: mdm-signature, "
        "client-cert (only behind a TLS proxy that sets the header itself).",
    )
    client_cert_header: str = Field(
        default="Client-Cert", description="Header carrying the proxy-forwarded client cert."
    )
    identity_mode: str = Field(
        default="strict",
        description="strict: a device's certificate must be the one bound at Authenticate; "
        "bind-on-first-sight: bind devices that have none yet (migrated fleets); "
        "off: no identity required (development only).",
    )
    notnow_backoff_s: float = Field(
        default=300.0, description="First re-push delay after NotNow; doubles up to 4 h."
    )

    apns_cert: str = Field(
        default="", description="MDM push certificate: .p12/.pfx, or PEM (cert, key inside)."
    )
    apns_key: str = Field(default="", description="PEM private key, when not in apns_cert.")
    apns_password: str = Field(default="", description="Password of the .p12 or the key.")
    apns_sandbox: bool = Field(default=False, description="Use APNs' sandbox host.")
    apns_url: str = Field(default="", description="Base URL override (https://host:port).")
    apns_ca: str = Field(default="", description="Extra CA file to verify the APNs server.")
    apns_rate_limit: float = Field(default=0.0, description="Pushes/s for all workers; 0 = off.")
    redis_url: str = Field(
        default="",
        description="Redis for the shared push rate limit and circuit breaker; default: the "
        "broker when it is Redis, else in-process.",
    )
    batch_size: int = Field(default=500, description="Targets per fan-out task.")
    response_timeout_s: float = Field(
        default=4 * 3600.0, description="Silence after a push before it is pushed again."
    )
    max_pushes: int = Field(default=3, description="Pushes before a silent target times out.")
    tick_interval_s: float = Field(default=5.0, description="Controller tick period (beat).")
    sweep_interval_s: float = Field(default=60.0, description="Time-out sweep period (beat).")
    fast: bool = Field(default=False, description="Short time-outs (demo and tests).")

    dispatch_grace_s: float = Field(
        default=120.0, description="Re-dispatch a queued batch no worker pushed by then."
    )

    def engine_policy(self) -> EnginePolicy:
        """The engine's policy: the defaults (or the fast ones), then what was set explicitly."""
        base = EnginePolicy.fast() if self.fast else EnginePolicy()
        given = self.model_fields_set
        changes: dict[str, object] = {}
        if "batch_size" in given:
            changes["batch_size"] = self.batch_size
        if "response_timeout_s" in given:
            changes["response_timeout"] = dt.timedelta(seconds=self.response_timeout_s)
        if "max_pushes" in given:
            changes["max_pushes"] = self.max_pushes
        if "notnow_backoff_s" in given:
            changes["notnow_backoff"] = dt.timedelta(seconds=self.notnow_backoff_s)
        if "dispatch_grace_s" in given:
            changes["dispatch_grace"] = dt.timedelta(seconds=self.dispatch_grace_s)
        return dataclasses.replace(base, **changes)  # type: ignore[arg-type]

    def shared_redis_url(self) -> str | None:
        """The Redis that workers share for the push rate limit and breaker, if any."""
        if self.redis_url:
            return self.redis_url
        if self.broker_url.startswith(("redis://", "rediss://")):
            return self.broker_url
        return None

    def trust_anchor_paths(self) -> list[Path]:
        """The configured trust-anchor files."""
        return [Path(p.strip()) for p in self.trust_anchors.split(",") if p.strip()]

    def device_ca_paths(self) -> list[Path]:
        """The configured device-CA files."""
        return [Path(p.strip()) for p in self.device_ca.split(",") if p.strip()]

    def resolved_database_url(self) -> str:
        """The ledger URL, falling back to the embedded SQLite file."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.home / 'rollout.sqlite3').resolve()}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
