"""``rollout check``'s checks: is this deployment able to do its work right now?

Each check takes the settings and the one clock and returns a :class:`CheckResult` (a name, a
status and one line of detail); none raises. Each waits at most :data:`TIMEOUT_S` for anything
on the network, and :func:`run_checks` runs the independent ones side by side, so the whole
check ends within a few seconds even when every server is down.

What is checked: the ledger (reachable, at the latest migration), the broker (reachable), the
workers (answering a ping, and someone consuming each queue), beat (its tick's heartbeat in the
ledger is recent), the push certificate (loads, topic, days left) and APNs (TLS and HTTP/2 with
that certificate), the device CA, the trust anchors, the device-identity settings, and,
beside NanoMDM or MicroMDM, that server's API and the webhook's secret.

Nothing here imports the workers: the ping goes out through a Celery app built from the
settings, as any client of the broker would send it.
"""

from __future__ import annotations

import datetime as dt
import socket
import ssl
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any, Literal

from cryptography import x509
from sqlalchemy.exc import DBAPIError

from rollout import key_rotation
from rollout.apns import load_push_certificate
from rollout.apns.certs import PushCertificate
from rollout.apns.errors import ApnsError
from rollout.clock import Clock
from rollout.config import EMBEDDED_BROKER_URL, ENV_PREFIX, Settings
from rollout.delivery import BESIDE, MICROMDM, MDMServerError, server_from_settings
from rollout.delivery.server import public_url
from rollout.ledger import Ledger, db
from rollout.profiles.parse import load_trust_anchors
from rollout.pushing import push_config_from_settings
from rollout.queues import QUEUES

Status = Literal["ok", "warn", "fail", "skip"]
OK: Status = "ok"
WARN: Status = "warn"
FAIL: Status = "fail"
SKIP: Status = "skip"

TIMEOUT_S = 3.0
"""The longest any one check waits on the network (connect, handshake, answer)."""
PING_TIMEOUT_S = 1.0
"""How long the workers have to answer a ping (every worker that is up answers within it)."""
CERT_WARN_DAYS = 30
"""A push certificate closer than this to its expiry is a warning."""
PERIODIC = ("tick", "sweep", "expiry_scan", "deliver_alerts")
"""The beat-driven tasks that leave a heartbeat, in the order they are reported."""
_HEADER = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-!#$%&'*+.^_`|~")


@dataclass(frozen=True)
class CheckResult:
    """One check's verdict: ``ok``, ``warn``, ``fail`` or ``skip`` (not applicable or not
    configured), with one line saying what was found."""

    name: str
    status: Status
    detail: str

    def as_dict(self) -> dict[str, str]:
        """The result as plain JSON values."""
        return asdict(self)


def failed(results: Sequence[CheckResult]) -> bool:
    """True when any check failed."""
    return any(r.status == FAIL for r in results)


def _reason(exc: BaseException) -> str:
    """An error in one line: a database error's own first line, else the error's words."""
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return line[:200]


def _ago(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f}s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h ago"
    return f"{seconds / 86400:.1f} days ago"


# ---- the ledger and beat --------------------------------------------------------------------


def check_ledger(settings: Settings, clock: Clock) -> CheckResult:
    """The ledger answers and its schema is the latest migration this version knows."""
    del clock  # the ledger's answer needs no time
    url = settings.resolved_database_url()
    where = settings.ledger_location()
    path = settings.embedded_ledger_path()
    if path is not None and not path.exists():
        return CheckResult("ledger", FAIL, f"{where} does not exist: run rollout db upgrade")
    head = db.head_revision()
    try:
        current = db.current_revision(url, connect_timeout=int(TIMEOUT_S))
    except DBAPIError as exc:
        return CheckResult("ledger", FAIL, f"cannot reach {where}: {_reason(exc)}")
    if current != head:
        return CheckResult(
            "ledger",
            FAIL,
            f"{where} is at revision {current or 'none'}, the latest is {head}: "
            "run rollout db upgrade",
        )
    return CheckResult("ledger", OK, f"{where}, revision {current} (latest)")


def _beat_limit(settings: Settings, task: str) -> float:
    """Seconds after which a periodic task's heartbeat is stale: three periods, at least 60 s."""
    period = {
        "tick": settings.tick_interval_s,
        "sweep": settings.sweep_interval_s,
        "expiry_scan": settings.renewal_scan_interval_s,
        "deliver_alerts": 60.0,
    }[task]
    return max(3 * period, 60.0)


def check_beat(settings: Settings, clock: Clock) -> CheckResult:
    """The controller tick left a heartbeat recently (beat runs, a worker runs its ticks).

    No heartbeat at all is a warning (a new deployment whose beat has not ticked yet); an old
    one is a failure. Another periodic task whose last run is stale is a warning.
    """
    ledger = Ledger(
        db.make_engine(settings.resolved_database_url(), connect_timeout=3), settings.sealer()
    )
    try:
        with ledger.heartbeats() as store:
            beats = store.heartbeats()
    except DBAPIError as exc:
        return CheckResult("beat", FAIL, f"cannot read the heartbeats: {_reason(exc)}")
    finally:
        ledger.dispose()
    now = clock.now()
    tick = beats.get("tick")
    limit = _beat_limit(settings, "tick")
    stale = [
        f"{task} last ran {_ago((now - at).total_seconds())}"
        for task in PERIODIC[1:]
        if (at := beats.get(task)) is not None
        and (now - at).total_seconds() > _beat_limit(settings, task)
    ]
    others = f"; {', '.join(stale)}" if stale else ""
    if tick is None:
        return CheckResult(
            "beat", WARN, f"no tick recorded yet: is celery beat running (and a worker)?{others}"
        )
    age = (now - tick).total_seconds()
    if age > limit:
        return CheckResult(
            "beat",
            FAIL,
            f"last tick {_ago(age)}, more than {limit:.0f}s: is celery beat running, and a "
            f"worker on the control queue?{others}",
        )
    return CheckResult(
        "beat", WARN if stale else OK, f"last tick {_ago(age)} (limit {limit:.0f}s){others}"
    )


def check_ledger_keys(settings: Settings, clock: Clock) -> CheckResult:
    """Every sealed push secret opens with a configured key; none is left in plain text.

    A value sealed with a key that is not configured is a failure (that device cannot be
    pushed); plain values, or values under an older key, are a warning (``rollout keys rotate``).
    """
    del clock
    sealer = settings.sealer()
    ledger = Ledger(db.make_engine(settings.resolved_database_url(), connect_timeout=3), sealer)
    try:
        found = key_rotation.census(ledger, sealer)
    except DBAPIError as exc:
        return CheckResult("ledger keys", FAIL, f"cannot read the devices: {_reason(exc)}")
    finally:
        ledger.dispose()
    used = found.in_use()
    if found.missing():
        return CheckResult(
            "ledger keys",
            FAIL,
            f"push secrets sealed with key(s) {', '.join(found.missing())}, which ROLLOUT_"
            "LEDGER_KEYS does not hold: those devices cannot be pushed",
        )
    if found.current is None:
        return CheckResult(
            "ledger keys",
            WARN,
            f"no ledger key: {used.get('plain', 0)} push secret(s) stored in plain text "
            "(set ROLLOUT_LEDGER_KEYS from `rollout keys new`, then `rollout keys rotate`)",
        )
    if found.stale():
        return CheckResult(
            "ledger keys",
            WARN,
            f"{found.stale()} push secret(s) not sealed with key {found.current}: "
            "run `rollout keys rotate`",
        )
    return CheckResult(
        "ledger keys",
        OK,
        f"{used.get(found.current, 0)} push secret(s) sealed with key {found.current}"
        + (f"; key(s) {', '.join(found.retired())} no longer needed" if found.retired() else ""),
    )


# ---- the broker and the workers ---------------------------------------------------------------


def embedded_broker(settings: Settings) -> bool:
    """True when the broker is the embedded one (message files under ``ROLLOUT_HOME``)."""
    return settings.broker_url.startswith(EMBEDDED_BROKER_URL)


def _broker_shown(url: str) -> str:
    """The broker URL without its password."""
    from kombu.utils.url import maybe_sanitize_url

    return str(maybe_sanitize_url(url))


def check_broker(settings: Settings, clock: Clock) -> CheckResult:
    """A connection to ``ROLLOUT_BROKER_URL`` opens (once, quickly: no retrying for long)."""
    del clock
    if embedded_broker(settings):
        return CheckResult(
            "broker", SKIP, f"embedded (files under {settings.home / 'broker'}), not checked"
        )
    from kombu import Connection

    shown = _broker_shown(settings.broker_url)
    conn = Connection(settings.broker_url, connect_timeout=TIMEOUT_S)
    try:
        conn.ensure_connection(
            max_retries=1, interval_start=0.1, interval_step=0.1, interval_max=0.1,
            timeout=TIMEOUT_S,
        )  # fmt: skip
    except Exception as exc:  # every transport has its own errors: any one means unreachable
        return CheckResult("broker", FAIL, f"cannot connect to {shown}: {_reason(exc)}")
    finally:
        conn.release()
    return CheckResult("broker", OK, f"{shown} reachable")


def _celery_app(settings: Settings) -> Any:
    """A Celery client of the configured broker (not the workers' app: only to ask them)."""
    from celery import Celery

    app = Celery("rollout-check", broker=settings.broker_url, set_as_current=False)
    app.conf.update(
        broker_connection_timeout=TIMEOUT_S,
        broker_connection_retry=False,
        broker_connection_max_retries=1,
        accept_content=["json"],
        task_serializer="json",
        result_backend=None,
    )
    return app


def check_workers(settings: Settings, clock: Clock, *, broker_ok: bool = True) -> CheckResult:
    """Workers answer a ping, and at least one consumes each queue (``control``, ``fanout``)."""
    del clock
    if embedded_broker(settings):
        return CheckResult("workers", SKIP, "embedded broker, not asked")
    if not broker_ok:
        return CheckResult("workers", SKIP, "not asked: the broker is unreachable")
    app = _celery_app(settings)
    try:
        pongs = app.control.inspect(timeout=PING_TIMEOUT_S).ping() or {}
        if not pongs:
            return CheckResult(
                "workers", FAIL, f"no worker answered a ping within {PING_TIMEOUT_S:g}s"
            )
        names = sorted(pongs)
        answers = (
            app.control.inspect(
                destination=names, timeout=PING_TIMEOUT_S, limit=len(names)
            ).active_queues()
            or {}
        )
    except Exception as exc:  # the broker went away between the two checks, or refused
        return CheckResult("workers", FAIL, f"cannot ask the workers: {_reason(exc)}")
    finally:
        app.close()
    consumed: dict[str, list[str]] = {}
    for worker, queues in answers.items():
        for queue in queues or ():
            name = queue.get("name") if isinstance(queue, dict) else None
            if isinstance(name, str):
                consumed.setdefault(name, []).append(worker)
    missing = [q for q in QUEUES if q not in consumed]
    seen = ", ".join(f"{w} ({', '.join(q['name'] for q in answers.get(w) or [])})" for w in names)
    count = f"{len(names)} worker{'s' if len(names) != 1 else ''}"
    if missing:
        queues = " or ".join(missing)
        return CheckResult(
            "workers", FAIL, f"no worker consumes the {queues} queue; {count} answered: {seen}"
        )
    return CheckResult("workers", OK, f"{count} answered: {seen}")


# ---- APNs -------------------------------------------------------------------------------------


def _load_push_certificate(settings: Settings) -> PushCertificate:
    return load_push_certificate(
        settings.apns_cert,
        password=settings.apns_password or None,
        key_path=settings.apns_key or None,
    )


def check_push_certificate(settings: Settings, clock: Clock) -> CheckResult:
    """The push certificate loads, names an MDM topic, and is not expired (nor about to be)."""
    if not settings.apns_cert:
        return CheckResult("push certificate", SKIP, f"not configured ({ENV_PREFIX}APNS_CERT)")
    try:
        cert = _load_push_certificate(settings)
        topic = cert.require_topic()
    except (ApnsError, OSError, ValueError) as exc:
        return CheckResult(
            "push certificate", FAIL, f"cannot load {settings.apns_cert}: {_reason(exc)}"
        )
    until = f"{cert.not_after:%Y-%m-%d}"
    left = cert.not_after - clock.now()
    if left <= dt.timedelta(0):
        return CheckResult("push certificate", FAIL, f"topic {topic}: expired on {until}")
    days = left.days
    detail = f"topic {topic}, {days} day{'s' if days != 1 else ''} left (until {until})"
    if left < dt.timedelta(days=CERT_WARN_DAYS):
        return CheckResult("push certificate", WARN, f"{detail}: renew it soon")
    return CheckResult("push certificate", OK, detail)


def _h2_handshake(sock: ssl.SSLSocket) -> None:
    """Open HTTP/2 on ``sock``: send the preface and settings, wait for the server's."""
    import h2.events
    from h2.config import H2Configuration
    from h2.connection import H2Connection

    conn = H2Connection(H2Configuration(client_side=True))
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())
    while True:
        data = sock.recv(65535)
        if not data:
            raise ConnectionError("the server closed the connection before its HTTP/2 settings")
        for event in conn.receive_data(data):
            if isinstance(event, h2.events.RemoteSettingsChanged):
                conn.close_connection()
                sock.sendall(conn.data_to_send())
                return
            if isinstance(event, h2.events.ConnectionTerminated):
                raise ConnectionError(f"the server ended HTTP/2 ({event.error_code!r})")


def check_apns(settings: Settings, clock: Clock) -> CheckResult:
    """A TLS connection (with the push certificate, ALPN ``h2``) and an HTTP/2 handshake with
    the configured APNs endpoint; nothing is pushed."""
    del clock
    if not settings.apns_cert:
        return CheckResult("apns", SKIP, f"not configured ({ENV_PREFIX}APNS_CERT)")
    try:
        config = push_config_from_settings(settings)
        host, port = config.endpoint()
        cert = _load_push_certificate(settings)
        context = cert.ssl_context(config.ca_file)
    except (ApnsError, OSError, ValueError) as exc:
        return CheckResult("apns", SKIP, f"not tried: {_reason(exc)}")
    where = f"{host}:{port}"
    try:
        with (
            socket.create_connection((host, port), timeout=TIMEOUT_S) as raw,
            context.wrap_socket(raw, server_hostname=host) as tls,
        ):
            if tls.selected_alpn_protocol() != "h2":
                return CheckResult("apns", FAIL, f"{where} did not agree to HTTP/2 (ALPN h2)")
            _h2_handshake(tls)
            version = tls.version() or "TLS"
    except ssl.SSLCertVerificationError as exc:
        return CheckResult(
            "apns", FAIL, f"{where}: its server certificate is not trusted ({exc.verify_message})"
        )
    except (OSError, ValueError) as exc:  # refused, timed out, TLS alert, h2 protocol error
        return CheckResult("apns", FAIL, f"cannot reach {where}: {_reason(exc) or 'timed out'}")
    except Exception as exc:  # h2's own protocol errors
        return CheckResult("apns", FAIL, f"{where}: HTTP/2 failed: {_reason(exc)}")
    return CheckResult("apns", OK, f"{where}: {version}, HTTP/2")


# ---- certificates and identity ----------------------------------------------------------------


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return False
    return bool(constraints.ca)


def _subject(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string() or "(no subject)"


def check_device_ca(settings: Settings, clock: Clock) -> CheckResult:
    """``ROLLOUT_DEVICE_CA``: every file reads, holds PEM certificates, each a CA in date."""
    paths = settings.device_ca_paths()
    if not paths:
        if settings.identity_mode == "off":
            return CheckResult("device ca", SKIP, "not configured (identity mode off)")
        return CheckResult(
            "device ca",
            WARN,
            f"not configured ({ENV_PREFIX}DEVICE_CA): device signatures are checked, "
            "not their chain",
        )
    now = clock.now()
    subjects: list[str] = []
    for path in paths:
        try:
            certs = x509.load_pem_x509_certificates(path.read_bytes())
        except OSError as exc:
            return CheckResult("device ca", FAIL, f"cannot read {path}: {exc.strerror or exc}")
        except ValueError:
            return CheckResult("device ca", FAIL, f"{path} holds no PEM certificate")
        for cert in certs:
            if not _is_ca(cert):
                return CheckResult(
                    "device ca", FAIL, f"{path}: {_subject(cert)} is not a CA (basicConstraints)"
                )
            if cert.not_valid_after_utc < now:
                return CheckResult(
                    "device ca",
                    FAIL,
                    f"{path}: {_subject(cert)} expired on {cert.not_valid_after_utc:%Y-%m-%d}",
                )
            subjects.append(_subject(cert))
    return CheckResult("device ca", OK, f"{len(subjects)} CA(s): {'; '.join(subjects)}")


def check_trust_anchors(settings: Settings, clock: Clock) -> CheckResult:
    """``ROLLOUT_TRUST_ANCHORS``: the roots profile signatures must chain to, all readable."""
    del clock
    paths = settings.trust_anchor_paths()
    if not paths:
        return CheckResult(
            "trust anchors",
            WARN,
            f"not configured ({ENV_PREFIX}TRUST_ANCHORS): profile signatures are not chained "
            "to a root",
        )
    try:
        anchors = load_trust_anchors(paths)
    except (OSError, ValueError) as exc:
        return CheckResult("trust anchors", FAIL, _reason(exc))
    names = "; ".join(_subject(c) for c in anchors)
    return CheckResult("trust anchors", OK, f"{len(anchors)} root(s): {names}")


def check_identity(settings: Settings, clock: Clock) -> CheckResult:
    """The device-identity mode and sources, and what they need: a forwarded client
    certificate needs a proxy header name; strict modes need the device CA (warned above)."""
    del clock
    mode = settings.identity_mode
    sources = [s for s in settings.identity_sources.split(",") if s]
    parts = [f"mode {mode}", f"sources {', '.join(sources)}"]
    problems: list[str] = []
    warnings: list[str] = []
    if "client-cert" in sources:
        header = settings.client_cert_header.strip()
        if not header or not set(header) <= _HEADER:
            problems.append(
                f"{ENV_PREFIX}CLIENT_CERT_HEADER {header!r} is not a header name, and the "
                "client-cert source reads the proxy's certificate from it"
            )
        else:
            parts.append(f"client certificate from the proxy's {header} header")
    if mode == "off":
        warnings.append("no device identity is required (development only)")
        if settings.require_udid_in_cert:
            warnings.append(f"{ENV_PREFIX}REQUIRE_UDID_IN_CERT applies only to signed messages")
    elif settings.require_udid_in_cert:
        parts.append("the certificate must name the device")
    detail = "; ".join(parts)
    if problems:
        return CheckResult("identity", FAIL, f"{detail}: {'; '.join(problems)}")
    if warnings:
        return CheckResult("identity", WARN, f"{detail}: {'; '.join(warnings)}")
    return CheckResult("identity", OK, detail)


# ---- delivery beside another MDM server -------------------------------------------------------


def check_delivery(settings: Settings, clock: Clock) -> CheckResult:
    """Beside NanoMDM or MicroMDM: the server answers an authenticated API call with the
    configured key. (The webhook's secret needs no check here: the settings refuse a server
    delivery without one, since the devices' answers could not come back.)"""
    del clock
    if settings.delivery not in BESIDE:
        return CheckResult("delivery", SKIP, "builtin: rollout's own MDM endpoint and APNs")
    url = settings.micromdm_url if settings.delivery == MICROMDM else settings.nanomdm_url
    where = f"{settings.delivery} at {public_url(url)}"
    try:
        server = server_from_settings(settings, timeout=TIMEOUT_S)
    except MDMServerError as exc:
        return CheckResult("delivery", FAIL, str(exc))
    try:
        said = server.check()
    except MDMServerError as exc:
        return CheckResult("delivery", FAIL, f"{where}: {_reason(exc)}")
    finally:
        server.close()
    wakes = "it wakes the devices" if settings.server_wakes else "rollout wakes the devices"
    return CheckResult("delivery", OK, f"{where}: {said} answers the API with the key; {wakes}")


# ---- all of them ------------------------------------------------------------------------------

ORDER = (
    "ledger",
    "broker",
    "workers",
    "beat",
    "ledger keys",
    "push certificate",
    "apns",
    "device ca",
    "trust anchors",
    "identity",
    "delivery",
    "proxy",
)
"""The checks, in the order they are reported (``proxy`` only when a URL is given)."""


def _ledger_and_beat(settings: Settings, clock: Clock) -> list[CheckResult]:
    ledger = check_ledger(settings, clock)
    if ledger.status != OK:
        return [
            ledger,
            CheckResult("beat", SKIP, "not read: the ledger check failed"),
            CheckResult("ledger keys", SKIP, "not read: the ledger check failed"),
        ]
    return [ledger, check_beat(settings, clock), check_ledger_keys(settings, clock)]


def _broker_and_workers(settings: Settings, clock: Clock) -> list[CheckResult]:
    broker = check_broker(settings, clock)
    return [broker, check_workers(settings, clock, broker_ok=broker.status != FAIL)]


def _push(settings: Settings, clock: Clock) -> list[CheckResult]:
    cert = check_push_certificate(settings, clock)
    if cert.status == FAIL:
        return [cert, CheckResult("apns", SKIP, "not tried: the push certificate did not load")]
    return [cert, check_apns(settings, clock)]


def _files(settings: Settings, clock: Clock) -> list[CheckResult]:
    return [
        check_device_ca(settings, clock),
        check_trust_anchors(settings, clock),
        check_identity(settings, clock),
    ]


def _delivery(settings: Settings, clock: Clock) -> list[CheckResult]:
    return [check_delivery(settings, clock)]


def run_checks(
    settings: Settings,
    clock: Clock,
    proxy: Callable[[Settings, Clock], list[CheckResult]] | None = None,
) -> list[CheckResult]:
    """Every check, the independent groups side by side; results in :data:`ORDER`.
    ``proxy`` checks the TLS proxy too (see :mod:`rollout.proxy_check`)."""
    groups: list[Callable[[Settings, Clock], list[CheckResult]]] = [
        _ledger_and_beat,
        _broker_and_workers,
        _push,
        _files,
        _delivery,
    ]
    if proxy is not None:
        groups.append(proxy)
    results: list[CheckResult] = []
    with ThreadPoolExecutor(max_workers=len(groups), thread_name_prefix="check") as pool:
        futures = [(group, pool.submit(group, settings, clock)) for group in groups]
        for group, future in futures:
            try:
                results.extend(future.result())
            except Exception as exc:  # a check that broke is a failed check, never a traceback
                name = group.__name__.strip("_").replace("_", " ")
                results.append(CheckResult(name, FAIL, f"unexpected {type(exc).__name__}: {exc}"))
    rank = {name: i for i, name in enumerate(ORDER)}
    return sorted(results, key=lambda r: rank.get(r.name, len(ORDER)))
