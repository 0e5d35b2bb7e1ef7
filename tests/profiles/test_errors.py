"""Every way a file can fail to be a profile, each with its specific one-line message."""

from __future__ import annotations

import datetime as dt
import plistlib
import re
import warnings
from pathlib import Path

import pytest
from asn1crypto import cms as acms

from rollout.profiles import (
    MAX_PROFILE_BYTES,
    BadDataError,
    BinaryPlistError,
    ContentNotPlistError,
    DetachedContentError,
    InvalidDatesError,
    InvalidUUIDError,
    MalformedCMSError,
    MissingKeyError,
    NotCMSError,
    NotSignedDataError,
    ProfileError,
    ProfileTooLargeError,
    UnsignedPlistError,
    WrongTypeError,
    load_trust_anchors,
    parse_profile,
)
from rollout.sim.profiles import (
    AppleLikeChain,
    make_profile,
    plist_bytes,
    profile_plist,
    sign_content,
)


def _raises(exc_type: type[ProfileError], data: bytes, pattern: str) -> ProfileError:
    with pytest.raises(exc_type, match=pattern) as info:
        parse_profile(data)
    message = str(info.value)
    assert "\n" not in message and message.strip() == message
    assert isinstance(info.value, ValueError)
    return info.value


def test_empty_file() -> None:
    _raises(NotCMSError, b"", "^empty file: expected a CMS-signed provisioning profile$")


def test_random_bytes() -> None:
    _raises(NotCMSError, b"\x00\x01garbage" * 10, r"expected an ASN\.1 SEQUENCE .* found 0x00")


def test_sequence_that_is_not_cms() -> None:
    _raises(NotCMSError, b"\x30\x03\x02\x01\x05", "^not a CMS structure")


def test_truncated_cms(chain: AppleLikeChain) -> None:
    _raises(NotCMSError, make_profile(chain)[:-40], "^not a CMS structure")


def test_trailing_junk(chain: AppleLikeChain) -> None:
    _raises(NotCMSError, make_profile(chain) + b"junk", "trailing")


def test_unsigned_xml_plist(chain: AppleLikeChain) -> None:
    xml = plist_bytes(profile_plist(chain))
    err = _raises(UnsignedPlistError, xml, "^file is an unsigned XML property list, not a signed")
    assert isinstance(err, NotCMSError)


def test_unsigned_binary_plist(chain: AppleLikeChain) -> None:
    binary = plistlib.dumps(profile_plist(chain), fmt=plistlib.FMT_BINARY)
    _raises(UnsignedPlistError, binary, "unsigned binary property list")


def test_other_xml() -> None:
    _raises(NotCMSError, b"<html><body>login</body></html>", "XML/text, not a CMS")


def test_cms_but_not_signed_data() -> None:
    data = acms.ContentInfo({"content_type": "data", "content": b"hello"}).dump()
    _raises(NotSignedDataError, data, r"^CMS content type is data \(1\.2\.840\.113549\.1\.7\.1\)")


def test_detached(chain: AppleLikeChain) -> None:
    data = sign_content(chain, plist_bytes(profile_plist(chain)), detached=True)
    _raises(DetachedContentError, data, "no encapsulated content")


@pytest.mark.parametrize("encoding", ["der", "ber"])
def test_content_not_a_plist(chain: AppleLikeChain, encoding: str) -> None:
    data = sign_content(chain, b"hello world", encoding=encoding)  # type: ignore[arg-type]
    _raises(ContentNotPlistError, data, "^signed content is not an XML property list$")


def test_content_is_broken_xml(chain: AppleLikeChain) -> None:
    data = sign_content(chain, b"<?xml version='1.0'?><plist><dict><key>UUID</key>")
    _raises(ContentNotPlistError, data, "not a valid XML property list")


def test_content_is_not_a_dict(chain: AppleLikeChain) -> None:
    data = sign_content(chain, plistlib.dumps(["a"], fmt=plistlib.FMT_XML))
    _raises(ContentNotPlistError, data, "top level is an array, expected a dict")


def test_content_is_binary_plist(chain: AppleLikeChain) -> None:
    content = plistlib.dumps(profile_plist(chain), fmt=plistlib.FMT_BINARY)
    err = _raises(BinaryPlistError, sign_content(chain, content), "binary property list")
    assert isinstance(err, ContentNotPlistError)


def test_bad_base64_in_developer_certificates(chain: AppleLikeChain) -> None:
    xml = plist_bytes(profile_plist(chain)).decode()
    xml = re.sub(
        r"(<key>DeveloperCertificates</key>\s*<array>\s*<data>)[^<]*(</data>)",
        r"\g<1>QUJDQ\g<2>",
        xml,
    )
    err = _raises(
        BadDataError,
        sign_content(chain, xml.encode()),
        r"^DeveloperCertificates\[0\]: <data> is not valid base64$",
    )
    assert err.key == "DeveloperCertificates[0]"  # type: ignore[attr-defined]


def test_bad_base64_nested_key(chain: AppleLikeChain) -> None:
    xml = plist_bytes(profile_plist(chain)).decode()
    xml = xml.replace(
        "<key>AppIDName</key>",
        "<key>Extra</key><dict><key>Blob</key><data>QUJDQ</data></dict><key>AppIDName</key>",
    )
    _raises(BadDataError, sign_content(chain, xml.encode()), r"^Extra\.Blob: <data>")


def test_developer_certificate_not_a_certificate(chain: AppleLikeChain) -> None:
    data = make_profile(chain, extra_keys={"DeveloperCertificates": [b"not a cert"]})
    _raises(BadDataError, data, r"^DeveloperCertificates\[0\] is not a DER X\.509 certificate$")


@pytest.mark.parametrize(
    "key", ["UUID", "Name", "CreationDate", "ExpirationDate", "TeamIdentifier", "Entitlements"]
)
def test_missing_required_key(chain: AppleLikeChain, key: str) -> None:
    err = _raises(
        MissingKeyError, make_profile(chain, drop_keys=[key]), f"^required key {key} is missing$"
    )
    assert err.key == key  # type: ignore[attr-defined]


def test_missing_application_identifier(chain: AppleLikeChain) -> None:
    data = make_profile(chain, extra_keys={"Entitlements": {"get-task-allow": False}})
    _raises(MissingKeyError, data, r"^required key Entitlements\.application-identifier")


@pytest.mark.parametrize(
    ("extra", "pattern"),
    [
        ({"ExpirationDate": "2027-01-01"}, r"^ExpirationDate must be a date, got a string$"),
        ({"CreationDate": 5}, r"^CreationDate must be a date, got an integer$"),
        ({"UUID": 7}, r"^UUID must be a string, got an integer$"),
        ({"Name": ["x"]}, r"^Name must be a string, got an array$"),
        ({"ProvisionedDevices": "abc"}, r"^ProvisionedDevices must be an array, got a string$"),
        (
            {"ProvisionedDevices": ["abc", 1]},
            r"^ProvisionedDevices\[1\] must be a string, got an integer$",
        ),
        (
            {"ProvisionsAllDevices": "yes"},
            r"^ProvisionsAllDevices must be a boolean, got a string$",
        ),
        ({"TeamIdentifier": "ABCDE12345"}, r"^TeamIdentifier must be an array, got a string$"),
        ({"TeamIdentifier": []}, r"^TeamIdentifier must not be empty$"),
        ({"Platform": [True]}, r"^Platform\[0\] must be a string, got a boolean$"),
        ({"Entitlements": ["x"]}, r"^Entitlements must be a dict, got an array$"),
        ({"TimeToLive": True}, r"^TimeToLive must be an integer, got a boolean$"),
        ({"DeveloperCertificates": "x"}, r"^DeveloperCertificates must be an array, got a string$"),
        (
            {"DeveloperCertificates": ["x"]},
            r"^DeveloperCertificates\[0\] must be data, got a string$",
        ),
        (
            {"Entitlements": {"application-identifier": 3}},
            r"^Entitlements\.application-identifier must be a string, got an integer$",
        ),
        (
            {"Entitlements": {"application-identifier": "A.b", "get-task-allow": "no"}},
            r"^Entitlements\.get-task-allow must be a boolean, got a string$",
        ),
    ],
)
def test_wrong_types(chain: AppleLikeChain, extra: dict[str, object], pattern: str) -> None:
    _raises(WrongTypeError, make_profile(chain, extra_keys=extra), pattern)


def test_too_large() -> None:
    data = b"\x30" + b"\x00" * MAX_PROFILE_BYTES
    _raises(ProfileTooLargeError, data, f"^profile is {MAX_PROFILE_BYTES + 1} bytes, over the")


def test_size_limit_is_checked_before_parsing() -> None:
    # an oversized unsigned plist is refused for its size, not for being a plist
    _raises(ProfileTooLargeError, b"<plist>" + b" " * MAX_PROFILE_BYTES, "over the")


@pytest.mark.parametrize("bad", ["not-a-uuid", "12345678123412341234123456789012", ""])
def test_uuid_not_a_uuid(chain: AppleLikeChain, bad: str) -> None:
    _raises(
        InvalidUUIDError, make_profile(chain, extra_keys={"UUID": bad}), "^UUID .* is not a UUID$"
    )


def test_expiration_before_creation(chain: AppleLikeChain) -> None:
    created = dt.datetime(2026, 5, 1, tzinfo=dt.UTC)
    data = make_profile(chain, created_at=created, expires_at=created - dt.timedelta(days=1))
    _raises(
        InvalidDatesError,
        data,
        "^ExpirationDate 2026-04-30T00:00:00Z is before CreationDate 2026-05-01T00:00:00Z$",
    )


# --- library messages become plain sentences ------------------------------------------------

# What the parsing libraries print about themselves: their type names and debug syntax.
INTERNALS = re.compile(
    r"ParseError|asn1crypto|Error parsing|\{|::|int\(\)|groupdict|set_int_max_str_digits|https?:"
)


def _plain(exc_type: type[ProfileError], data: bytes, pattern: str) -> None:
    err = _raises(exc_type, data, pattern)
    assert not INTERNALS.search(str(err)), str(err)


def _broken_certificate(chain: AppleLikeChain, offset: int, value: int) -> bytes:
    """A profile whose signer certificate has one byte changed (its DER, not the CMS around it)."""
    data = bytearray(make_profile(chain))
    at = data.find(chain.signer.cert_der())
    data[at + offset] = value
    return bytes(data)


def test_a_broken_certificate_length_is_named_in_words(chain: AppleLikeChain) -> None:
    # offset 5: the long-form length of the to-be-signed body (82 xx xx becomes 81 xx)
    _plain(
        MalformedCMSError,
        _broken_certificate(chain, 5, 0x81),
        r"^malformed CMS: certificate #\d is not a valid X\.509 certificate "
        r"\(a length is wrong, in the certificate body\)$",
    )


def test_a_certificate_with_a_negative_serial_is_refused_without_a_warning(
    chain: AppleLikeChain,
) -> None:
    # offset 15: the first byte of the 20-byte serial; 0x80 makes the INTEGER negative
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # cryptography's deprecation warning would print
        _plain(
            MalformedCMSError,
            _broken_certificate(chain, 15, 0x80),
            r"^malformed CMS: certificate #\d has a serial number that is not positive$",
        )
        der = bytearray(chain.developer.cert_der())
        der[15] = 0x80
        _plain(
            BadDataError,
            make_profile(chain, extra_keys={"DeveloperCertificates": [bytes(der)]}),
            r"^DeveloperCertificates\[0\] has a serial number that is not positive$",
        )


@pytest.mark.parametrize(
    ("data", "exc_type", "pattern"),
    [
        (b"\x30\x03\x80\x01\x05", NotCMSError, r"^not a CMS structure \(a content type has the"),
        (
            b"\x30\x80\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x07\x02\xa0\x03\x02\x01\x05\x00\x00",
            MalformedCMSError,
            r"^malformed CMS SignedData: a signed data has the wrong tag or form$",
        ),
        (b"\x30\x82\xff\xff\x06", NotCMSError, r"^not a CMS structure \(the data ends early"),
    ],
)
def test_asn1_structure_errors_name_no_library_types(
    data: bytes, exc_type: type[ProfileError], pattern: str
) -> None:
    _plain(exc_type, data, pattern)


@pytest.mark.parametrize(
    ("value", "pattern"),
    [
        ("<integer>abc</integer>", r"\(an <integer> is not a whole number\)$"),
        ("<integer>" + "9" * 5000 + "</integer>", r"\(an <integer> has too many digits\)$"),
        ("<date>soon</date>", r"\(a <date> is not an ISO 8601 date\)$"),
        ("<date>2026-13-01T00:00:00Z</date>", r"\(a <date> is not a valid date \(month must"),
        ("<real>x</real>", r"\(a <real> is not a number\)$"),
        ("<date>2026Z</date>", r"\(a <date> is not a complete date\)$"),
    ],
)
def test_plist_value_errors_name_the_element(
    chain: AppleLikeChain, value: str, pattern: str
) -> None:
    xml = plist_bytes(profile_plist(chain)).decode()
    xml = xml.replace("<key>AppIDName</key>", f"<key>Odd</key>{value}<key>AppIDName</key>")
    _plain(ContentNotPlistError, sign_content(chain, xml.encode()), pattern)


@pytest.mark.parametrize(
    ("content", "pattern"),
    [
        (
            b"\x30\x03\x02\x01\x05",
            r"\(an element is not the one expected there, in the certificate body\)$",
        ),
        (b"hello", r"\(the data ends early\)$"),
        (
            b"-----BEGIN CERTIFICATE-----\nabc\n-----END CERTIFICATE-----\n",
            r"\(the PEM text is damaged \(bad base64 or BEGIN/END lines\)\)$",
        ),
    ],
)
def test_trust_anchor_files_that_hold_no_certificate(
    tmp_path: Path, content: bytes, pattern: str
) -> None:
    path = tmp_path / "root.der"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=pattern) as info:
        load_trust_anchors([path])
    message = str(info.value)
    assert message.startswith(f"{path}: not a DER or PEM certificate file (")
    assert not INTERNALS.search(message), message


def test_a_trust_anchor_path_that_never_ends_is_refused_at_the_cap() -> None:
    with pytest.raises(OSError, match=r"^/dev/zero: over the 1048576-byte limit$"):
        load_trust_anchors(["/dev/zero"])


def test_a_library_message_split_over_lines_is_still_put_in_words() -> None:
    from rollout.profiles.reasons import plain_reason

    # asn1crypto quotes the bad bytes, and a damaged date may hold a newline
    message = plain_reason(ValueError("Error parsing 250101000000\n to a asn1crypto.core.UTCTime"))
    assert "asn1crypto" not in message and "Error parsing" not in message
    assert message == "UTC time value '250101000000' is not valid"
