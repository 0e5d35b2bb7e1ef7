"""Building the APNs push client a process uses, from the settings."""

from __future__ import annotations

import logging
from typing import Any

from rollout.apns import (
    CertificateFile,
    InProcessCircuitBreaker,
    InProcessRateLimiter,
    PushClient,
    PushConfig,
    RedisCircuitBreaker,
    RedisRateLimiter,
)
from rollout.apns.config import SANDBOX_HOST
from rollout.apns.sync_client import ResultsHook
from rollout.clock import SYSTEM_CLOCK, Clock
from rollout.config import Settings

log = logging.getLogger(__name__)


class PushNotConfigured(RuntimeError):
    """No push certificate is configured."""


def push_config_from_settings(settings: Settings) -> PushConfig:
    """Where and how pushes go: APNs' production or sandbox host, or ``ROLLOUT_APNS_URL``."""
    kw: dict[str, Any] = {}
    if settings.apns_sandbox:
        kw["host"] = SANDBOX_HOST
    return PushConfig(
        base_url=settings.apns_url or None,
        ca_file=settings.apns_ca or None,
        rate_limit=settings.apns_rate_limit or None,
        **kw,
    )


def push_client_from_settings(
    settings: Settings,
    on_results: ResultsHook | None = None,
    *,
    clock: Clock = SYSTEM_CLOCK,
    check_every: float | None = None,
) -> PushClient:
    """The process-wide push client (connections kept across tasks), built from the settings;
    ``on_results`` sees every batch's results (the worker's metrics).

    The certificate file is looked at again before a batch (at most every ``check_every``
    seconds, default 10): a renewal with the same topic is used by new connections without a
    restart; one for another topic is refused with an error logged (see ``CertificateFile``).
    """
    if not settings.apns_cert:
        raise PushNotConfigured("ROLLOUT_APNS_CERT is not set: no MDM push certificate")
    kw_file: dict[str, Any] = {} if check_every is None else {"check_every": check_every}
    watched = CertificateFile(
        settings.apns_cert,
        password=settings.apns_password or None,
        key_path=settings.apns_key or None,
        clock=clock,
        **kw_file,
    )
    cert = watched.certificate
    config = push_config_from_settings(settings)
    redis_url = settings.shared_redis_url()
    limiter: Any
    breaker: Any
    if redis_url:
        limiter = (
            RedisRateLimiter(redis_url, settings.apns_rate_limit) if config.rate_limit else None
        )
        breaker = RedisCircuitBreaker(redis_url, cooldown=config.breaker_cooldown)
    else:
        limiter = InProcessRateLimiter(config.rate_limit) if config.rate_limit else None
        breaker = InProcessCircuitBreaker(cooldown=config.breaker_cooldown)

    def alert(error: Exception) -> None:
        log.error("APNs refused the push certificate; pushing is paused: %s", error)

    return PushClient.shared(
        cert,
        config,
        rate_limiter=limiter,
        breaker=breaker,
        on_alert=alert,
        on_results=on_results,
        certificate_file=watched,
        clock=clock,
    )
