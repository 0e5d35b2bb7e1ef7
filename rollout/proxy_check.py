"""``rollout check --mdm-url``: the TLS proxy in front of the MDM endpoint, checked through it.

Devices reach rollout through a TLS proxy (deploy/nginx, deploy/haproxy). What the proxy must
do depends on the identity sources: with ``mdm-signature`` it only has to pass ``/mdm`` on;
with ``client-cert`` it must verify the device's certificate, forward it in the configured
header, and overwrite any such header a client sent (else anyone could claim any device). The
web app answers ``GET /mdm/identity-probe`` with what reached it, so this check asks through
the proxy: once with the operator's device certificate (if given), once with a forged header.
"""

from __future__ import annotations

import base64
import datetime as dt
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from rollout.clock import Clock
from rollout.config import Settings
from rollout.deploy_check import FAIL, OK, TIMEOUT_S, WARN, CheckResult

NAME = "proxy"
PROBE_PATH = "/mdm/identity-probe"


@dataclass(frozen=True)
class ProxyTarget:
    """Where devices reach rollout, and how to talk to it as a device would."""

    url: str  # https://mdm.example.com (the devices' ServerURL without its path)
    ca: Path | None = None  # the proxy's CA, when not a public one
    client_cert: Path | None = None  # a device identity certificate (PEM) ...
    client_key: Path | None = None  # ... and its key (or inside client_cert)


def check_proxy(target: ProxyTarget, clock: Clock) -> CheckResult:
    """Reach the MDM endpoint through the proxy and judge what it forwards."""
    probe = target.url.rstrip("/") + PROBE_PATH
    try:
        first = _get(probe, _tls(target, with_identity=True), {})
    except (OSError, ssl.SSLError, ValueError, httpx.HTTPError) as exc:
        return CheckResult(NAME, FAIL, f"cannot reach {probe}: {_why(exc)}")
    if first is None:
        return CheckResult(
            NAME,
            FAIL,
            f"{probe} is not rollout's answer: the proxy does not pass /mdm on to the web app",
        )
    sources = [str(s) for s in first.get("sources", [])]
    if "client-cert" not in sources:
        return CheckResult(
            NAME,
            OK,
            f"{target.url} reaches rollout's /mdm over TLS (identity from the message "
            "signature: nothing to forward)",
        )
    header = str(first.get("cert_header") or "Client-Cert")
    try:
        forged = _get(probe, _tls(target, with_identity=False), {header: _forged(clock)})
    except (OSError, ssl.SSLError, ValueError, httpx.HTTPError) as exc:
        return CheckResult(NAME, FAIL, f"cannot reach {probe} a second time: {_why(exc)}")
    if forged is not None and forged.get("client_cert") is not None:
        return CheckResult(
            NAME,
            FAIL,
            f"the proxy passes on a {header} header the client sent: anyone could claim any "
            f"device's identity (have the proxy set {header} itself, as deploy/nginx does)",
        )
    if target.client_cert is None:
        return CheckResult(
            NAME,
            WARN,
            f"reaches rollout and drops a forged {header} header; give --client-cert (a device "
            "identity) to check the certificate is forwarded",
        )
    got = first.get("client_cert")
    if got is None:
        return CheckResult(
            NAME,
            FAIL,
            f"the client certificate did not reach rollout ({header} empty): does the proxy "
            f"ask for it (ssl_verify_client) and set {header} from it?",
        )
    if "subject" not in got or got.get("trusted") is False:
        return CheckResult(
            NAME, FAIL, f"the forwarded certificate is refused: {got.get('error', 'unreadable')}"
        )
    return CheckResult(
        NAME,
        OK,
        f"forwards the client certificate ({got['subject']}) in {header}, and drops a forged one",
    )


def _tls(target: ProxyTarget, *, with_identity: bool) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(target.ca) if target.ca else None)
    if with_identity and target.client_cert is not None:
        ctx.load_cert_chain(
            str(target.client_cert), str(target.client_key) if target.client_key else None
        )
    return ctx


def _get(url: str, ctx: ssl.SSLContext, headers: dict[str, str]) -> dict[str, Any] | None:
    """The probe's JSON answer, or None when what answered is not rollout's probe."""
    with httpx.Client(verify=ctx, timeout=TIMEOUT_S) as client:
        answer = client.get(url, headers=headers)
    if answer.status_code != 200:
        return None
    try:
        body = answer.json()
    except ValueError:
        return None
    if not isinstance(body, dict) or body.get("service") != "rollout-mdm":
        return None
    return body


def _forged(clock: Clock) -> str:
    """A throwaway self-signed certificate in the RFC 9440 header form: what an attacker
    would send, hoping the proxy passes it on."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rollout check: forged")])
    now = clock.now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(minutes=5))
        .sign(key, hashes.SHA256())
    )
    return ":" + base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode() + ":"


def _why(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def as_group(target: ProxyTarget) -> Callable[[Settings, Clock], list[CheckResult]]:
    """The check as a group of :func:`rollout.deploy_check.run_checks`."""

    def proxy(settings: Settings, clock: Clock) -> list[CheckResult]:
        del settings  # what counts is what the web app behind the proxy runs with
        return [check_proxy(target, clock)]

    return proxy
