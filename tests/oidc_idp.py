"""A stand-in identity provider for the OIDC tests: key pairs made here, tokens signed here, and
a real HTTP server on a loopback port serving the discovery document and the key set."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _int(n: int, size: int | None = None) -> str:
    return b64(n.to_bytes(size or (n.bit_length() + 7) // 8, "big"))


@dataclass(frozen=True)
class Key:
    """A signing key of the provider, with its ``kid``."""

    kid: str
    private: PrivateKey = field(repr=False)

    @classmethod
    def rsa(cls, kid: str) -> Key:
        return cls(kid, rsa.generate_private_key(public_exponent=65537, key_size=2048))

    @classmethod
    def ec(cls, kid: str) -> Key:
        return cls(kid, ec.generate_private_key(ec.SECP256R1()))

    @classmethod
    def ed25519(cls, kid: str) -> Key:
        return cls(kid, ed25519.Ed25519PrivateKey.generate())

    def jwk(self) -> dict[str, Any]:
        """The public half as a JWK."""
        key = self.private
        if isinstance(key, rsa.RSAPrivateKey):
            numbers = key.public_key().public_numbers()
            jwk = {"kty": "RSA", "n": _int(numbers.n), "e": _int(numbers.e)}
        elif isinstance(key, ec.EllipticCurvePrivateKey):
            point = key.public_key().public_numbers()
            jwk = {"kty": "EC", "crv": "P-256", "x": _int(point.x, 32), "y": _int(point.y, 32)}
        else:
            raw = key.public_key().public_bytes(
                serialization.Encoding.Raw, serialization.PublicFormat.Raw
            )
            jwk = {"kty": "OKP", "crv": "Ed25519", "x": b64(raw)}
        return {**jwk, "kid": self.kid, "use": "sig"}

    def public_pem(self) -> bytes:
        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def sign(self, claims: dict[str, Any], *, alg: str | None = None, **header: Any) -> str:
        """A compact JWS of ``claims`` (``alg`` defaults to the key's usual one; ``header``
        adds to or replaces the header, e.g. ``kid=None`` leaves it out)."""
        key = self.private
        if alg is None:
            alg = (
                "RS256"
                if isinstance(key, rsa.RSAPrivateKey)
                else "ES256"
                if isinstance(key, ec.EllipticCurvePrivateKey)
                else "EdDSA"
            )
        head = {"alg": alg, "typ": "JWT", "kid": self.kid, **header}
        head = {k: v for k, v in head.items() if v is not None}
        signing_input = f"{b64(json.dumps(head).encode())}.{b64(json.dumps(claims).encode())}"
        data = signing_input.encode()
        if alg == "none":
            signature = b""
        elif alg == "HS256":  # an attacker's forgery: the public key as the HMAC secret
            signature = hmac.new(self.public_pem(), data, hashlib.sha256).digest()
        elif alg == "RS256" and isinstance(key, rsa.RSAPrivateKey):
            signature = key.sign(data, padding.PKCS1v15(), hashes.SHA256())
        elif alg == "PS256" and isinstance(key, rsa.RSAPrivateKey):
            pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
            signature = key.sign(data, pss, hashes.SHA256())
        elif alg == "ES256" and isinstance(key, ec.EllipticCurvePrivateKey):
            r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
            signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        elif alg == "EdDSA" and isinstance(key, ed25519.Ed25519PrivateKey):
            signature = key.sign(data)
        else:
            raise ValueError(f"cannot sign {alg} with this key")
        return f"{signing_input}.{b64(signature)}"


class Provider:
    """The discovery document at ``/.well-known/openid-configuration`` and the key set at
    ``/jwks`` of ``issuer`` (``http://127.0.0.1:PORT``); ``keys`` is what is served now."""

    def __init__(self, keys: list[Key]) -> None:
        self.keys = list(keys)
        self.hits: list[str] = []
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                provider.hits.append(self.path)
                body: dict[str, Any]
                if self.path == "/.well-known/openid-configuration":
                    body = {"issuer": provider.issuer, "jwks_uri": provider.issuer + "/jwks"}
                elif self.path == "/jwks":
                    body = {"keys": [k.jwk() for k in provider.keys]}
                else:
                    self.send_error(404)
                    return
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.issuer = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def jwks_fetches(self) -> int:
        return self.hits.count("/jwks")

    @contextmanager
    def running(self) -> Iterator[Provider]:
        self.thread.start()
        try:
            yield self
        finally:
            self.server.shutdown()
            self.server.server_close()
