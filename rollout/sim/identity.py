"""A simulated device's identity certificate and the headers it (or its proxy) would send.

``sign_body`` makes a real ``Mdm-Signature`` value: base64 of a detached CMS SignedData over
the exact body bytes (``Binary`` mode, so line endings are signed as they are), signer
certificate embedded. ``forwarded_cert_header`` gives what a TLS-terminating proxy would put in
its client-certificate header.
"""

from __future__ import annotations

import base64
import datetime as dt
import urllib.parse
from typing import Literal

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs7

from rollout.sim.pki import Issued, PrivateKey, issue_leaf, make_ca

HashName = Literal["sha256", "sha384", "sha512"]
HeaderForm = Literal["rfc9440", "escaped-pem", "base64"]

_HASHES: dict[str, hashes.SHA256 | hashes.SHA384 | hashes.SHA512] = {
    "sha256": hashes.SHA256(),
    "sha384": hashes.SHA384(),
    "sha512": hashes.SHA512(),
}


def make_device_ca(
    common_name: str = "Rollout Sim Device CA",
    *,
    key_kind: str = "ec",
    not_before: dt.datetime | None = None,
    days: int = 3650,
) -> Issued:
    """A self-signed CA standing in for the SCEP CA that issues device identities."""
    return make_ca(
        common_name,
        key_kind=key_kind,
        not_before=not_before,
        days=days,
        O="Rollout Sim",
        OU="SCEP CA",
    )


def issue_device_identity(
    ca: Issued,
    udid: str,
    *,
    key_kind: str = "ec",
    not_before: dt.datetime | None = None,
    days: int = 365,
    key: PrivateKey | None = None,
) -> Issued:
    """A device identity certificate (CN = UDID, client auth) with its key, issued by ``ca``.

    ``key`` reuses a private key (a large simulated fleet shares one); by default a new one.
    """
    return issue_leaf(
        ca,
        udid,
        key_kind=key_kind,
        not_before=not_before,
        days=days,
        client_auth=True,
        key=key,
        O="Rollout Sim Devices",
    )


def sign_body(
    identity: Issued,
    body: bytes,
    *,
    hash_name: HashName = "sha256",
    signed_attributes: bool = True,
) -> str:
    """An ``Mdm-Signature`` header value for ``body`` signed by ``identity``.

    ``signed_attributes=False`` signs the body directly (no content-type/message-digest
    attributes), as some real devices and SCEP stacks do.
    """
    options = [pkcs7.PKCS7Options.DetachedSignature, pkcs7.PKCS7Options.Binary]
    if signed_attributes:
        options.append(pkcs7.PKCS7Options.NoCapabilities)
    else:
        options.append(pkcs7.PKCS7Options.NoAttributes)
    der = (
        pkcs7.PKCS7SignatureBuilder()
        .set_data(bytes(body))
        .add_signer(identity.cert, identity.key, _HASHES[hash_name])
        .sign(serialization.Encoding.DER, options)
    )
    return base64.b64encode(der).decode("ascii")


def forwarded_cert_header(identity: Issued, form: HeaderForm = "rfc9440") -> str:
    """The client-certificate header a TLS-terminating proxy would send for ``identity``.

    ``rfc9440``: ``:<base64 DER>:``; ``escaped-pem``: URL-escaped PEM like nginx's
    ``$ssl_client_escaped_cert``; ``base64``: plain base64 DER.
    """
    if form == "rfc9440":
        return ":" + base64.b64encode(identity.cert_der()).decode("ascii") + ":"
    if form == "escaped-pem":
        return urllib.parse.quote(identity.cert_pem().decode("ascii"), safe="")
    if form == "base64":
        return base64.b64encode(identity.cert_der()).decode("ascii")
    raise ValueError(f"unknown header form {form!r}")
