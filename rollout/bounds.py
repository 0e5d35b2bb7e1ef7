"""The largest values rollout accepts from a device, in one place.

Whatever a device sends ends up in the ledger's rows, in the same batch (one transaction) as
other devices' reports. A value too long for its column fails on PostgreSQL
(``StringDataRightTruncation``) but not on SQLite, and a nesting too deep for a JSON encoder
fails the whole batch, so the MDM parsers (:mod:`rollout.mdm`) refuse every value over the
bounds below *before* a report reaches a batch. The ledger is to size its columns from
:data:`COLUMNS`, so that the two cannot drift apart; that is why this module depends on nothing
but the standard library.

Units: strings are counted in **characters** (what ``VARCHAR(n)`` counts on PostgreSQL), data
in **bytes**. A bound applies to the value in the form rollout stores it: a UDID after
:func:`rollout.identifiers.normalize_udid` (upper-casing can lengthen non-ASCII text), a
profile UUID in lower case (how the profile library keys profiles).

Real devices stay far inside every bound; each one says what real values look like.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

# --- who sent the message (every check-in and report) -------------------------------------

UDID: Final = 64
"""``UDID``, characters. Real ones are 25 (``00008020-000915083C80012E``), 36 (a Mac's UUID)
or 40 (older iPhones) characters."""

ENROLLMENT_ID: Final = 128
"""``EnrollmentID`` (User Enrollment), characters; stored as the device's enrollment id."""

ENROLLMENT_KEY: Final = 128
"""A channel id, characters: the UDID or EnrollmentID, plus ``:<UserID>``,
``:<UserShortName>`` (Shared iPad) or ``:<EnrollmentUserID>`` on a user channel. Events are
filed under it. A GUID user channel needs 25-40 + 1 + 36 characters."""

# --- check-ins ------------------------------------------------------------------------------

MESSAGE_TYPE: Final = 64
"""``MessageType``, characters. Apple's longest is ``DeclarativeManagement`` (21); the type of
a check-in rollout does not serve is recorded, so even an unknown one is bounded."""

TOPIC: Final = 255
"""``Topic``, characters: ``com.apple.mgmt.External.<UUID>`` is 60."""

OS_VERSION: Final = 32
"""``OSVersion``, characters (``17.5.1``)."""

BUILD_VERSION: Final = 32
"""``BuildVersion``, characters (``21F90``)."""

PRODUCT_NAME: Final = 64
"""``ProductName``, characters (``iPhone15,2``)."""

SERIAL_NUMBER: Final = 64
"""``SerialNumber``, characters (10-12)."""

MODEL: Final = 64
"""``Model`` (macOS), characters (``Mac14,2``)."""

DEVICE_NAME: Final = 255
"""``DeviceName`` (macOS), characters: a user-chosen name."""

PUSH_MAGIC: Final = 128
"""``PushMagic``, characters: a UUID (36)."""

PUSH_TOKEN_BYTES: Final = 100
"""``Token``, bytes: APNs device tokens are 32 bytes today. Stored as hex, so the column holds
twice as many characters (:data:`PUSH_TOKEN_HEX`)."""

PUSH_TOKEN_HEX: Final = 2 * PUSH_TOKEN_BYTES
"""The stored (hex) form of :data:`PUSH_TOKEN_BYTES`, characters."""


def sealed_chars(plain_bytes: int) -> int:
    """Characters a value of ``plain_bytes`` UTF-8 bytes takes once sealed at rest
    (:mod:`rollout.ledger.sealing`): ``s1.``, an 8-digit key id and a dot, then the nonce (12
    bytes), the ciphertext and the tag (16 bytes) in unpadded base64url."""
    return len("s1.") + 8 + 1 + -(-(12 + plain_bytes + 16) * 4 // 3)


PUSH_TOKEN_STORED: Final = sealed_chars(PUSH_TOKEN_HEX)
"""The ledger's push token column, characters: a sealed :data:`PUSH_TOKEN_HEX`."""

PUSH_MAGIC_STORED: Final = sealed_chars(4 * PUSH_MAGIC)
"""The ledger's push magic column, characters: a sealed :data:`PUSH_MAGIC` of 4-byte
characters."""

# --- command reports ------------------------------------------------------------------------

COMMAND_UUID: Final = 64
"""``CommandUUID``, characters: rollout's own are UUIDs (36); the command builder allows 64."""

ERROR_CHAIN_ITEMS: Final = 16
"""Items in an ``ErrorChain``. Devices send 1-4 (an error and its causes)."""

ERROR_DOMAIN: Final = 128
"""``ErrorDomain``, characters (``MCProvisioningProfileErrorDomain`` is 32). A failed target's
reason is ``<ErrorDomain>:<ErrorCode>``: at most 128 + 1 + 20 characters, inside
:data:`TARGET_REASON`."""

ERROR_TEXT: Final = 2048
"""``LocalizedDescription`` and ``USEnglishDescription``, characters: one or two sentences in
practice. The chain is stored three times (command, target, event), hence a bound at all."""

TARGET_REASON: Final = 255
"""The reason a target failed or became ineligible, characters (built by rollout, and from a
device only as ``<ErrorDomain>:<ErrorCode>``)."""

PROFILE_UUID: Final = 36
"""``UUID`` of a ``ProvisioningProfileList`` item, characters: a UUID."""

PROFILE_NAME: Final = 255
"""``Name`` of a ``ProvisioningProfileList`` item, characters (the profile's display name)."""

# --- nested and command-specific data -------------------------------------------------------

NESTING_DEPTH: Final = 16
"""How deep arrays and dictionaries may nest, the message's own dictionary being level 1: the
items of a ``ProvisioningProfileList`` answer (dictionaries in an array) are at level 3. 16
keeps every recursive consumer (``json``, PostgreSQL's JSONB, the parsers' own walk) far from
its limit; the attack that raised ``RecursionError`` nested about 900 arrays."""

EXTRA_JSON_BYTES: Final = 64 * 1024
"""A report's command-specific keys (all but the identity, ``Status``, ``CommandUUID``,
``ErrorChain`` and ``NotOnConsole``) as compact UTF-8 JSON, bytes. A list of 200 installed
profiles takes about 25 KiB."""

INTEGER_MIN: Final = -(2**63)
"""Smallest plist ``<integer>``: Apple's plists hold 64-bit integers."""

INTEGER_MAX: Final = 2**64 - 1
"""Largest plist ``<integer>`` (unsigned 64-bit)."""

# --- where each bound is stored -------------------------------------------------------------

COLUMNS: Final[Mapping[str, int]] = MappingProxyType(
    {
        "devices.enrollment_id": ENROLLMENT_ID,  # the UDID, or the EnrollmentID
        "devices.udid": UDID,
        "devices.topic": TOPIC,
        "devices.os_version": OS_VERSION,
        "devices.build_version": BUILD_VERSION,
        "devices.product_name": PRODUCT_NAME,
        "devices.serial_number": SERIAL_NUMBER,
        "devices.model": MODEL,
        "devices.device_name": DEVICE_NAME,
        "devices.push_magic": PUSH_MAGIC_STORED,
        "devices.push_token": PUSH_TOKEN_STORED,
        "commands.command_uuid": COMMAND_UUID,
        "targets.command_uuid": COMMAND_UUID,
        "targets.reason": TARGET_REASON,
        "events.command_uuid": COMMAND_UUID,
        "events.enrollment_id": ENROLLMENT_KEY,
        "installed_profiles.profile_uuid": PROFILE_UUID,
        "installed_profiles.name": PROFILE_NAME,
    }
)
"""Each ledger column that holds a value from a device, and the bound it must be sized to."""
