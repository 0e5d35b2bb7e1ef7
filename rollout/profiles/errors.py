"""Errors raised while reading a provisioning profile.

Every error is a :class:`ProfileError` (itself a ``ValueError``) with a one-line message that names
the offending key or structure, so callers can show ``str(exc)`` to a person as it is.
"""

from __future__ import annotations


class ProfileError(ValueError):
    """Base class: the bytes are not a usable provisioning profile."""


class ProfileTooLargeError(ProfileError):
    """The file is larger than :data:`~rollout.profiles.MAX_PROFILE_BYTES` (checked first)."""


class NotCMSError(ProfileError):
    """The bytes are not a CMS (PKCS#7) ContentInfo at all: empty, random, text, ..."""


class UnsignedPlistError(NotCMSError):
    """A bare property list was given where a signed profile (CMS) is expected."""


class MalformedCMSError(ProfileError):
    """The CMS structure starts correctly but is broken inside (bad certificate, no signer...)."""


class NotSignedDataError(ProfileError):
    """The CMS ContentInfo holds something other than SignedData."""


class DetachedContentError(ProfileError):
    """The SignedData has no encapsulated content (a detached signature)."""


class ContentNotPlistError(ProfileError):
    """The signed content is not an XML property list."""


class BinaryPlistError(ContentNotPlistError):
    """The signed content is a binary plist; Apple's profiles carry XML."""


class FieldError(ProfileError):
    """A problem with one plist key; ``key`` names it (dotted path, e.g. ``Entitlements.x``)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


class MissingKeyError(FieldError):
    """A required key is absent."""


class WrongTypeError(FieldError):
    """A key holds a value of the wrong type."""


class BadDataError(FieldError):
    """A ``<data>`` element is not valid base64, or its bytes are not what the key requires."""


class InvalidUUIDError(FieldError):
    """``UUID`` is not a UUID."""


class InvalidDatesError(FieldError):
    """``ExpirationDate`` is before ``CreationDate``."""


class ProfileSignatureError(ProfileError):
    """Raised by :func:`~rollout.profiles.ensure_installable` for a profile that must be refused."""
