"""Every error the push client raises or reports, and how an APNs answer is classified.

The class tree (catch by category, as with httpx):

::

    ApnsError                         base of everything below
    ├── ConfigError                   a PushConfig or base URL that cannot work (also a ValueError)
    ├── CertificateError              the MDM push certificate cannot be used
    │   ├── CertificateLoadError      unreadable file, wrong password, no private key
    │   ├── TopicError                no subject UID, or a UID not starting with com.apple.mgmt.
    │   └── CertificateRejectedError  APNs refused it: 403 (BadCertificate,
    │                                 BadCertificateEnvironment, Forbidden) or a failed TLS
    │                                 handshake; opens the circuit breaker and raises an alert
    ├── CircuitOpenError              the shared breaker is open: nothing was sent
    └── PushError                     one push did not succeed (kept on PushResult.error)
        ├── PermanentPushError        do not retry this request as it is (other 4xx)
        │   └── DeadTokenError        the device token is dead: BadDeviceToken,
        │                             DeviceTokenNotForTopic, 410 Unregistered/ExpiredToken
        └── TransientPushError        worth retrying later; retried inside the client with
            │                         jittered exponential backoff until max_attempts
            ├── ThrottledError        429 TooManyRequests
            ├── ServerError           500 / 503 (InternalServerError, ServiceUnavailable, Shutdown)
            └── ConnectionLostError   stream reset, GOAWAY, dropped connection, time-out

Push results are not raised: ``push_many`` returns one ``PushResult`` per item, and its ``error``
holds an instance from ``PushError``, ``CertificateRejectedError`` or ``CircuitOpenError``.
"""

from __future__ import annotations

import enum


class ApnsError(Exception):
    """Base class of every error of the push client."""


class ConfigError(ApnsError, ValueError):
    """A configuration value that cannot work (bad URL, non-positive limit...)."""


class CertificateError(ApnsError):
    """The MDM push certificate cannot be used."""


class CertificateLoadError(CertificateError):
    """The certificate or its key could not be read (format, password, missing key)."""


class TopicError(CertificateError):
    """The certificate carries no usable MDM topic in its subject UID."""


class CertificateRejectedError(CertificateError):
    """APNs refused the certificate (403 or TLS handshake failure). Pushing must stop."""

    def __init__(self, reason: str, status: int | None = None) -> None:
        super().__init__(f"APNs rejected the push certificate: {reason}")
        self.reason = reason
        self.status = status


class CircuitOpenError(ApnsError):
    """The circuit breaker shared by all workers is open; no push was sent."""

    def __init__(self, reason: str, retry_after: float) -> None:
        super().__init__(f"APNs circuit open ({reason}); retry in {retry_after:.1f}s")
        self.reason = reason
        self.retry_after = retry_after


class PushError(ApnsError):
    """One push did not succeed; ``status`` and ``reason`` come from APNs when it answered."""

    def __init__(self, reason: str, status: int | None = None) -> None:
        super().__init__(f"{status or '-'} {reason}")
        self.reason = reason
        self.status = status


class PermanentPushError(PushError):
    """The request is wrong and retrying it unchanged cannot help."""


class DeadTokenError(PermanentPushError):
    """The device token is dead for this topic: stop pushing until the next TokenUpdate."""

    def __init__(self, reason: str, status: int | None = None, timestamp_ms: int | None = None):
        super().__init__(reason, status)
        self.timestamp_ms = timestamp_ms


class TransientPushError(PushError):
    """A failure that may go away: retried with backoff, reported once attempts run out."""


class ThrottledError(TransientPushError):
    """429 TooManyRequests: too many pushes to one device token."""


class ServerError(TransientPushError):
    """500 or 503 from APNs (InternalServerError, ServiceUnavailable, Shutdown)."""


class ConnectionLostError(TransientPushError):
    """The stream or connection went away (reset, GOAWAY, drop) or no answer came in time."""


class Outcome(enum.Enum):
    """What one push came to, as a caller acts on it."""

    SUCCESS = "success"
    DEAD_TOKEN = "dead_token"  # permanent per device: mark the token dead
    PERMANENT = "permanent"  # other request errors: fix the request, do not retry as is
    CERTIFICATE = "certificate"  # the push certificate was refused: breaker opened, alert raised
    TRANSIENT = "transient"  # retried max_attempts times without success
    CIRCUIT_OPEN = "circuit_open"  # not sent: the breaker was open


DEAD_TOKEN_REASONS = frozenset(
    {"BadDeviceToken", "DeviceTokenNotForTopic", "Unregistered", "ExpiredToken"}
)
"""Reasons that mean the device token itself is unusable for this topic."""


def classify(status: int, reason: str | None) -> Outcome:
    """Map an APNs answer (HTTP status, JSON ``reason``) to an outcome.

    ``TRANSIENT`` here means "retry"; the client turns it into a final ``TRANSIENT`` result only
    once its attempts run out.
    """
    if status == 200:
        return Outcome.SUCCESS
    if status == 403:
        return Outcome.CERTIFICATE
    if status == 410 or reason in DEAD_TOKEN_REASONS:
        return Outcome.DEAD_TOKEN
    if status == 429 or status >= 500:
        return Outcome.TRANSIENT
    if reason == "IdleTimeout":  # 400 sent when a connection idled out server-side
        return Outcome.TRANSIENT
    return Outcome.PERMANENT


def error_for(
    outcome: Outcome, status: int | None, reason: str, timestamp_ms: int | None = None
) -> ApnsError | None:
    """The exception instance that describes a final (non-success) outcome."""
    if outcome is Outcome.SUCCESS:
        return None
    if outcome is Outcome.DEAD_TOKEN:
        return DeadTokenError(reason, status, timestamp_ms)
    if outcome is Outcome.PERMANENT:
        return PermanentPushError(reason, status)
    if outcome is Outcome.CERTIFICATE:
        return CertificateRejectedError(reason, status)
    if outcome is Outcome.CIRCUIT_OPEN:
        return CircuitOpenError(reason, 0.0)
    if status == 429:
        return ThrottledError(reason, status)
    if status is not None and status >= 500:
        return ServerError(reason, status)
    return ConnectionLostError(reason, status)
