"""Values crossing the push client's boundary: one request, one result."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from rollout.apns.errors import ApnsError, Outcome


@dataclass(frozen=True, slots=True)
class PushRequest:
    """One MDM wake-up push.

    ``token`` is the device token as lowercase hex (TokenUpdate gives raw bytes: use
    ``from_token_bytes``). ``expiration`` (absolute Unix seconds) and ``priority`` override the
    client configuration; ``topic`` overrides the certificate's topic; ``apns_id`` is generated
    (uuid4) when absent.
    """

    token: str
    push_magic: str
    topic: str | None = None
    expiration: int | None = None
    priority: int | None = None
    apns_id: str | None = None

    @classmethod
    def from_token_bytes(cls, token: bytes, push_magic: str, **kw: object) -> PushRequest:
        """Build a request from the raw token bytes of a TokenUpdate."""
        return cls(token.hex(), push_magic, **kw)  # type: ignore[arg-type]


@dataclass(slots=True)
class PushResult:
    """What happened to one push, after any retries."""

    token: str
    apns_id: str
    outcome: Outcome
    status: int | None = None
    """HTTP status of the last answer; None when no answer came (connection lost, not sent)."""
    reason: str | None = None
    timestamp_ms: int | None = None
    """For 410: when APNs last knew the token valid (ms since the epoch)."""
    attempts: int = 0
    error: ApnsError | None = None
    seconds: float | None = None
    """From the batch's start to this result (retries and rate-limit waits included); None
    when nothing was sent (circuit open)."""

    @property
    def ok(self) -> bool:
        """True when APNs accepted the push."""
        return self.outcome is Outcome.SUCCESS

    @property
    def token_dead(self) -> bool:
        """True when the token must not be pushed again until a new TokenUpdate."""
        return self.outcome is Outcome.DEAD_TOKEN

    @property
    def unregistered_at(self) -> dt.datetime | None:
        """The 410 ``timestamp`` as an aware datetime."""
        if self.timestamp_ms is None:
            return None
        return dt.datetime.fromtimestamp(self.timestamp_ms / 1000, dt.UTC)
