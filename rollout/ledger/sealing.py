"""Secrets at rest: the ledger seals a device's push token and push magic before it stores
them, and opens them when it reads them back.

Anyone holding a device's push token, its push magic and the push certificate can wake that
device; a copy of the ledger (a backup, a replica, a dump attached to a ticket) must not be
enough. With keys configured (``ROLLOUT_LEDGER_KEYS``), every value is written as::

    s1.<key id>.<base64url(nonce | AES-256-GCM ciphertext | tag)>

- the key id is the first 8 hex digits of the key's SHA-256, so a value names the key that can
  open it and rotation can tell which rows still need rewriting;
- the associated data is the column and the device's enrollment id, so a sealed value copied
  onto another device's row (or into the other column) does not open;
- the first key seals, every key opens: rotation adds a new key in front, rewrites the rows
  (``rollout keys rotate``), then drops the old key.

A value without the ``s1.`` prefix is stored in plain text (a ledger from before sealing, or
one run without keys): it reads back as it is, and the next rotation seals it.

Nothing here decides what is secret: the stores that keep these columns call :meth:`seal` and
:meth:`open` at their edges. A migration that ever rewrites enrollment ids must re-seal the
rows it changes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
import re
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_log = logging.getLogger(__name__)

PREFIX = "s1."
_KEY_BYTES = 32
_NONCE_BYTES = 12
_KID_LEN = 8
_SEALED = re.compile(r"s1\.([0-9a-f]{8})\.([A-Za-z0-9_-]+)")
_FROM_URLSAFE = bytes.maketrans(b"-_", b"+/")  # bytes.translate: str.translate is slow
_HEX = "0123456789abcdef"


class SealError(Exception):
    """A sealed value cannot be opened: its key is not configured, or it was altered."""


class UnknownKeyError(SealError):
    """A sealed value names a key that is not configured: every value sealed with it is
    unreadable until the key is given back (a configuration error, not a device's)."""


class LedgerKeyError(ValueError):
    """A configured ledger key is malformed."""


def new_key() -> str:
    """A fresh random key, as operators write it into ``ROLLOUT_LEDGER_KEYS``."""
    return base64.urlsafe_b64encode(os.urandom(_KEY_BYTES)).decode()


def key_id(key: bytes) -> str:
    """The id a key is known by in sealed values (not secret: a hash prefix)."""
    return hashlib.sha256(key).hexdigest()[:_KID_LEN]


def parse_keys(text: str) -> list[bytes]:
    """The keys of a ``ROLLOUT_LEDGER_KEYS`` value: base64 (standard or URL-safe) keys of 32
    bytes, separated by commas or white space, the sealing key first."""
    keys: list[bytes] = []
    for n, part in enumerate(re.split(r"[\s,]+", text.strip()), start=1):
        if not part:
            continue
        padded = part + "=" * (-len(part) % 4)
        try:
            raw = base64.b64decode(padded.replace("-", "+").replace("_", "/"), validate=True)
        except (binascii.Error, ValueError):
            raise LedgerKeyError(
                f"key {n} is not base64 (make one with `rollout keys new`)"
            ) from None
        if len(raw) != _KEY_BYTES:
            raise LedgerKeyError(
                f"key {n} is {len(raw)} bytes; a ledger key is {_KEY_BYTES} bytes "
                "(make one with `rollout keys new`)"
            )
        if raw in keys:
            raise LedgerKeyError(f"key {n} is given twice")
        keys.append(raw)
    return keys


def sealed_id(value: str | None) -> str | None:
    """The key id a stored value is sealed with, or None when it is plain (or absent)."""
    if value is None or not value.startswith(PREFIX):
        return None
    m = _SEALED.fullmatch(value)
    return m.group(1) if m else None


class Sealer:
    """Seals with the first key, opens with any; with no keys, stores values as they are."""

    def __init__(self, keys: Sequence[bytes] = ()) -> None:
        self._keys = {key_id(k): AESGCM(k) for k in keys}
        self._current = key_id(keys[0]) if keys else None

    @property
    def sealing(self) -> bool:
        """Whether values are sealed when stored."""
        return self._current is not None

    @property
    def current_id(self) -> str | None:
        """The id of the key that seals, if any."""
        return self._current

    @property
    def key_ids(self) -> frozenset[str]:
        """Ids of every key that can open."""
        return frozenset(self._keys)

    def seal(self, value: str | None, column: str, owner: str) -> str | None:
        """``value`` as stored for ``column`` of device ``owner`` (its enrollment id)."""
        if value is None or self._current is None:
            return value
        nonce = os.urandom(_NONCE_BYTES)
        box = self._keys[self._current].encrypt(nonce, value.encode(), _aad(column, owner))
        body = base64.urlsafe_b64encode(nonce + box).rstrip(b"=").decode()
        return f"{PREFIX}{self._current}.{body}"

    def open(self, stored: str | None, column: str, owner: str) -> str | None:
        """The value behind ``stored``; a plain value is returned as it is.

        Raises :class:`SealError` when the value's key is not configured or the value does not
        authenticate (altered, or moved from another device's row).
        """
        if stored is None or not stored.startswith(PREFIX):
            return stored
        # Read on every push (the fan-out's hot path): split and decode without a regex.
        parts = stored.split(".", 2)
        if len(parts) != 3 or len(parts[1]) != _KID_LEN or parts[1].strip(_HEX):
            raise SealError(f"{column} of {owner}: not a sealed value")
        kid, body = parts[1], parts[2]
        aead = self._keys.get(kid)
        if aead is None:
            raise UnknownKeyError(
                f"{column} of {owner} is sealed with key {kid}, which is not configured "
                "(ROLLOUT_LEDGER_KEYS)"
            )
        try:
            raw = binascii.a2b_base64(
                body.encode().translate(_FROM_URLSAFE) + b"=" * (-len(body) % 4)
            )
            plain = aead.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], _aad(column, owner))
        except (InvalidTag, ValueError, binascii.Error):
            raise SealError(f"{column} of {owner} does not authenticate with key {kid}") from None
        return plain.decode()


def open_or_none(sealer: Sealer, stored: str | None, column: str, owner: str) -> str | None:
    """:meth:`Sealer.open`, except that a value which does not authenticate reads as absent
    (and is logged): one altered row must not stop a batch of other devices. A value sealed
    with a key that is not configured still raises :class:`UnknownKeyError`."""
    try:
        return sealer.open(stored, column, owner)
    except UnknownKeyError:
        raise
    except SealError as exc:
        _log.error("unreadable push secret, treated as absent: %s", exc)
        return None


def _aad(column: str, owner: str) -> bytes:
    return f"rollout:{column}:{owner}".encode()


PLAIN = Sealer()
"""Stores values as they are (no keys configured)."""
