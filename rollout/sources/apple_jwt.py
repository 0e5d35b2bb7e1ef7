"""The token Apple's provisioning APIs ask for: a JWT signed ES256 with the organisation's key.

Both the App Store Connect API and the Enterprise Program API authorize every request with
``Authorization: Bearer <JWT>`` (Apple's pages "Generating Tokens for API Requests" of each API):

* header: ``alg`` = ``ES256``, ``kid`` = the key ID, ``typ`` = ``JWT``;
* claims: ``iss`` = the issuer ID, ``iat`` and ``exp`` in Unix seconds (``exp`` at most 20 minutes
  after ``iat``), ``aud`` = ``appstoreconnect-v1`` (App Store Connect) or
  ``apple-developer-enterprise-v1`` (Enterprise Program);
* signature: ECDSA P-256 with SHA-256 over ``base64url(header) "." base64url(claims)``, written
  as JWS does (RFC 7518 §3.4): the 32-byte ``r`` and 32-byte ``s``, not DER.

Apple recommends reusing a token until it expires; :class:`TokenMinter` keeps one and mints a
new one shortly before its ``exp``. Neither the key nor a token ever appears in a ``repr``, an
error message or a log line.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Literal

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from rollout.clock import Clock
from rollout.files import read_capped

ApiName = Literal["app-store-connect", "enterprise"]

AUDIENCES: dict[str, str] = {
    "app-store-connect": "appstoreconnect-v1",
    "enterprise": "apple-developer-enterprise-v1",
}
"""The ``aud`` claim each API documents."""

MAX_LIFETIME = dt.timedelta(minutes=20)
"""Apple rejects most requests whose token lives longer than this (``exp - iat``)."""

DEFAULT_LIFETIME = dt.timedelta(minutes=15)
REFRESH_MARGIN = dt.timedelta(seconds=60)
"""A kept token is replaced this long before its ``exp``, so it never expires in flight."""

_P8_LIMIT = 16 * 1024
_KEY_FILE_ID = re.compile(r"^AuthKey_([A-Z0-9]+)\.p8$")


def b64url(data: bytes) -> str:
    """base64url without padding, as JWS writes every part."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@dataclass(frozen=True)
class AppleApiKey:
    """An API key: the issuer ID, the key ID and the ``.p8`` private key (PEM, P-256).

    The private key never shows in ``repr`` or ``str``. A key that is not an EC P-256 private
    key is refused with a ``ValueError`` that does not quote it.
    """

    issuer_id: str
    key_id: str
    private_key_pem: bytes = field(repr=False)
    _key: ec.EllipticCurvePrivateKey = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.issuer_id.strip():
            raise ValueError("the API key needs an issuer ID")
        if not self.key_id.strip():
            raise ValueError("the API key needs a key ID")
        try:
            key = serialization.load_pem_private_key(self.private_key_pem, password=None)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"API key {self.key_id}: not a PEM private key") from exc
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
            raise ValueError(f"API key {self.key_id}: not an EC P-256 private key")
        object.__setattr__(self, "_key", key)

    def __repr__(self) -> str:
        return f"AppleApiKey(issuer_id={self.issuer_id!r}, key_id={self.key_id!r})"

    __str__ = __repr__

    @classmethod
    def from_p8(
        cls, path: str | PathLike[str], *, issuer_id: str, key_id: str | None = None
    ) -> AppleApiKey:
        """Load the ``.p8`` file Apple lets you download once.

        ``key_id`` defaults to the one in Apple's file name (``AuthKey_<KEY ID>.p8``).
        """
        if key_id is None:
            match = _KEY_FILE_ID.match(Path(path).name)
            if match is None:
                raise ValueError(f"{path}: give the key ID (the file name does not carry it)")
            key_id = match.group(1)
        return cls(issuer_id=issuer_id, key_id=key_id, private_key_pem=read_capped(path, _P8_LIMIT))

    def sign(self, data: bytes) -> bytes:
        """ES256 over ``data``: ``r || s``, 32 bytes each."""
        r, s = decode_dss_signature(self._key.sign(data, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")

    def public_key(self) -> ec.EllipticCurvePublicKey:
        """The public half (what Apple keeps)."""
        return self._key.public_key()


def make_token(
    key: AppleApiKey,
    *,
    audience: str,
    issued_at: dt.datetime,
    lifetime: dt.timedelta = DEFAULT_LIFETIME,
) -> str:
    """A signed token issued at ``issued_at`` (aware) that lives ``lifetime``."""
    if issued_at.tzinfo is None:
        raise ValueError("issued_at must be timezone-aware")
    if not dt.timedelta(0) < lifetime <= MAX_LIFETIME:
        raise ValueError(f"a token lives more than 0 and at most {MAX_LIFETIME}")
    iat = int(issued_at.timestamp())
    header = {"alg": "ES256", "kid": key.key_id, "typ": "JWT"}
    claims = {
        "iss": key.issuer_id,
        "iat": iat,
        "exp": iat + int(lifetime.total_seconds()),
        "aud": audience,
    }
    signing_input = ".".join(
        b64url(json.dumps(part, separators=(",", ":")).encode()) for part in (header, claims)
    )
    return f"{signing_input}.{b64url(key.sign(signing_input.encode('ascii')))}"


class TokenMinter:
    """Keeps one token for an API and mints the next shortly before it expires."""

    def __init__(
        self,
        key: AppleApiKey,
        api: ApiName,
        clock: Clock,
        *,
        lifetime: dt.timedelta = DEFAULT_LIFETIME,
        refresh_margin: dt.timedelta = REFRESH_MARGIN,
    ) -> None:
        if not dt.timedelta(0) < lifetime <= MAX_LIFETIME:
            raise ValueError(f"a token lives more than 0 and at most {MAX_LIFETIME}")
        if not dt.timedelta(0) <= refresh_margin < lifetime:
            raise ValueError("the refresh margin must be shorter than the token's lifetime")
        self.key = key
        self.audience = AUDIENCES[api]
        self._clock = clock
        self._lifetime = lifetime
        self._margin = refresh_margin
        self._token: str | None = None
        self._renew_at: dt.datetime | None = None

    def __repr__(self) -> str:
        return f"TokenMinter(key_id={self.key.key_id!r}, audience={self.audience!r})"

    def token(self) -> str:
        """The kept token, or a fresh one when it is within the margin of its expiry."""
        now = self._clock.now()
        if self._token is None or self._renew_at is None or now >= self._renew_at:
            self._token = make_token(
                self.key, audience=self.audience, issued_at=now, lifetime=self._lifetime
            )
            # iat is rounded down to the second; so is the renewal time's origin
            issued = dt.datetime.fromtimestamp(int(now.timestamp()), dt.UTC)
            self._renew_at = issued + self._lifetime - self._margin
        return self._token

    def forget(self) -> None:
        """Drop the kept token (after Apple refused it): the next request gets a new one."""
        self._token = None
        self._renew_at = None
