"""Configuration read from the environment (prefix ``ROLLOUT_``) with explicit defaults.

Every value is checked when the settings are built: numbers are whole or finite and inside a
range that makes sense, names are among the allowed ones, the database URL names a backend
the ledger supports, and ``ROLLOUT_HOME`` becomes an absolute path once, so a later change of
folder cannot move the ledger. :func:`load_settings` turns every problem into one
:class:`SettingsError` line naming the variable, such as
``ROLLOUT_MAX_BODY_BYTES: 'abc' is not a whole number``.

Settings may also come from a TOML file named by ``ROLLOUT_CONFIG_FILE`` (keys are the names
without the prefix, in lower case; an environment variable wins over the file), and every secret
from a file named by ``ROLLOUT_<NAME>_FILE`` (container secrets). Secrets never appear in
``repr(settings)`` nor in an error: a message says ``<secret>`` where a value would be.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import ipaddress
import math
import os
import re
import tempfile
import tomllib
from collections.abc import Callable, Iterator
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails, PydanticCustomError
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from rollout.alerts import AlertPolicy
from rollout.ledger.sealing import LedgerKeyError, Sealer, parse_keys
from rollout.oidc import OidcConfig, parse_role_map, url_problem
from rollout.policy import EnginePolicy
from rollout.renewal import RenewalPolicy
from rollout.retention import RetentionPolicy
from rollout.spec import SpecError, parse_stages

ENV_PREFIX = "ROLLOUT_"
DEFAULT_BROKER_URL = "redis://127.0.0.1:6379/0"
EMBEDDED_BROKER_URL = "filesystem://"
IDENTITY_MODES = ("strict", "bind-on-first-sight", "off")
DELIVERIES = ("builtin", "nanomdm", "micromdm")
NANOMDM_PUSHERS = ("nanomdm", "rollout")
IDENTITY_SOURCES = ("mdm-signature", "client-cert")
# backend → the drivers the ledger ships with (None: the URL names no driver); psycopg 3 is
# the only PostgreSQL driver installed, and ledger.db rewrites postgresql:// and postgres://
DATABASE_DRIVERS: dict[str, tuple[str | None, ...]] = {
    "sqlite": (None, "pysqlite"),
    "postgresql": (None, "psycopg"),
    "postgres": (None,),
}
_DAY = 24 * 3600.0
_SETTING = "rollout_setting"  # the error type of every check below
CONFIG_FILE_VARIABLE = f"{ENV_PREFIX}CONFIG_FILE"
FILE_SUFFIX = "_FILE"
HIDDEN = "<secret>"
# settings whose whole value is secret: never shown (repr, errors, logs, API answers)
SECRET_SETTINGS = frozenset(
    {
        "api_token",
        "token_pepper",
        "apns_password",
        "alert_webhook_secret",
        "smtp_password",
        "database_password",
        "ledger_keys",
        "nanomdm_api_key",
        "micromdm_api_key",
        "webhook_secret",
    }
)
# URLs that may carry a password: shown with the password as ***
URL_SETTINGS = frozenset({"database_url", "broker_url", "redis_url"})
# every setting that also reads ROLLOUT_<NAME>_FILE (a file whose content is the value)
FILE_SETTINGS = SECRET_SETTINGS | URL_SETTINGS


class SettingsError(ValueError):
    """A setting is invalid: one line naming its environment variable and what is wrong."""


def _invalid(reason: str) -> PydanticCustomError:
    return PydanticCustomError(_SETTING, "{reason}", {"reason": reason})


def _quoted(value: object) -> str:
    """``repr(value)``, cut short: a message quotes a bad value, never all of a long one."""
    if isinstance(value, str) and len(value) > 32:
        return repr(value[:32]) + "..."
    return repr(value)


_WHOLE = re.compile(r"[+-]?[0-9]+")
# a plain decimal: float() would also take "nan", "inf", "1_0" and digits of other scripts
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]{1,3})?")
_TRUE = frozenset({"1", "true", "t", "yes", "y", "on"})
_FALSE = frozenset({"0", "false", "f", "no", "n", "off"})


def _whole_number(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and _WHOLE.fullmatch(value.strip()):
        text = value.strip()
        # no setting needs more digits, and int() of thousands of them is slow, then refused
        if len(text.lstrip("+-")) > 18:
            raise _invalid(f"{_quoted(value)} is far too large")
        return int(text)
    raise _invalid(f"{_quoted(value)} is not a whole number")


def _number(value: Any) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str) and _DECIMAL.fullmatch(value.strip()):
        number = float(value.strip())
    else:
        raise _invalid(f"{_quoted(value)} is not a number")
    if not math.isfinite(number):
        raise _invalid(f"{_quoted(value)} is not a finite number")
    return number


def _flag(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower() if isinstance(value, str | int) else ""
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise _invalid(f"{_quoted(value)} is not true or false (use true/false, 1/0, yes/no, on/off)")


def _within(
    low: float, high: float, unit: str = "", *, above: bool = False
) -> Callable[[Any], Any]:
    """A check that a number lies in ``[low, high]`` (``(low, high]`` when ``above``)."""
    suffix = f" {unit}" if unit else ""

    def check(value: float) -> float:
        shown = f"{value:g}" if isinstance(value, float) else str(value)
        if above and value <= low:
            raise _invalid(f"{shown} must be more than {low:g}{suffix}")
        if value < low:
            raise _invalid(f"{shown} is less than {low:g}{suffix}")
        if value > high:
            raise _invalid(f"{shown} is more than {high:g}{suffix}")
        return value

    return check


_Whole = BeforeValidator(_whole_number)
_Number = BeforeValidator(_number)
Flag = Annotated[bool, BeforeValidator(_flag)]
# Bounds: a body under 1 KiB refuses every real check-in; a fan-out batch is one SQL statement
# and one Celery message, so tens of thousands of targets in one is a mistake, not a tuning;
# 20 pushes with a 30-day answer time-out keeps the doubling re-push delay representable
# (timedelta ends near 2.7 million years); the time-outs and periods must be above zero.
BodyBytes = Annotated[int, _Whole, AfterValidator(_within(1024, 1024**3))]
BatchSize = Annotated[int, _Whole, AfterValidator(_within(1, 10_000))]
MaxPushes = Annotated[int, _Whole, AfterValidator(_within(1, 20))]
MaxVerify = Annotated[int, _Whole, AfterValidator(_within(1, 10))]
Backoff = Annotated[float, _Number, AfterValidator(_within(0, 4 * 3600, "seconds", above=True))]
ResponseTimeout = Annotated[
    float, _Number, AfterValidator(_within(0, 30 * _DAY, "seconds", above=True))
]
TickInterval = Annotated[float, _Number, AfterValidator(_within(0, 3600, "seconds", above=True))]
SweepInterval = Annotated[float, _Number, AfterValidator(_within(0, _DAY, "seconds", above=True))]
DispatchGrace = Annotated[float, _Number, AfterValidator(_within(0, _DAY, "seconds", above=True))]
RateLimit = Annotated[float, _Number, AfterValidator(_within(0, 1e6, "pushes per second"))]
# The endpoint's own guards: a read time-out under a second would cut off real devices on a slow
# network, and over an hour it guards nothing; one process does not serve 100,000 sockets; a
# refusal window up to a day, and up to 100,000 sources in detail per window (about 100 MB).
ReadTimeout = Annotated[float, _Number, AfterValidator(_within(0, 3600, "seconds", above=True))]
MaxConnections = Annotated[int, _Whole, AfterValidator(_within(1, 100_000))]
RefusalWindow = Annotated[float, _Number, AfterValidator(_within(0, _DAY, "seconds", above=True))]
RefusalSources = Annotated[int, _Whole, AfterValidator(_within(1, 100_000))]
# Retention: a day up to a hundred years; a delete batch small enough never to hold a lock long.
RetentionDays = Annotated[float, _Number, AfterValidator(_within(0, 36500, "days", above=True))]
RetentionBatch = Annotated[int, _Whole, AfterValidator(_within(100, 50_000))]
Hour = Annotated[int, _Whole, AfterValidator(_within(0, 23))]
Duty = Annotated[float, _Number, AfterValidator(_within(0, 1, above=True))]
WaitDays = Annotated[float, _Number, AfterValidator(_within(0, 3650, "days"))]
RetentionMinutes = Annotated[
    float, _Number, AfterValidator(_within(0, 24 * 60, "minutes", above=True))
]
# The workers' metrics: 0 is off; pool process i listens on the base port + i.
MetricsPort = Annotated[int, _Whole, AfterValidator(_within(0, 65535))]


def _api_token(value: str) -> str:
    """An operator API token is empty (writes off) or long enough not to be guessed."""
    value = value.strip()
    if value and (len(value) < 24 or not value.isprintable() or " " in value):
        # the token is not quoted back: it is a secret
        raise _invalid("must be at least 24 printable characters without spaces (or empty)")
    return value


ApiToken = Annotated[str, AfterValidator(_api_token)]

# Renewal: a window over a year renews profiles that were just made; escalation inside it.
WindowDays = Annotated[float, _Number, AfterValidator(_within(0, 365, "days", above=True))]
EscalateDays = Annotated[float, _Number, AfterValidator(_within(0, 365, "days"))]
RepeatHours = Annotated[float, _Number, AfterValidator(_within(0, 24 * 30, "hours", above=True))]
Share = Annotated[float, _Number, AfterValidator(_within(0, 1))]
ScanInterval = Annotated[float, _Number, AfterValidator(_within(0, _DAY, "seconds", above=True))]
SmtpPort = Annotated[int, _Whole, AfterValidator(_within(1, 65535))]
APPLE_APIS = ("app-store-connect", "enterprise")


def _app_windows(value: str) -> str:
    """``pattern=days`` pairs, comma-separated (``com.example.*=45,com.example.kiosk=14``)."""
    for part in (p.strip() for p in value.split(",") if p.strip()):
        pattern, sep, days = part.partition("=")
        if not sep or not pattern.strip():
            raise _invalid(f"{_quoted(part)} is not pattern=days (e.g. com.example.*=45)")
        try:
            _within(0, 365, "days", above=True)(_number(days))
        except PydanticCustomError as exc:
            raise _invalid(f"{pattern.strip()}: {exc.message()}") from None
    return value.strip()


def _secret(value: str) -> str:
    """A shared secret: empty (off) or long enough not to be guessed."""
    value = value.strip()
    if value and len(value) < 16:
        raise _invalid("must be at least 16 characters (or empty)")  # never quoted back
    return value


def _stage_list(value: str) -> str:
    try:
        parse_stages(value)
    except SpecError as exc:
        raise _invalid(str(exc).removeprefix("stages: ")) from None
    return value.strip()


def _oidc_url(value: str) -> str:
    """The identity provider's issuer or key set URL: empty (off / discovered) or https."""
    value = value.strip()
    problem = url_problem(value) if value else None
    if problem is not None:
        raise _invalid(f"{_quoted(value)} {problem}")
    return value


def _oidc_role_map(value: str) -> str:
    if value.strip():
        try:
            parse_role_map(value)
        except ValueError as exc:
            raise _invalid(str(exc)) from None
    return value.strip()


_CLAIM_PATH = re.compile(r"[^\s.]+(?:\.[^\s.]+)*")


def _claim_name(value: str) -> str:
    """A claim name or dotted path (``roles``, ``realm_access.roles``)."""
    value = value.strip()
    if not _CLAIM_PATH.fullmatch(value) or len(value) > 200:
        raise _invalid(f"{_quoted(value)} is not a claim name or dotted path (e.g. roles)")
    return value


AppWindows = Annotated[str, AfterValidator(_app_windows)]
OidcUrl = Annotated[str, AfterValidator(_oidc_url)]
OidcRoleMap = Annotated[str, AfterValidator(_oidc_role_map)]
ClaimName = Annotated[str, AfterValidator(_claim_name)]
StageList = Annotated[str, AfterValidator(_stage_list)]
Secret = Annotated[str, AfterValidator(_secret)]


class Settings(BaseSettings):
    """Every setting the product reads; each one can be set as ``ROLLOUT_<NAME>``.

    Build it with :func:`load_settings` (or :func:`get_settings`) to get a one-line
    :class:`SettingsError` for a bad value; ``Settings(...)`` itself raises pydantic's error.
    """

    # an empty variable (ROLLOUT_BATCH_SIZE= in an env file) means "not set": the default
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="ignore", env_ignore_empty=True, validate_default=True
    )

    home: Path = Field(
        default=Path("var"),
        description="Folder for the embedded database, the demo's keys and other local state.",
    )
    database_url: str = Field(
        default="",
        description="SQLAlchemy URL of the ledger; empty means a SQLite file in `home`.",
    )
    database_password: str = Field(
        default="",
        description="Password of the ledger's database server, merged into database_url "
        "(which then holds none): for a password kept in a secret file.",
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
    max_body_bytes: BodyBytes = Field(default=1024 * 1024, description="Largest MDM request body.")
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
    notnow_backoff_s: Backoff = Field(
        default=300.0, description="First re-push delay after NotNow; doubles up to 4 h."
    )
    require_udid_in_cert: Flag = Field(
        default=False,
        description="Refuse (403) every message whose identity certificate does not name its "
        "UDID (or, for a User Enrollment, its EnrollmentID) in the subject CN or a SAN.",
    )
    header_timeout_s: ReadTimeout = Field(
        default=15.0,
        description="A connection must send a request's whole header within this time of its "
        "first byte (or of the connection opening); else it is closed.",
    )
    body_timeout_s: ReadTimeout = Field(
        default=30.0,
        description="An MDM request's whole body must arrive within this time of its "
        "headers; else it is answered 408 and the connection closed.",
    )
    max_connections: MaxConnections = Field(
        default=1000,
        description="Open connections one web process holds; more are answered 503 and "
        "closed at once. Keep it under the process's open-file limit.",
    )
    refusal_window_s: RefusalWindow = Field(
        default=60.0,
        description="Refusals of one reason from one source inside this window are journalled "
        "as one event in full and one count.",
    )
    refusal_max_sources: RefusalSources = Field(
        default=200,
        description="Sources journalled in detail per refusal window; refusals from further "
        "sources are only counted, per reason.",
    )

    api_token: ApiToken = Field(
        default="",
        description="Bearer token the operator API's write routes (plan, create, controls) "
        "ask for; empty: those routes are off (403).",
    )

    renewal_window_days: WindowDays = Field(
        default=30.0, description="Renew held profiles that expire within this many days."
    )
    renewal_windows: AppWindows = Field(
        default="",
        description="Per application identifier: pattern=days, comma-separated "
        "(com.example.*=45); the first match wins.",
    )
    renewal_escalate_days: EscalateDays = Field(
        default=7.0, description="Alerts turn critical when this close to the expiry."
    )
    renewal_start: Flag = Field(
        default=True, description="Start renewal rollouts at once (false: leave them drafts)."
    )
    renewal_stages: StageList = Field(
        default="1%,5%,25%,100%",
        description="Stages of renewal rollouts (cumulative), each behind the default gate.",
    )
    renewal_min_success_rate: Share = Field(
        default=0.9,
        description="Each renewal stage's gate: acknowledged / (acknowledged + failed) at least.",
    )
    inventory_sweep_days: EscalateDays = Field(
        default=7.0, description="Ask every device for its profile list this often; 0: never."
    )
    renewal_scan_interval_s: ScanInterval = Field(
        default=3600.0, description="Renewal scan period (beat)."
    )
    profile_folder: str = Field(
        default="", description="A folder of renewed profiles the scan checks and adds."
    )
    apple_api: str = Field(
        default="",
        description="Fetch renewed profiles from Apple: app-store-connect or enterprise.",
    )
    apple_issuer_id: str = Field(default="", description="Apple API key's issuer ID.")
    apple_key_id: str = Field(default="", description="Apple API key's ID.")
    apple_key_file: str = Field(default="", description="Apple API private key (.p8) file.")
    apple_api_url: str = Field(default="", description="Base URL override for Apple's API.")
    alert_repeat_hours: RepeatHours = Field(
        default=24.0, description="Send an unacknowledged alert again after this many hours."
    )
    delivery: str = Field(
        default="builtin",
        description="How commands reach devices: builtin (rollout's own MDM endpoint and APNs), "
        "nanomdm or micromdm (an existing NanoMDM's or MicroMDM's API and webhook).",
    )
    nanomdm_url: str = Field(default="", description="NanoMDM's base URL (delivery nanomdm).")
    nanomdm_api_key: str = Field(default="", description="NanoMDM's API key (HTTP Basic).")
    micromdm_url: str = Field(default="", description="MicroMDM's base URL (delivery micromdm).")
    micromdm_api_key: str = Field(default="", description="MicroMDM's API key (HTTP Basic).")
    nanomdm_push: str = Field(
        default="nanomdm",
        description="Who wakes devices under delivery nanomdm: nanomdm (its push API) or "
        "rollout (its own APNs client, ROLLOUT_APNS_CERT).",
    )
    webhook_secret: Secret = Field(
        default="",
        description="Shared secret of the MDM webhook (/webhook/mdm/<secret>); 16+ characters.",
    )
    delivery_sweep_after_s: SweepInterval = Field(
        default=900.0,
        description="Ask NanoMDM about a command left unanswered this long (a lost webhook).",
    )
    alert_webhook_url: str = Field(default="", description="POST alerts here as JSON.")
    alert_webhook_secret: Secret = Field(
        default="", description="HMAC-SHA256 key that signs each alert webhook body."
    )
    smtp_host: str = Field(default="", description="Mail alerts through this SMTP server.")
    smtp_port: SmtpPort = Field(default=25, description="SMTP port.")
    smtp_starttls: Flag = Field(default=False, description="Use STARTTLS.")
    smtp_username: str = Field(default="", description="SMTP user.")
    smtp_password: str = Field(default="", description="SMTP password.")
    smtp_from: str = Field(default="", description="Sender address of alert mail.")
    smtp_to: str = Field(default="", description="Recipients of alert mail, comma-separated.")

    token_pepper: Secret = Field(
        default="", description="HMAC key the ledger's API token hashes are made with."
    )
    ledger_keys: Secret = Field(
        default="",
        description="Keys that seal devices' push tokens and push magic at rest (32 bytes, "
        "base64; make one with `rollout keys new`), comma-separated: the first seals, all open. "
        "Empty: stored in plain text.",
    )
    oidc_issuer: OidcUrl = Field(
        default="",
        description="The identity provider whose JWTs open the operator API (the exact `iss`); "
        "empty: OIDC is off.",
    )
    oidc_audience: Annotated[str, AfterValidator(str.strip)] = Field(
        default="", description="The `aud` OIDC tokens must name (required with the issuer)."
    )
    oidc_jwks_url: OidcUrl = Field(
        default="",
        description="The provider's key set; empty: the jwks_uri of "
        "{issuer}/.well-known/openid-configuration.",
    )
    oidc_role_claim: ClaimName = Field(
        default="roles",
        description="The claim (a string or a list; a dotted path reaches into objects) whose "
        "values ROLLOUT_OIDC_ROLE_MAP maps to roles.",
    )
    oidc_role_map: OidcRoleMap = Field(
        default="",
        description="value=role pairs, comma-separated (rollout-admin=admin,rollout-read=viewer), "
        "or a JSON object; the highest mapped role wins (required with the issuer).",
    )
    oidc_name_claim: ClaimName = Field(
        default="preferred_username",
        description="The claim naming the caller in events (oidc:<name>); else sub.",
    )

    apns_cert: str = Field(
        default="", description="MDM push certificate: .p12/.pfx, or PEM (cert, key inside)."
    )
    apns_key: str = Field(default="", description="PEM private key, when not in apns_cert.")
    apns_password: str = Field(default="", description="Password of the .p12 or the key.")
    apns_sandbox: Flag = Field(default=False, description="Use APNs' sandbox host.")
    apns_url: str = Field(default="", description="Base URL override (https://host:port).")
    apns_ca: str = Field(default="", description="Extra CA file to verify the APNs server.")
    apns_rate_limit: RateLimit = Field(
        default=0.0, description="Pushes/s for all workers; 0 = off."
    )
    redis_url: str = Field(
        default="",
        description="Redis for the shared push rate limit and circuit breaker; default: the "
        "broker when it is Redis, else in-process.",
    )
    batch_size: BatchSize = Field(default=500, description="Targets per fan-out task.")
    response_timeout_s: ResponseTimeout = Field(
        default=4 * 3600.0, description="Silence after a push before it is pushed again."
    )
    max_pushes: MaxPushes = Field(default=3, description="Pushes before a silent target times out.")
    max_verify: MaxVerify = Field(
        default=2, description="Installs tried before a target that does not list it fails."
    )
    tick_interval_s: TickInterval = Field(default=5.0, description="Controller tick period (beat).")
    sweep_interval_s: SweepInterval = Field(
        default=60.0, description="Time-out sweep period (beat)."
    )
    fast: Flag = Field(default=False, description="Short time-outs (demo and tests).")

    dispatch_grace_s: DispatchGrace = Field(
        default=120.0, description="Re-dispatch a queued batch no worker pushed by then."
    )

    retention_targets_days: RetentionDays = Field(
        default=365.0,
        description="A finished rollout's targets, commands and device events are archived "
        "then removed this long after it finished (unless pinned); its summary stays.",
    )
    retention_commands_days: RetentionDays = Field(
        default=90.0,
        description="Answered commands of no rollout (inventory sweeps) are archived then "
        "removed this long after their answer.",
    )
    retention_events_days: RetentionDays = Field(
        default=180.0, description="Events of no rollout are archived then removed after this."
    )
    retention_refusals_days: RetentionDays = Field(
        default=30.0,
        description="Refusals (mdm.refused events) are archived then removed after this.",
    )
    retention_archive_dir: str = Field(
        default="",
        description="Folder of the archive files written before rows are removed; empty: "
        "`archive` in ROLLOUT_HOME.",
    )
    retention_batch_size: RetentionBatch = Field(
        default=2000, description="Rows deleted per transaction by a prune."
    )
    retention_duty: Duty = Field(
        default=0.25,
        description="The share of its time a prune spends working: it rests between batches "
        "so check-ins keep the machine (1: no rest).",
    )
    retention_max_minutes: RetentionMinutes = Field(
        default=45.0,
        description="Beat's prune stops between batches after this long; the next one goes "
        "on from there (a prune by hand runs to the end).",
    )
    retention_partition_wait_days: WaitDays = Field(
        default=31.0,
        description="PostgreSQL: a due rollout waits up to this long for the other rollouts of "
        "its partition block to come due, so the block is dropped whole instead of its rows "
        "deleted one batch at a time (0: never wait).",
    )
    retention_prune: Flag = Field(
        default=True, description="Prune from Celery beat once a day (false: only by hand)."
    )
    retention_hour: Hour = Field(
        default=3, description="The hour (UTC, 0-23) of beat's daily prune: a quiet one."
    )

    worker_metrics_port: MetricsPort = Field(
        default=0,
        description="Base port of the Celery workers' Prometheus metrics: pool process i "
        "serves them on this port + i (a solo or threads pool: on this port); 0 = off.",
    )
    worker_metrics_addr: str = Field(
        default="0.0.0.0",
        description="Address the workers' metrics listen on (an IP address; no "
        "authentication there: keep it on a private network).",
    )

    @field_validator("home")
    @classmethod
    def _absolute_home(cls, value: Path) -> Path:
        # resolved once, here: every later use (the SQLite file, the broker's folder, the
        # demo's keys) then names the same folder whatever the current folder becomes
        try:
            return value.expanduser().resolve()
        except (OSError, RuntimeError, ValueError) as exc:
            raise _invalid(f"{_quoted(str(value))} is not a usable path ({exc})") from None

    @field_validator("database_url")
    @classmethod
    def _supported_database(cls, value: str) -> str:
        value = value.strip()
        if not value:
            return value
        supported = "sqlite or postgresql, e.g. postgresql://user@host/db or sqlite:///path"
        try:
            url = make_url(value)
        except (ArgumentError, ValueError):
            # the URL is not quoted back: it may hold a password
            raise _invalid(f"not a database URL (use {supported})") from None
        backend, _, driver = url.drivername.partition("+")
        drivers = DATABASE_DRIVERS.get(backend)
        if drivers is None:
            raise _invalid(f"backend {_quoted(backend)} is not supported (use {supported})")
        if (driver or None) not in drivers:
            forms = " or ".join(f"{backend}+{d}://" if d else f"{backend}://" for d in drivers)
            raise _invalid(f"driver {_quoted(driver)} is not supported (use {forms})")
        return value

    @field_validator("apple_api", mode="before")
    @classmethod
    def _known_apple_api(cls, value: Any) -> Any:
        api = value.strip().lower() if isinstance(value, str) else value
        if api not in ("", *APPLE_APIS):
            raise _invalid(f"{_quoted(value)} is not one of {', '.join(APPLE_APIS)}")
        return api

    @field_validator("delivery", mode="before")
    @classmethod
    def _known_delivery(cls, value: Any) -> Any:
        chosen = value.strip().lower() if isinstance(value, str) else value
        if chosen not in DELIVERIES:
            raise _invalid(f"{_quoted(value)} is not one of {', '.join(DELIVERIES)}")
        return chosen

    @field_validator("nanomdm_push", mode="before")
    @classmethod
    def _known_pusher(cls, value: Any) -> Any:
        chosen = value.strip().lower() if isinstance(value, str) else value
        if chosen not in NANOMDM_PUSHERS:
            raise _invalid(f"{_quoted(value)} is not one of {', '.join(NANOMDM_PUSHERS)}")
        return chosen

    @field_validator("alert_webhook_url", "apple_api_url", "nanomdm_url", "micromdm_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        value = value.strip()
        if value and not re.match(r"https?://[^/\s]+", value):
            raise _invalid("is not an http:// or https:// URL")  # may hold a token: not quoted
        return value

    @field_validator("ledger_keys")
    @classmethod
    def _ledger_keys(cls, value: str) -> str:
        try:
            parse_keys(value)
        except LedgerKeyError as exc:
            raise _invalid(str(exc)) from None  # names the key's position, never its value
        return value

    @field_validator("worker_metrics_addr")
    @classmethod
    def _ip_address(cls, value: str) -> str:
        value = value.strip()
        try:
            return str(ipaddress.ip_address(value))
        except ValueError:
            raise _invalid(f"{_quoted(value)} is not an IP address (e.g. 0.0.0.0)") from None

    @field_validator("identity_mode", mode="before")
    @classmethod
    def _known_identity_mode(cls, value: Any) -> Any:
        mode = value.strip().lower() if isinstance(value, str) else value
        if mode not in IDENTITY_MODES:
            raise _invalid(f"{_quoted(value)} is not one of {', '.join(IDENTITY_MODES)}")
        return mode

    @field_validator("identity_sources", mode="before")
    @classmethod
    def _known_identity_sources(cls, value: Any) -> Any:
        if not isinstance(value, str):
            raise _invalid(f"{_quoted(value)} is not a comma-separated list")
        sources = [s.strip().lower() for s in value.split(",") if s.strip()]
        if not sources:
            raise _invalid(f"names no source; use one or more of {', '.join(IDENTITY_SOURCES)}")
        for source in sources:
            if source not in IDENTITY_SOURCES:
                raise _invalid(f"{_quoted(source)} is not one of {', '.join(IDENTITY_SOURCES)}")
        return ",".join(dict.fromkeys(sources))

    @model_validator(mode="after")
    def _complete(self) -> Settings:
        # settings that only work together: name the missing one
        needs = {
            "apple_api": ("apple_issuer_id", "apple_key_id", "apple_key_file"),
            "alert_webhook_url": ("alert_webhook_secret",),
            "smtp_host": ("smtp_from", "smtp_to"),
            "oidc_issuer": ("oidc_audience", "oidc_role_map"),
        }
        if self.delivery != "builtin":
            server = self.delivery
            for name in (f"{server}_url", f"{server}_api_key", "webhook_secret"):
                if not getattr(self, name):
                    raise _invalid(
                        f"{ENV_PREFIX}{name.upper()}: must be set when "
                        f"{ENV_PREFIX}DELIVERY is {server}"
                    )
        for given, wanted in needs.items():
            if getattr(self, given):
                for name in wanted:
                    if not getattr(self, name):
                        raise _invalid(
                            f"{ENV_PREFIX}{name.upper()}: must be set when "
                            f"{ENV_PREFIX}{given.upper()} is"
                        )
        return self

    @model_validator(mode="after")
    def _database_password_has_a_server(self) -> Settings:
        if not self.database_password:
            return self
        name = f"{ENV_PREFIX}DATABASE_PASSWORD"
        if not self.database_url:
            raise _invalid(f"{name}: needs {ENV_PREFIX}DATABASE_URL (a server URL, no password)")
        url = make_url(self.database_url)
        if url.drivername.partition("+")[0] == "sqlite":
            raise _invalid(f"{name}: a SQLite ledger has no password")
        if url.password is not None:
            raise _invalid(f"{name}: {ENV_PREFIX}DATABASE_URL holds a password too; give one")
        return self

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        # secrets never reach a log line or a traceback through repr() or str()
        for name, value in super().__repr_args__():
            if name in SECRET_SETTINGS and value:
                yield name, HIDDEN
            elif name in URL_SETTINGS and value:
                yield name, url_without_password(str(value))
            else:
                yield name, value

    def renewal_policy(self) -> RenewalPolicy:
        """When and how the renewal scan acts."""
        windows = []
        for part in (p.strip() for p in self.renewal_windows.split(",") if p.strip()):
            pattern, _, days = part.partition("=")
            windows.append((pattern.strip(), dt.timedelta(days=float(days))))
        return RenewalPolicy(
            window=dt.timedelta(days=self.renewal_window_days),
            windows=tuple(windows),
            escalate_within=dt.timedelta(days=self.renewal_escalate_days),
            start=self.renewal_start,
            stages=tuple(
                dataclasses.replace(
                    stage,
                    gate=dataclasses.replace(
                        stage.gate, min_success_rate=self.renewal_min_success_rate
                    ),
                )
                for stage in parse_stages(self.renewal_stages)
            ),
            server_wakes=self.server_wakes,
        )

    def retention_policy(self) -> RetentionPolicy:
        """How long each kind of record stays in the ledger."""
        return RetentionPolicy(
            targets=dt.timedelta(days=self.retention_targets_days),
            commands=dt.timedelta(days=self.retention_commands_days),
            events=dt.timedelta(days=self.retention_events_days),
            refusals=dt.timedelta(days=self.retention_refusals_days),
            batch_size=self.retention_batch_size,
            duty=self.retention_duty,
            max_run=dt.timedelta(minutes=self.retention_max_minutes),
            partition_wait=dt.timedelta(days=self.retention_partition_wait_days),
        )

    def archive_folder(self) -> Path:
        """Where archive files go."""
        if self.retention_archive_dir:
            return Path(self.retention_archive_dir).expanduser().absolute()
        return self.home / "archive"

    def oidc(self) -> OidcConfig | None:
        """How OIDC tokens are checked, or None when OIDC is off (no issuer)."""
        if not self.oidc_issuer:
            return None
        return OidcConfig(
            issuer=self.oidc_issuer,
            audience=self.oidc_audience,
            role_map=parse_role_map(self.oidc_role_map),
            jwks_url=self.oidc_jwks_url,
            role_claim=self.oidc_role_claim,
            name_claim=self.oidc_name_claim,
        )

    def sweep_every(self) -> dt.timedelta | None:
        """How often the inventory is swept (None: never)."""
        return dt.timedelta(days=self.inventory_sweep_days) if self.inventory_sweep_days else None

    def alert_policy(self) -> AlertPolicy:
        """Where alerts go and how often they repeat."""
        channels = []
        if self.alert_webhook_url:
            channels.append("webhook")
        if self.smtp_host:
            channels.append("email")
        return AlertPolicy(
            repeat_every=dt.timedelta(hours=self.alert_repeat_hours), channels=tuple(channels)
        )

    def ensure_home(self) -> Path:
        """Make sure the home folder exists and can be written; return it.

        Call it before anything writes there (the embedded ledger, the broker's files, the
        demo's keys). Raises :class:`SettingsError` when the path is a file, cannot be
        created, or refuses a new file.
        """
        home = self.home
        try:
            if home.exists() and not home.is_dir():
                raise SettingsError(f"ROLLOUT_HOME: {home} is a file, not a folder")
            home.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SettingsError(
                f"ROLLOUT_HOME: cannot create {home} ({exc.strerror or exc})"
            ) from None
        try:
            # a real file, not os.access(): that says yes to root on a read-only mount
            with tempfile.TemporaryFile(dir=home):
                pass
        except OSError as exc:
            raise SettingsError(
                f"ROLLOUT_HOME: cannot write in {home} ({exc.strerror or exc})"
            ) from None
        return home

    def embedded_ledger_path(self) -> Path | None:
        """The SQLite file that holds the ledger, or None for a server (or in-memory) ledger."""
        url = make_url(self.resolved_database_url())
        if url.drivername.partition("+")[0] != "sqlite" or url.database in (None, "", ":memory:"):
            return None
        return Path(url.database).expanduser().absolute()

    def ledger_location(self) -> str:
        """Where the ledger is, for people: the SQLite file, or the server URL without password.

        Printed by commands that open the ledger, so running one from another folder or with
        another ``ROLLOUT_HOME`` shows at once which ledger it uses.
        """
        path = self.embedded_ledger_path()
        if path is not None:
            return f"SQLite file {path}"
        return make_url(self.resolved_database_url()).render_as_string(hide_password=True)

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
        if "max_verify" in given:
            changes["max_verify"] = self.max_verify
        changes["tick_interval"] = dt.timedelta(seconds=self.tick_interval_s)
        changes["server_wakes"] = self.server_wakes
        return dataclasses.replace(base, **changes)  # type: ignore[arg-type]

    @property
    def server_wakes(self) -> bool:
        """Whether the MDM server beside which rollout delivers wakes the devices (its own
        push API), rather than rollout's APNs client."""
        return self.delivery != "builtin" and self.nanomdm_push != "rollout"

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

    def sealer(self) -> Sealer:
        """What seals devices' push secrets in the ledger (:mod:`rollout.ledger.sealing`)."""
        return Sealer(parse_keys(self.ledger_keys))

    def resolved_database_url(self) -> str:
        """The ledger URL, falling back to the embedded SQLite file."""
        if self.database_url and self.database_password:
            url = make_url(self.database_url).set(password=self.database_password)
            return url.render_as_string(hide_password=False)
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.home / 'rollout.sqlite3').resolve()}"


def url_without_password(value: str) -> str:
    """``value`` with the password of its user part as ``***`` (``<secret>`` if unparsable)."""
    try:
        return make_url(value).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return HIDDEN


def setting_variables() -> frozenset[str]:
    """Every environment variable the settings read: ``ROLLOUT_<NAME>`` of each setting, the
    ``ROLLOUT_<NAME>_FILE`` of each secret, and ``ROLLOUT_CONFIG_FILE``."""
    names = {f"{ENV_PREFIX}{field.upper()}" for field in Settings.model_fields}
    names |= {f"{ENV_PREFIX}{field.upper()}{FILE_SUFFIX}" for field in FILE_SETTINGS}
    return frozenset({*names, CONFIG_FILE_VARIABLE})


def _secret_file(path: str, label: str) -> str:
    """A secret file's content, without its trailing newline."""
    try:
        data = Path(path).expanduser().read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise SettingsError(f"{label}: {path} is not UTF-8 text") from None
    except OSError as exc:
        raise SettingsError(f"{label}: cannot read {path} ({exc.strerror or exc})") from None
    return data.removesuffix("\n").removesuffix("\r")


def _toml_value(value: Any) -> Any:
    """A list of plain values becomes the comma-separated text the setting takes."""
    if isinstance(value, list) and all(
        isinstance(v, str | int | float) and not isinstance(v, bool) for v in value
    ):
        return ",".join(str(v) for v in value)
    return value


def _flatten(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``[renewal] window_days = 30`` is ``renewal.window_days``; the key is the setting
    ``renewal_window_days`` (see :func:`_config_file`)."""
    flat: dict[str, Any] = {}
    for key, value in table.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _config_file(path: str) -> dict[str, tuple[str, Any]]:
    """The settings of a TOML file: field name → (the key as written, value).

    Raises :class:`SettingsError` naming the file (and the key) for an unreadable file, bad
    TOML, an unknown key, or a secret given both inline and as ``<name>_file``.
    """
    try:
        text = Path(path).expanduser().read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise SettingsError(f"{CONFIG_FILE_VARIABLE}: {path} is not UTF-8 text") from None
    except OSError as exc:
        raise SettingsError(
            f"{CONFIG_FILE_VARIABLE}: cannot read {path} ({exc.strerror or exc})"
        ) from None
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{path}: not valid TOML ({exc})") from None
    fields = Settings.model_fields
    found: dict[str, tuple[str, Any]] = {}
    for key, value in _flatten(document).items():
        name = key.replace(".", "_").lower()
        file_of = name.removesuffix(FILE_SUFFIX.lower())
        if name.startswith(ENV_PREFIX.lower()):
            raise SettingsError(
                f"{path}: {key}: unknown key (write it without the {ENV_PREFIX} prefix, "
                f"as {name.removeprefix(ENV_PREFIX.lower())})"
            )
        if name not in fields and not (name != file_of and file_of in FILE_SETTINGS):
            raise SettingsError(f"{path}: {key}: unknown key{_did_you_mean(name)}")
        if name != file_of and name not in fields:  # a secret's file: read it now
            if not isinstance(value, str):
                raise SettingsError(f"{path}: {key}: must be a file name (text)")
            if file_of in found:
                raise SettingsError(f"{path}: {found[file_of][0]} and {key} are both set; use one")
            found[file_of] = (key, _secret_file(value, f"{path}: {key}"))
            continue
        if name in found:
            raise SettingsError(f"{path}: {found[name][0]} and {key} are both set; use one")
        found[name] = (key, _toml_value(value))
    return found


def _did_you_mean(name: str) -> str:
    import difflib

    close = difflib.get_close_matches(name, list(Settings.model_fields), n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def _describe(error: ErrorDetails, origins: dict[str, str]) -> str:
    field = str(error["loc"][0]) if error["loc"] else ""
    name = origins.get(field, f"{ENV_PREFIX}{field.upper()}") if field else "settings"
    if error["type"] == _SETTING:
        if not field and error["msg"].startswith(ENV_PREFIX):  # names its own variable
            return error["msg"]
        return f"{name}: {error['msg']}"
    # a check this module does not make itself; pydantic's words, without the value (which
    # may be a password or a URL holding one)
    return f"{name}: {error['msg'][:1].lower()}{error['msg'][1:]}"


def _gathered(values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """What to build the settings from besides the plain environment, and where each came
    from (how an error names it): ``values``, then ``ROLLOUT_<NAME>_FILE`` files, then the
    config file's keys that no variable overrides."""
    environ = {k.upper(): v for k, v in os.environ.items() if k.upper().startswith(ENV_PREFIX)}
    given: dict[str, Any] = {}
    origins: dict[str, str] = {}
    for field in sorted(FILE_SETTINGS):
        variable = f"{ENV_PREFIX}{field.upper()}"
        path = environ.get(variable + FILE_SUFFIX, "")
        if not path or field in values:
            continue
        if environ.get(variable, ""):
            raise SettingsError(f"{variable} and {variable}{FILE_SUFFIX} are both set; use one")
        label = f"{variable}{FILE_SUFFIX} ({path})"
        given[field], origins[field] = _secret_file(path, f"{variable}{FILE_SUFFIX}"), label
    config_path = environ.get(CONFIG_FILE_VARIABLE, "").strip()
    if config_path:
        for field, (key, value) in _config_file(config_path).items():
            variable = f"{ENV_PREFIX}{field.upper()}"
            if field in values or field in given or environ.get(variable, ""):
                continue  # the environment (or the caller) wins over the file
            given[field], origins[field] = value, f"{config_path}: {key}"
    given.update(values)
    for field in values:
        origins.pop(field, None)
    return given, origins


def load_settings(**values: Any) -> Settings:
    """Settings from the environment (``values`` override it, by field name), all checked.

    Besides ``ROLLOUT_<NAME>`` variables: ``ROLLOUT_<NAME>_FILE`` for each secret (the file's
    content, trailing newline stripped, is the value; giving both is an error), and the TOML
    file ``ROLLOUT_CONFIG_FILE`` names (any variable wins over it). Raises
    :class:`SettingsError`, one line naming each bad variable (or file and key) and what is
    wrong (``ROLLOUT_BATCH_SIZE: 0 is less than 1; ROLLOUT_IDENTITY_MODE: 'lax' is not ...``).
    """
    given, origins = _gathered(values)
    try:
        return Settings(**given)
    except ValidationError as exc:
        raise SettingsError("; ".join(_describe(e, origins) for e in exc.errors())) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment (see :func:`load_settings`)."""
    return load_settings()
