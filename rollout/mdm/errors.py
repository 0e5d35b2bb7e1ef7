"""The two error types of the MDM layer.

``MDMProtocolError`` covers every problem with the *content* of an MDM message (a check-in or a
command report) and with values handed to the command builders. ``IdentityError`` covers every
problem with the *device identity* that should vouch for a message (the ``Mdm-Signature`` header, a
certificate forwarded by a TLS-terminating proxy, the chain to the device CA).

Both carry a short machine-readable ``reason`` (for metrics and logs) and a human message. The web
layer should answer both with 400 (or 5xx), never 401: a 401 makes the device remove its MDM
profile, which is never the right answer to a malformed or unverifiable request.

``MDMProtocolError.reason`` values:

``not_plist``         the body is not an XML property list (binary plists are refused too)
``too_large``         the body is over the size limit (checked before parsing), or a report's
                      command-specific keys are over their JSON budget
                      (:data:`rollout.bounds.EXTRA_JSON_BYTES`)
``too_long``          a value rollout stores is longer than its bound in :mod:`rollout.bounds`
                      (the message names the key and the limit)
``too_many``          an ``ErrorChain`` has more items than its bound
``too_deep``          arrays and dictionaries nest deeper than
                      :data:`rollout.bounds.NESTING_DEPTH`
``not_finite``        a real anywhere in the message is NaN or infinite (no JSON holds it)
``out_of_range``      an integer anywhere in the message is outside 64 bits
``wrong_type``        the top level or a known key has the wrong plist type
``missing_key``       a required key is absent or empty
``bad_status``        ``Status`` is not one Apple defines, or is not the one a helper needs
``no_identity``       neither ``UDID`` nor ``EnrollmentID`` is present
``wrong_kind``        another kind of MDM message than the one expected: a server-to-device
                      command or a check-in where a command report was expected, and so on
``bad_command_uuid``  a CommandUUID handed to the command builder is empty, too long or has
                      characters outside ``[A-Za-z0-9_.:-]``
``bad_value``         another value handed to a command builder is unusable

``IdentityError.reason`` values:

``missing``           no identity header is present (and the configuration requires one)
``too_large``         the header value is implausibly large
``bad_base64``        the header value is not valid base64 / RFC 9440 byte sequence
``not_cms``           the decoded signature is not a CMS ``SignedData``
``not_detached``      the ``SignedData`` carries its own content instead of signing the body
``unsupported``       more than one signer, or a digest/signature algorithm we do not accept
``no_signer_cert``    the signer's certificate is not embedded in the ``SignedData``
``digest_mismatch``   the signed ``message-digest`` attribute does not match the body
``bad_signature``     the signature does not verify with the signer's public key
``bad_cert``          a certificate cannot be parsed
``not_yet_valid``     the device certificate is not valid yet
``expired``           the device certificate has expired
``bad_usage``         the device certificate is a CA, or its key usages forbid client signing
``untrusted``         the certificate is not issued (or not validly issued) by a configured CA
"""

from __future__ import annotations


class MDMProtocolError(ValueError):
    """A malformed or unacceptable MDM message or command value."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{message} [{reason}]")
        self.reason = reason
        self.message = message


class IdentityError(Exception):
    """The device identity for a request is missing, invalid or not trusted."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{message} [{reason}]")
        self.reason = reason
        self.message = message
