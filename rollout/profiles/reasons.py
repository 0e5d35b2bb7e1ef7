"""Plain sentences for what the parsing libraries report.

Messages from cryptography's ASN.1 layer (``ParseError { kind: InvalidLength, location:
["Certificate::tbs_cert"] }``), from asn1crypto (``Error parsing asn1crypto.cms.SignerInfo -
class should have been universal, but context was found``) and from Python itself (``invalid
literal for int() with base 10``) name the library's types, not the problem. A
person reading ``rollout profiles inspect`` needs the problem, so every message built from a
library's exception goes through :func:`plain_reason`.
"""

from __future__ import annotations

import re

# rust-asn1's ParseErrorKind variants, as cryptography prints them
_DER_KINDS = {
    "InvalidValue": "a value is not valid",
    "InvalidTag": "a tag is not valid",
    "InvalidLength": "a length is wrong",
    "UnexpectedTag": "an element is not the one expected there",
    "ShortData": "the data ends early",
    "IntegerOverflow": "a number is too large",
    "ExtraData": "extra bytes follow an element",
    "InvalidSetOrdering": "a SET is not in DER order",
    "EncodedDefault": "a default value is written out (DER forbids it)",
    "OidTooLong": "an object identifier is too long",
    "UnknownDefinedBy": "an algorithm or type is unknown",
}
# where in a certificate cryptography's location path points, in words
_DER_PLACES = {
    "tbs_cert": "certificate body",
    "TbsCertificate": "certificate body",
    "version": "version",
    "serial": "serial number",
    "signature_alg": "signature algorithm",
    "signature_algorithm": "signature algorithm",
    "signature": "signature",
    "issuer": "issuer name",
    "subject": "subject name",
    "validity": "validity dates",
    "not_before": "validity dates",
    "not_after": "validity dates",
    "spki": "public key",
    "raw_extensions": "extensions",
    "extensions": "extensions",
}
_RUST_PARSE_ERROR = re.compile(r"ParseError \{ kind: (\w+)")
_RUST_LOCATION = re.compile(r"location: \[([^\]]*)\]")
_ASN1CRYPTO_TYPE = re.compile(r"Error parsing asn1crypto\.\w+\.(\w+)")
_ASN1CRYPTO_VALUE = re.compile(r"Error parsing (\S+) to an? asn1crypto\.\w+\.(\w+)")
_ASN1CRYPTO_CHOICE = re.compile(r"alternatives in asn1crypto\.\w+\.(\w+)")
_CAMEL = re.compile(r"[A-Z]+(?=[A-Z][a-z]|$)|[A-Z]?[a-z]+|\d+")
_ACRONYMS = {"CMS", "DER", "BER", "OID", "RSA", "EC", "UTC"}


def _a(words: str) -> str:
    return f"an {words}" if words[:1].lower() in "aeio" else f"a {words}"


def _words(type_name: str) -> str:
    """``SetOfOctetString`` → ``set of octet string``; ``CMSAttribute`` → ``CMS attribute``."""
    parts = _CAMEL.findall(type_name) or [type_name]
    return " ".join(p if p in _ACRONYMS else p.lower() for p in parts)


def _der_place(location: str) -> str | None:
    names = re.findall(r'"([^"]*)"', location)
    for name in reversed(names):
        for part in reversed(name.split("::")):
            place = _DER_PLACES.get(part)
            if place is not None:
                return place
    return None


def _rust_asn1(message: str) -> str | None:
    match = _RUST_PARSE_ERROR.search(message)
    if match is None:
        return None
    sentence = _DER_KINDS.get(match.group(1), "its DER encoding is broken")
    location = _RUST_LOCATION.search(message)
    place = _der_place(location.group(1)) if location else None
    return f"{sentence}, in the {place}" if place else sentence


def _shown_value(text: str) -> str:
    """A bad value from the file, fit to quote in a message: 40 characters at most, anything
    but letters, digits and ``+-.:/`` shown as ``?`` (no markup or braces from a file)."""
    return "".join(c if c.isascii() and (c.isalnum() or c in " +-.:/") else "?" for c in text[:40])


def _asn1crypto(message: str) -> str | None:
    if message.startswith("Insufficient data"):
        return "the data ends early (a length asks for more bytes than there are)"
    extra = re.match(r"Extra data - (\d+) bytes of trailing data", message)
    if extra:
        return f"{extra.group(1)} bytes of trailing data after the end"
    value = _ASN1CRYPTO_VALUE.search(message)
    if value:
        return f"{_words(value.group(2))} value {_shown_value(value.group(1))!r} is not valid"
    choice = _ASN1CRYPTO_CHOICE.search(message)
    if choice:
        return f"an element is none of the forms allowed for {_words(choice.group(1))}"
    parsing = _ASN1CRYPTO_TYPE.search(message)
    if parsing:
        return f"{_a(_words(parsing.group(1)))} has the wrong tag or form"
    if "asn1crypto" in message or message.startswith("Error parsing"):
        return "its ASN.1 encoding is broken"
    return None


def plain_reason(exc: BaseException) -> str:
    """One line saying what is wrong, in words, without the library's type names or syntax.

    Unknown library messages fall back to a general sentence rather than pass through, so no
    internal name ever reaches a person; callers add where the problem is (which certificate,
    which part of the CMS).
    """
    # One line: a library may put the offending bytes, newlines and all, inside its message.
    message = " ".join(str(exc).split())
    if message.startswith("Unable to load PEM file"):
        return "the PEM text is damaged (bad base64 or BEGIN/END lines)"
    for reading in (_rust_asn1(message), _asn1crypto(message)):
        if reading is not None:
            return reading
    if isinstance(exc, AttributeError | TypeError | KeyError | IndexError) or not message:
        return "its encoding is broken"  # a library tripped over its own input
    if any(mark in message for mark in ("{", "::", "()")):
        return "its encoding is broken"  # debug syntax or a Python call: not for people
    return message
