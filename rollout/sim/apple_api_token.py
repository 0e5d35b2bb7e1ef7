"""How the Apple API stand-in judges a bearer token: the checks Apple's "Generating Tokens for
API Requests" pages describe, so a client that passes here sends what Apple asks for.

Header ``alg`` = ``ES256``, ``typ`` = ``JWT``, ``kid`` = the key's ID; an ES256 signature
written as JWS does (``r || s``, 64 bytes) that verifies with the key's public half; claims
``iss`` = the issuer ID, ``aud`` = the API's audience, ``iat`` and ``exp`` numbers, ``iat`` not
after now, ``exp`` after now and at most 20 minutes after ``iat``.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

MAX_LIFETIME_S = 20 * 60


def bearer_problem(
    header: str | None,
    *,
    key_id: str,
    issuer_id: str,
    audience: str,
    public_key: ec.EllipticCurvePublicKey,
    now: dt.datetime,
) -> str | None:
    """Why the ``Authorization`` header's token is refused, or None when it is good."""
    if not header or not header.startswith("Bearer "):
        return "no bearer token"
    parts = header[len("Bearer ") :].strip().split(".")
    if len(parts) != 3:
        return "not a compact JWS"
    try:
        jose = json.loads(_unb64url(parts[0]))
        claims = json.loads(_unb64url(parts[1]))
        signature = _unb64url(parts[2])
    except (ValueError, binascii.Error):
        return "a part is not base64url (JSON)"
    if not isinstance(jose, dict) or not isinstance(claims, dict):
        return "header or claims are not JSON objects"
    if jose.get("alg") != "ES256":
        return f"alg {jose.get('alg')!r} is not ES256"
    if jose.get("typ") != "JWT":
        return f"typ {jose.get('typ')!r} is not JWT"
    if jose.get("kid") != key_id:
        return "unknown kid"
    if len(signature) != 64:
        return "the signature is not r || s (64 bytes)"
    der = encode_dss_signature(
        int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
    )
    try:
        public_key.verify(der, f"{parts[0]}.{parts[1]}".encode("ascii"), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return "bad signature"
    if claims.get("iss") != issuer_id:
        return "wrong iss"
    if claims.get("aud") != audience:
        return f"aud {claims.get('aud')!r} is not {audience}"
    iat, exp = _number(claims.get("iat")), _number(claims.get("exp"))
    if iat is None:
        return "iat missing or not a number"
    if exp is None:
        return "exp missing or not a number"
    seconds = now.timestamp()
    if iat > seconds:
        return "iat is in the future"
    if exp - iat > MAX_LIFETIME_S:
        return "lives longer than 20 minutes"
    if exp <= seconds:
        return "expired"
    return None


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _unb64url(part: str) -> bytes:
    if any(ch in part for ch in "+/="):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
