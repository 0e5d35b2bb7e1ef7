"""Certificate-chain trust for the CMS signer: signer → embedded certificates → a trust anchor.

Rules (reported, never guessed):

* every certificate on the path must be valid at ``at`` — the signing time (the signingTime signed
  attribute, else the profile's CreationDate), not today: Apple's profile signing certificates
  expire long before old profiles stop mattering, and Apple's own policy ignores validity dates;
* each certificate's signature must verify with its issuer's key (RSA PKCS#1 v1.5 or ECDSA,
  SHA-1 accepted because Apple's older chains use it);
* every issuer must be a CA (basicConstraints cA=TRUE, keyCertSign if keyUsage is present) and
  its pathLenConstraint is honoured;
* a path ends at a certificate equal to one of the anchors, or one issued by an anchor. Anchors are
  trusted as given, but must also be valid at ``at``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from rollout.profiles.reasons import plain_reason

MAX_DEPTH = 8


@dataclass(frozen=True, slots=True)
class ChainResult:
    """Whether a path to an anchor exists, and if not, the most specific reason."""

    trusted: bool
    reason: str | None


def describe(cert: x509.Certificate) -> str:
    """The certificate's common name, else its RFC 4514 subject."""
    names = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    if names:
        value = names[0].value
        return value if isinstance(value, str) else value.decode("utf-8", "replace")
    return cert.subject.rfc4514_string() or "<empty subject>"


def _valid_at(cert: x509.Certificate, at: dt.datetime) -> str | None:
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    when = f"{at:%Y-%m-%dT%H:%M:%SZ}"
    if at < start:
        return f"'{describe(cert)}' was not yet valid at {when} (valid from {start:%Y-%m-%d})"
    if at > end:
        return f"'{describe(cert)}' had expired at {when} (valid until {end:%Y-%m-%d})"
    return None


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        key = issuer.public_key()
        algo = cert.signature_hash_algorithm
        if algo is None:
            return False
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(cert.signature, cert.tbs_certificate_bytes, padding.PKCS1v15(), algo)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(algo))
        else:
            return False
    except (InvalidSignature, UnsupportedAlgorithm, ValueError, TypeError):
        return False
    return True


def _ca_problem(cert: x509.Certificate, below: int) -> str | None:
    """Why ``cert`` may not issue a path with ``below`` intermediate CAs beneath it."""
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return f"'{describe(cert)}' is not a CA (no basicConstraints)"
    except ValueError as exc:
        return f"'{describe(cert)}' has unreadable extensions ({plain_reason(exc)})"
    if not constraints.ca:
        return f"'{describe(cert)}' is not a CA (basicConstraints cA=FALSE)"
    if constraints.path_length is not None and below > constraints.path_length:
        return f"'{describe(cert)}' pathLenConstraint {constraints.path_length} exceeded"
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return None
    if not usage.key_cert_sign:
        return f"'{describe(cert)}' key usage does not allow certificate signing"
    return None


def _identity(cert: x509.Certificate) -> bytes:
    return cert.fingerprint(hashes.SHA256())


class _Search:
    """Depth-first search for a path to an anchor, remembering the first specific failure."""

    def __init__(
        self,
        pool: Sequence[x509.Certificate],
        anchors: Sequence[x509.Certificate],
        at: dt.datetime,
    ) -> None:
        self.pool = pool
        self.anchors = anchors
        self.at = at
        self.reason: str | None = None

    def fail(self, reason: str) -> bool:
        self.reason = self.reason or reason
        return False

    def walk(self, cert: x509.Certificate, below: int, seen: tuple[bytes, ...]) -> bool:
        """True when ``cert`` (already checked itself) leads to an anchor.

        ``below`` counts the intermediate CAs between ``cert``'s issuer and the signer.
        """
        if any(cert == anchor for anchor in self.anchors):
            return True
        if len(seen) > MAX_DEPTH:
            return self.fail("certificate path too long")
        for anchor in self.anchors:
            if anchor.subject == cert.issuer and _signed_by(cert, anchor):
                problem = _valid_at(anchor, self.at) or _ca_problem(anchor, below)
                if problem is None:
                    return True
                self.fail(f"trust anchor {problem}")
        for candidate in self.pool:
            identity = _identity(candidate)
            if candidate.subject != cert.issuer or identity in seen:
                continue
            if not _signed_by(cert, candidate):
                self.fail(
                    f"'{describe(cert)}' signature does not verify with '{describe(candidate)}'"
                )
                continue
            problem = _valid_at(candidate, self.at) or _ca_problem(candidate, below)
            if problem is not None:
                self.fail(problem)
                continue
            if self.walk(candidate, below + 1, (*seen, identity)):
                return True
        if cert.issuer == cert.subject:
            return self.fail(f"chain ends at '{describe(cert)}', which is not a trust anchor")
        return self.fail(f"issuer of '{describe(cert)}' not found among the CMS certificates")


def _leaf_problem(cert: x509.Certificate) -> str | None:
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return None
    except ValueError as exc:
        return f"signer '{describe(cert)}' has unreadable extensions ({plain_reason(exc)})"
    if not usage.digital_signature:
        return f"signer '{describe(cert)}' key usage does not allow digital signatures"
    return None


def evaluate_chain(
    signer: x509.Certificate,
    pool: Sequence[x509.Certificate],
    anchors: Sequence[x509.Certificate],
    at: dt.datetime,
) -> ChainResult:
    """Is there a path from ``signer`` through ``pool`` to one of ``anchors``, valid at ``at``?"""
    if not anchors:
        return ChainResult(False, "no trust anchors configured")
    problem = _valid_at(signer, at)
    if problem is not None:
        return ChainResult(False, f"signer {problem}")
    problem = _leaf_problem(signer)
    if problem is not None:
        return ChainResult(False, problem)
    search = _Search(pool, anchors, at)
    if search.walk(signer, 0, (_identity(signer),)):
        return ChainResult(True, None)
    return ChainResult(False, search.reason or "no path to a trust anchor")
