"""APNs MDM push client: HTTP/2 on ``h2`` over asyncio TLS, shared rate limit and breaker.

Public API (everything else is private)::

    load_push_certificate / load_pkcs12 / load_pem -> PushCertificate
    CertificateFile                 the certificate file, read again when it is renewed
    PushConfig                      frozen configuration with explicit defaults
    PushRequest -> PushResult       one push in, one result out (Outcome + error)
    AsyncPushClient.push_many       asyncio, connections kept between calls
    PushClient.push_many            sync facade for Celery (background event loop)
    InProcessRateLimiter / RedisRateLimiter, InProcessCircuitBreaker / RedisCircuitBreaker
    errors: see rollout.apns.errors for the class tree

Inside, one job per module: ``client`` (AsyncPushClient, routing between the pieces), ``jobs``
(requests into jobs with pre-encoded headers, result slots), ``pump`` (queued jobs onto free
streams within the rate limit), ``pool`` (opening, failing and keeping connections),
``retries`` (backoff), ``certificate_guard`` (certificate refusals, breaker, probe),
``sync_client`` (PushClient), ``connection`` (one HTTP/2 connection on ``h2``), ``hpack_codec``,
``coordination`` (limiter and breaker implementations), ``config``, ``models``, ``certs``,
``reload`` (the certificate file, renewed without a restart).
"""

from rollout.apns.certs import (
    MDM_TOPIC_PREFIX,
    PushCertificate,
    load_pem,
    load_pkcs12,
    load_push_certificate,
    topic_from_certificate,
)
from rollout.apns.client import AsyncPushClient
from rollout.apns.config import PRODUCTION_HOST, SANDBOX_HOST, PushConfig
from rollout.apns.coordination import (
    BreakerDecision,
    CircuitBreaker,
    InProcessCircuitBreaker,
    InProcessRateLimiter,
    Permit,
    RateLimiter,
    RedisCircuitBreaker,
    RedisRateLimiter,
)
from rollout.apns.errors import (
    ApnsError,
    CertificateError,
    CertificateLoadError,
    CertificateRejectedError,
    CircuitOpenError,
    ConfigError,
    ConnectionLostError,
    DeadTokenError,
    Outcome,
    PermanentPushError,
    PushError,
    ServerError,
    ThrottledError,
    TopicError,
    TransientPushError,
    classify,
)
from rollout.apns.models import PushRequest, PushResult
from rollout.apns.reload import CertificateFile
from rollout.apns.sync_client import PushClient

__all__ = [
    "MDM_TOPIC_PREFIX",
    "PRODUCTION_HOST",
    "SANDBOX_HOST",
    "ApnsError",
    "AsyncPushClient",
    "BreakerDecision",
    "CertificateError",
    "CertificateFile",
    "CertificateLoadError",
    "CertificateRejectedError",
    "CircuitBreaker",
    "CircuitOpenError",
    "ConfigError",
    "ConnectionLostError",
    "DeadTokenError",
    "InProcessCircuitBreaker",
    "InProcessRateLimiter",
    "Outcome",
    "PermanentPushError",
    "Permit",
    "PushCertificate",
    "PushClient",
    "PushConfig",
    "PushError",
    "PushRequest",
    "PushResult",
    "RateLimiter",
    "RedisCircuitBreaker",
    "RedisRateLimiter",
    "ServerError",
    "ThrottledError",
    "TopicError",
    "TransientPushError",
    "classify",
    "load_pem",
    "load_pkcs12",
    "load_push_certificate",
    "topic_from_certificate",
]
