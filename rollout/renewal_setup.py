"""The renewal scan and alert delivery, put together from the settings.

The CLI (``rollout renewals scan``) and the Celery tasks run the same two functions here:
:func:`run_scan` (profile sources, trust anchors and the push certificate read from the
settings) and :func:`deliver_alerts` (the webhook and mail senders the settings configure).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx

from rollout import alerts, renewal
from rollout.alerting import email, webhook
from rollout.alerting.result import DeliveryResult
from rollout.alerts import Sender
from rollout.apns import CertificateError, load_push_certificate
from rollout.clock import Clock
from rollout.config import Settings
from rollout.ledger import Ledger
from rollout.profiles import ProfileError, load_trust_anchors
from rollout.renewal import ProfileSource, PushCertificate, ScanReport
from rollout.sources.apple import AppleSource
from rollout.sources.folder import FolderSource


class SetupError(RuntimeError):
    """A setting names something that cannot be used (one line)."""


def profile_sources(settings: Settings, clock: Clock) -> list[ProfileSource]:
    """The configured profile sources, in the order the scan asks them."""
    sources: list[ProfileSource] = []
    if settings.profile_folder:
        sources.append(FolderSource(Path(settings.profile_folder)))
    if settings.apple_api:
        try:
            sources.append(AppleSource.from_settings(settings, clock))
        except (OSError, ValueError) as exc:
            raise SetupError(f"ROLLOUT_APPLE_KEY_FILE: {exc}") from None
    return sources


def push_certificate(settings: Settings) -> PushCertificate | None:
    """The MDM push certificate to watch, when one is configured."""
    if not settings.apns_cert:
        return None
    try:
        cert = load_push_certificate(
            settings.apns_cert,
            password=settings.apns_password or None,
            key_path=settings.apns_key or None,
        )
    except (CertificateError, OSError, ValueError) as exc:
        raise SetupError(f"ROLLOUT_APNS_CERT: {exc}") from None
    return PushCertificate(cert.topic or "", cert.not_after)


def run_scan(
    ledger: Ledger,
    settings: Settings,
    clock: Clock,
    *,
    dry_run: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> ScanReport:
    """One renewal scan with everything the settings configure (``progress(done, total)``
    over the held profiles)."""
    try:
        anchors = load_trust_anchors(settings.trust_anchor_paths())
    except (ProfileError, OSError, ValueError) as exc:
        raise SetupError(f"ROLLOUT_TRUST_ANCHORS: {exc}") from None
    return renewal.scan(
        ledger,
        clock.now(),
        settings.renewal_policy(),
        sources=profile_sources(settings, clock),  # a dry run names them, asks none
        trust_anchors=anchors,
        alert_policy=settings.alert_policy(),
        push_certificate=push_certificate(settings),
        dry_run=dry_run,
        progress=progress,
    )


def alert_senders(settings: Settings, clock: Clock, client: httpx.Client) -> dict[str, Sender]:
    """One sender per configured channel."""
    senders: dict[str, Sender] = {}
    if settings.alert_webhook_url:
        url, secret = settings.alert_webhook_url, settings.alert_webhook_secret.encode()

        def post(payload: Mapping[str, Any]) -> DeliveryResult:
            return webhook.post(client, url, payload, secret, clock)

        senders["webhook"] = post
    if settings.smtp_host:
        smtp = email.SmtpSettings(
            host=settings.smtp_host,
            port=settings.smtp_port,
            sender=settings.smtp_from,
            recipients=tuple(a.strip() for a in settings.smtp_to.split(",") if a.strip()),
            username=settings.smtp_username or None,
            password=settings.smtp_password or None,
            starttls=settings.smtp_starttls,
            timeout=10.0,
        )

        def mail(payload: Mapping[str, Any]) -> DeliveryResult:
            subject, text = email.render(payload)
            return email.send(smtp, subject, text)

        senders["email"] = mail
    return senders


def deliver_alerts(ledger: Ledger, settings: Settings, clock: Clock) -> dict[str, int]:
    """Send the alert notifications that are due."""
    with httpx.Client(follow_redirects=False) as client:
        return alerts.deliver_due(
            ledger,
            alert_senders(settings, clock, client),
            now=clock.now,
            policy=settings.alert_policy(),
            retry_delay=lambda attempt, after: webhook.retry_delay(attempt, after),
        )


__all__ = [
    "SetupError",
    "alert_senders",
    "deliver_alerts",
    "profile_sources",
    "push_certificate",
    "run_scan",
]
