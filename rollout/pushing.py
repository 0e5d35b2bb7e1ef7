"""Building the APNs push client a process uses, from the settings."""

from __future__ import annotations

import logging
from typing import Any

from rollout.apns import (
    InProcessCircuitBreaker,
    InProcessRateLimiter,
    PushClient,
    PushConfig,
    RedisCircuitBreaker,
    RedisRateLimiter,
    load_push_certificate,
)
from rollout.apns.config import SANDBOX_HOST
from rollout.apns.sync_client import ResultsHook
from rollout.config import Settings

log = logging.getLogger(__name__)


class PushNotConfigured(RuntimeError):
    """No push certificate is configured."""


def push_client_from_settings(
    settings: Settings, on_results: ResultsHook | None = None
) -> PushClient:
    """The process-wide push client (connections kept across tasks), built from the settings;
    ``on_results`` sees every batch's results (the worker's metrics)."""
    if not settings.apns_cert:
        raise PushNotConfigured("ROLLOUT_APNS_CERT is not set: no MDM push certificate")
    cert = load_push_certificate(
        settings.apns_cert,
        password=settings.apns_password or None,
        key_path=settings.apns_key or None,
    )
    kw: dict[str, Any] = {}
    if settings.apns_sandbox:
        kw["host"] = SANDBOX_HOST
    config = PushConfig(
        base_url=settings.apns_url or None,
        ca_file=settings.apns_ca or None,
        rate_limit=settings.apns_rate_limit or None,
        **kw,
    )
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
    )
