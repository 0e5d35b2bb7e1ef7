"""Operator API sign-in through the company's identity provider (OpenID Connect).

When ``ROLLOUT_OIDC_ISSUER`` is set, ``Authorization: Bearer <JWT>`` from that provider opens the
operator API beside the product's own tokens. This module decides, without any web framework
and without reading the wall clock, whether such a token is good and who it names:

* the token is a JWS in compact form (three base64url parts); its ``alg`` is one of
  :data:`ALGORITHMS` (RS256, PS256, ES256, EdDSA with Ed25519) and must fit the key's type:
  ``none`` and the HMAC algorithms are refused, so a public key can never serve as a shared
  secret;
* ``kid`` picks the provider's key (:class:`KeyStore` keeps the JWKS, fetched by a callable:
  :mod:`rollout.oidc_fetch` does it over HTTP); a ``kid`` the cached set does not hold makes
  the store fetch again, at most once per :data:`REFETCH_EVERY`, so forged ``kid`` values
  cannot hammer the provider;
* ``exp`` is required; ``nbf`` and ``iat`` are honoured; each with :data:`LEEWAY` either side,
  against the time the caller passes (from its :class:`~rollout.clock.Clock`); ``iss`` must be
  the configured issuer and ``aud`` name the configured audience (a string, or one of a list);
* the role comes from a claim (a dotted path such as ``realm_access.roles`` reaches into
  objects) whose values the role map turns into roles: the highest one wins, none is a 403;
* the name comes from ``preferred_username`` (or the configured claim), else ``sub``, made
  safe for the journal: ``oidc:<name>``.

Refusals are :class:`OidcError` with the HTTP status they mean (401 a bad token, 403 no role,
503 the provider's keys cannot be had) and one line that never quotes the token.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import math
import re
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from rollout.access import Principal, Role
from rollout.clock import Clock

log = logging.getLogger(__name__)

ALGORITHMS = ("RS256", "PS256", "ES256", "EdDSA")
"""The signature algorithms accepted; anything else (``none``, ``HS256``, ...) is refused."""
LEEWAY_S = 60.0
"""Allowed clock difference with the provider, for ``exp``, ``nbf`` and ``iat``."""
JWKS_TTL_S = 600.0
"""How long a fetched key set is used before it is fetched again."""
REFETCH_EVERY_S = 30.0
"""At most one extra fetch for unknown ``kid`` values in this time."""
RETRY_AFTER_FAILURE_S = 10.0
"""After a failed fetch, the next try waits this long (requests meanwhile get the refusal)."""
MAX_STALE_S = 3600.0
"""While the provider cannot be reached, the last key set keeps serving this long past its
TTL."""
MAX_TOKEN_CHARS = 16 * 1024
MIN_RSA_BITS = 2048
NAME_CHARS = re.compile(r"[^A-Za-z0-9._@+-]")
MAX_NAME = 64
PREFIX = "oidc:"
"""The actor of an OIDC caller is ``oidc:<name>`` (product token names cannot hold ``:``)."""

_B64URL = re.compile(r"[A-Za-z0-9_-]*")
_JWT_SHAPE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
_ROLE_NAMES = ", ".join(r.name.lower() for r in Role)

PublicKeyType = rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey


class OidcError(Exception):
    """An OIDC token does not open the API: ``status`` is the HTTP answer, the message one
    line that never quotes the token."""

    status = 401


class TokenRefused(OidcError):
    """The token is malformed, forged, expired, or for another issuer or audience (401)."""

    status = 401


class NoRole(OidcError):
    """The token is good but its role claim maps to no role (403)."""

    status = 403


class KeysUnavailable(OidcError):
    """The provider's keys cannot be fetched now (503); product tokens are unaffected."""

    status = 503


class FetchError(Exception):
    """Fetching the discovery document or the key set failed (one line, for the log)."""


@dataclass(frozen=True)
class OidcConfig:
    """What the settings say about the provider (see :meth:`rollout.config.Settings.oidc`)."""

    issuer: str
    audience: str
    role_map: Mapping[str, Role]
    jwks_url: str = ""
    role_claim: str = "roles"
    name_claim: str = "preferred_username"


def looks_like_jwt(text: str) -> bool:
    """Whether ``text`` has a JWS's compact shape (three base64url parts, the last may be
    empty); anything else is a product token."""
    return len(text) <= MAX_TOKEN_CHARS and _JWT_SHAPE.fullmatch(text) is not None


def url_problem(url: str) -> str | None:
    """Why ``url`` cannot name the provider or its keys (None when it can): it must be https,
    or http on the loopback host (``localhost``, ``127.0.0.1``, ``[::1]``) for tests."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        parts.port  # noqa: B018  # raises ValueError for a bad port
    except ValueError:
        return "is not a URL"
    if parts.scheme not in ("https", "http") or not host or any(c.isspace() for c in url):
        return "is not an https:// URL"
    if parts.scheme == "http" and host not in ("localhost", "127.0.0.1", "::1"):
        return "must be https:// (http:// only for localhost or 127.0.0.1)"
    if parts.username is not None or parts.password is not None:
        return "must not hold a user or password"
    if parts.fragment:
        return "must not have a #fragment"
    return None


def parse_role_map(text: str) -> dict[str, Role]:
    """``value=role`` pairs, comma-separated (``rollout-admin=admin,rollout-read=viewer``), or a
    JSON object ``{"value": "role"}`` for values that hold a comma; ``ValueError`` (one line)
    otherwise."""
    text = text.strip()
    pairs: list[tuple[str, Any]] = []
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except ValueError:
            raise ValueError(
                'is not valid JSON (use {"value": "role"} or value=role,...)'
            ) from None
        if not isinstance(data, dict):
            raise ValueError('must be a JSON object {"value": "role"}')
        pairs = list(data.items())
    else:
        for part in (p.strip() for p in text.split(",")):
            if not part:
                continue
            value, sep, role = part.rpartition("=")
            if not sep or not value.strip():
                shown = repr(part[:32]) + ("..." if len(part) > 32 else "")
                raise ValueError(f"{shown} is not value=role (e.g. rollout-admin=admin)")
            pairs.append((value.strip(), role))
    mapped: dict[str, Role] = {}
    for value, role in pairs:
        if not isinstance(role, str):
            raise ValueError(f"{value[:32]!r}: the role must be one of {_ROLE_NAMES}")
        try:
            named = Role.named(role)
        except ValueError:
            raise ValueError(f"{value[:32]!r}: {role[:32]!r} is not one of {_ROLE_NAMES}") from None
        if mapped.get(value, named) != named:
            raise ValueError(f"{value[:32]!r} is mapped to two roles")
        mapped[value] = named
    if not mapped:
        raise ValueError("maps no value to a role (e.g. rollout-admin=admin,rollout-read=viewer)")
    return mapped


# -- keys -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Jwk:
    """One of the provider's signing keys: its ``kid`` (may be None), the ``alg`` it is
    restricted to (None: any that fits its type) and the public key."""

    kid: str | None
    alg: str | None
    key: PublicKeyType = field(repr=False)

    def fits(self, alg: str) -> bool:
        """Whether this key may check a signature made with ``alg``."""
        if self.alg is not None and self.alg != alg:
            return False
        if alg in ("RS256", "PS256"):
            return isinstance(self.key, rsa.RSAPublicKey)
        if alg == "ES256":
            return isinstance(self.key, ec.EllipticCurvePublicKey) and isinstance(
                self.key.curve, ec.SECP256R1
            )
        if alg == "EdDSA":
            return isinstance(self.key, ed25519.Ed25519PublicKey)
        return False


def _b64decode(text: str) -> bytes:
    if not _B64URL.fullmatch(text) or len(text) % 4 == 1:
        raise ValueError("not base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise ValueError("not base64url") from None


def _b64int(value: Any) -> int:
    if not isinstance(value, str) or not value:
        raise ValueError("missing number")
    return int.from_bytes(_b64decode(value), "big")


def _jwk(entry: Mapping[str, Any]) -> Jwk | None:
    """The key ``entry`` describes, or None for one that does not sign or is not supported."""
    use = entry.get("use")
    if use is not None and use != "sig":
        return None
    ops = entry.get("key_ops")
    if isinstance(ops, list) and "verify" not in ops:
        return None
    kid = entry.get("kid")
    alg = entry.get("alg")
    if (kid is not None and not isinstance(kid, str)) or (
        alg is not None and alg not in ALGORITHMS
    ):
        return None
    kty = entry.get("kty")
    key: PublicKeyType
    if kty == "RSA":
        rsa_key = rsa.RSAPublicNumbers(
            _b64int(entry.get("e")), _b64int(entry.get("n"))
        ).public_key()
        if rsa_key.key_size < MIN_RSA_BITS:
            raise ValueError(f"RSA key of {rsa_key.key_size} bits")
        key = rsa_key
    elif kty == "EC":
        if entry.get("crv") != "P-256":
            return None
        x, y = _b64decode(str(entry.get("x", ""))), _b64decode(str(entry.get("y", "")))
        if len(x) != 32 or len(y) != 32:
            raise ValueError("P-256 coordinates are 32 bytes")
        key = ec.EllipticCurvePublicNumbers(
            int.from_bytes(x, "big"), int.from_bytes(y, "big"), ec.SECP256R1()
        ).public_key()
    elif kty == "OKP":
        if entry.get("crv") != "Ed25519":
            return None
        key = ed25519.Ed25519PublicKey.from_public_bytes(_b64decode(str(entry.get("x", ""))))
    else:
        return None
    return Jwk(kid, alg, key)


def parse_jwks(document: Any) -> list[Jwk]:
    """The signing keys of a JWKS document (``{"keys": [...]}``); keys of other uses, types or
    curves, and broken ones, are left out (logged). ``ValueError`` when it is no key set."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError('the key set is not {"keys": [...]}')
    keys: list[Jwk] = []
    for n, entry in enumerate(document["keys"]):
        if not isinstance(entry, dict):
            continue
        try:
            key = _jwk(entry)
        except (ValueError, TypeError, OverflowError) as exc:
            log.warning("OIDC: key %d of the provider's key set is left out (%.100s)", n, exc)
            continue
        if key is not None:
            keys.append(key)
    return keys


class KeyStore:
    """The provider's key set, fetched by ``fetch`` (a callable returning the JWKS document,
    raising :class:`FetchError`), kept :data:`JWKS_TTL_S` by the clock's monotonic time.

    Thread-safe; one fetch at a time. A ``kid`` the set does not hold fetches it again at once,
    unless such a fetch happened in the last :data:`REFETCH_EVERY_S`. When a fetch fails, the
    last set keeps serving up to :data:`MAX_STALE_S` past its TTL, and no new try is made for
    :data:`RETRY_AFTER_FAILURE_S`.
    """

    def __init__(self, fetch: Callable[[], Any], clock: Clock) -> None:
        self._fetch = fetch
        self._clock = clock
        self._lock = threading.Lock()
        self._keys: list[Jwk] | None = None
        self._fetched_at = -math.inf  # last good fetch
        self._failed_at = -math.inf  # last failed fetch
        self._refetched_at = -math.inf  # last fetch for an unknown kid
        self.fetches = 0
        """Fetches tried (for tests and the curious)."""

    def keys(self, kid: str | None) -> list[Jwk]:
        """The keys that may have signed a token with ``kid`` (all keys for None): empty when
        none; :class:`KeysUnavailable` when there is no usable key set."""
        with self._lock:
            now = self._clock.monotonic()
            fetched = False
            if now - self._fetched_at >= JWKS_TTL_S:
                fetched = self._refresh(now)
            held = self._matching(kid)
            if (
                kid is not None
                and not held
                and not fetched
                and now - self._refetched_at >= REFETCH_EVERY_S
                and now - self._failed_at >= RETRY_AFTER_FAILURE_S
            ):
                self._refetched_at = now
                if not self._load(now):
                    raise KeysUnavailable("the identity provider's keys cannot be fetched now")
                held = self._matching(kid)
            return held

    def _matching(self, kid: str | None) -> list[Jwk]:
        if self._keys is None:
            raise KeysUnavailable("the identity provider's keys cannot be fetched now")
        return [k for k in self._keys if kid is None or k.kid == kid]

    def _refresh(self, now: float) -> bool:
        """Fetch the set again unless a fetch failed a moment ago; whether one was tried."""
        if now - self._failed_at < RETRY_AFTER_FAILURE_S:
            self._drop_if_too_old(now)
            return False
        self._load(now)
        return True

    def _load(self, now: float) -> bool:
        self.fetches += 1
        try:
            keys = parse_jwks(self._fetch())
        except (FetchError, ValueError) as exc:
            self._failed_at = now
            log.warning("OIDC: cannot fetch the identity provider's keys: %.300s", exc)
            self._drop_if_too_old(now)
            return False
        if not keys:
            log.warning("OIDC: the identity provider's key set holds no usable signing key")
        self._keys = keys
        self._fetched_at = now
        return True

    def _drop_if_too_old(self, now: float) -> None:
        if self._keys is not None and now - self._fetched_at >= JWKS_TTL_S + MAX_STALE_S:
            self._keys = None


# -- tokens -----------------------------------------------------------------------------------


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError("duplicate member")
    return dict(pairs)


def _json_object(part: str, what: str) -> dict[str, Any]:
    try:
        data = json.loads(_b64decode(part), object_pairs_hook=_no_duplicates)
    except (ValueError, RecursionError):
        raise TokenRefused(f"its {what} is not base64url JSON") from None
    if not isinstance(data, dict):
        raise TokenRefused(f"its {what} is not a JSON object")
    return data


def _signature_holds(alg: str, key: PublicKeyType, signature: bytes, signed: bytes) -> bool:
    try:
        if alg == "RS256" and isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, signed, padding.PKCS1v15(), hashes.SHA256())
        elif alg == "PS256" and isinstance(key, rsa.RSAPublicKey):
            pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
            key.verify(signature, signed, pss, hashes.SHA256())
        elif alg == "ES256" and isinstance(key, ec.EllipticCurvePublicKey):
            if len(signature) != 64:  # JWS writes r and s, 32 bytes each, not DER
                return False
            der = encode_dss_signature(
                int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
            )
            key.verify(der, signed, ec.ECDSA(hashes.SHA256()))
        elif alg == "EdDSA" and isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, signed)
        else:
            return False
    except (InvalidSignature, ValueError):
        return False
    return True


def _number(claims: Mapping[str, Any], name: str, *, required: bool = False) -> float | None:
    value = claims.get(name)
    if value is None:
        if required:
            raise TokenRefused(f"it has no {name} claim")
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise TokenRefused(f"its {name} claim is not a number")
    return float(value)


def check_claims(
    claims: Mapping[str, Any], *, issuer: str, audience: str, now: float, leeway: float = LEEWAY_S
) -> None:
    """:class:`TokenRefused` unless ``claims`` are from ``issuer``, for ``audience``, and valid
    at ``now`` (Unix seconds) give or take ``leeway``."""
    expires = _number(claims, "exp", required=True)
    assert expires is not None
    if now - leeway >= expires:
        raise TokenRefused("it has expired")
    not_before = _number(claims, "nbf")
    if not_before is not None and now + leeway < not_before:
        raise TokenRefused("it is not valid yet (nbf)")
    issued = _number(claims, "iat")
    if issued is not None and now + leeway < issued:
        raise TokenRefused("it was issued in the future (iat)")
    if claims.get("iss") != issuer:
        raise TokenRefused("it is from another issuer")
    aud = claims.get("aud")
    if not (aud == audience or (isinstance(aud, list) and audience in aud)):
        raise TokenRefused("it is for another audience")


def verify(
    token: str,
    *,
    keys: Callable[[str | None], Sequence[Jwk]],
    issuer: str,
    audience: str,
    now: float,
) -> dict[str, Any]:
    """The claims of ``token`` once its signature holds under one of ``keys(kid)`` and
    :func:`check_claims` passes at ``now`` (Unix seconds); :class:`TokenRefused` (or what
    ``keys`` raises) otherwise."""
    if not looks_like_jwt(token):
        raise TokenRefused("it is not a JWT")
    head, body, sig = token.split(".")
    header = _json_object(head, "header")
    alg = header.get("alg")
    if alg not in ALGORITHMS:
        shown = f"{alg} " if isinstance(alg, str) and alg.isalnum() and len(alg) <= 10 else ""
        raise TokenRefused(f"its alg {shown}is not accepted (use {', '.join(ALGORITHMS)})")
    if "crit" in header:
        raise TokenRefused("it has critical header extensions this server does not know")
    kid = header.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise TokenRefused("its kid is not a string")
    try:
        signature = _b64decode(sig)
    except ValueError:
        raise TokenRefused("its signature is not base64url") from None
    held = keys(kid)
    if not held:
        raise TokenRefused("no key of the identity provider has its kid")
    usable = [k for k in held if k.fits(alg)]
    if not usable:
        raise TokenRefused(f"its alg {alg} does not fit the provider's key")
    if kid is None and len(usable) > 1:
        raise TokenRefused("it has no kid and the provider has several keys")
    signed = f"{head}.{body}".encode("ascii")
    if not any(_signature_holds(alg, k.key, signature, signed) for k in usable):
        raise TokenRefused("its signature does not hold")
    claims = _json_object(body, "payload")
    check_claims(claims, issuer=issuer, audience=audience, now=now)
    return claims


def claim_at(claims: Mapping[str, Any], path: str) -> Any:
    """The claim named ``path``: a top-level claim of that exact name (names such as
    ``https://example.com/roles`` hold dots), else the dotted path into nested objects
    (``realm_access.roles``); None when absent."""
    if path in claims:
        return claims[path]
    value: Any = claims
    for step in path.split("."):
        if not isinstance(value, Mapping) or step not in value:
            return None
        value = value[step]
    return value


def role_from(claims: Mapping[str, Any], claim: str, role_map: Mapping[str, Role]) -> Role | None:
    """The highest role the claim's values (one string, or a list) map to; None for none."""
    value = claim_at(claims, claim)
    values: Iterable[Any] = (
        [value] if isinstance(value, str) else value if isinstance(value, list) else []
    )
    roles = [role_map[v] for v in values if isinstance(v, str) and v in role_map]
    return max(roles) if roles else None


def name_from(claims: Mapping[str, Any], claim: str) -> str | None:
    """The caller's name for the journal: the ``claim`` (else ``sub``), every character other
    than letters, digits and ``. _ @ + -`` replaced by ``_``, at most 64 characters."""
    for source in (claim, "sub"):
        value = claim_at(claims, source)
        if isinstance(value, str) and value.strip():
            return NAME_CHARS.sub("_", value.strip())[:MAX_NAME]
    return None


class Verifier:
    """Turns an OIDC bearer token into a :class:`~rollout.access.Principal` named
    ``oidc:<name>``, with keys from ``keys`` and the time from ``clock``."""

    def __init__(self, config: OidcConfig, keys: KeyStore, clock: Clock) -> None:
        self.config = config
        self.keys = keys
        self.clock = clock

    def principal(self, token: str) -> Principal:
        """Who ``token`` names, with their role; :class:`OidcError` otherwise."""
        config = self.config
        claims = verify(
            token,
            keys=self.keys.keys,
            issuer=config.issuer,
            audience=config.audience,
            now=self.clock.now().timestamp(),
        )
        name = name_from(claims, config.name_claim)
        if name is None:
            raise TokenRefused(f"it has neither a {config.name_claim} nor a sub claim")
        role = role_from(claims, config.role_claim, config.role_map)
        if role is None:
            raise NoRole(
                f"{PREFIX}{name} has no role here (no value of its {config.role_claim} claim is "
                "in ROLLOUT_OIDC_ROLE_MAP)"
            )
        return Principal(PREFIX + name, role)
