"""Building server-to-device MDM command plists.

A command is an XML plist whose top-level dictionary has two sibling keys: ``CommandUUID`` (a
string) and ``Command`` (a dictionary holding ``RequestType`` and the command's own keys)::

    <dict>
      <key>Command</key>
      <dict>
        <key>ProvisioningProfile</key><data>MIAGCSqG...</data>
        <key>RequestType</key><string>InstallProvisioningProfile</string>
      </dict>
      <key>CommandUUID</key><string>3f1c...</string>
    </dict>

The same profile goes to thousands of devices with only the CommandUUID changing, so the builders
return a :class:`CommandTemplate`: the plist is rendered once by :mod:`plistlib` with a random
placeholder where the CommandUUID goes, and :meth:`CommandTemplate.render` splices each device's
CommandUUID in between the two halves. The output is byte-for-byte what ``plistlib.dumps`` gives
for the same dictionary (see :meth:`CommandTemplate.render_with_plistlib`).

CommandUUIDs are validated instead of escaped: 1 to 128 characters from ``[A-Za-z0-9_.:-]``, which
covers UUIDs and Apple's own example identifiers (``0001_InstallProvisioningProfile``) and needs
no XML escaping.
"""

from __future__ import annotations

import plistlib
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from rollout.mdm.errors import MDMProtocolError
from rollout.mdm.messages import MAX_BODY_BYTES, load_plist

INSTALL_PROVISIONING_PROFILE = "InstallProvisioningProfile"
PROVISIONING_PROFILE_LIST = "ProvisioningProfileList"
REMOVE_PROVISIONING_PROFILE = "RemoveProvisioningProfile"

#: The request type each rollout command sends.
REQUEST_TYPES = {
    "install": INSTALL_PROVISIONING_PROFILE,
    "list": PROVISIONING_PROFILE_LIST,
    "remove": REMOVE_PROVISIONING_PROFILE,
}

COMMAND_CONTENT_TYPE = "application/xml; charset=UTF-8"
"""Content type for a command reply (as in Apple's examples)."""

_COMMAND_UUID_RE = re.compile(r"[A-Za-z0-9_.:\-]{1,128}")


def validate_command_uuid(command_uuid: str) -> str:
    """Return ``command_uuid`` if it is safe to splice into XML; raise ``bad_command_uuid``."""
    if not isinstance(command_uuid, str) or _COMMAND_UUID_RE.fullmatch(command_uuid) is None:
        raise MDMProtocolError(
            "bad_command_uuid",
            f"CommandUUID {command_uuid!r} must be 1-128 characters from [A-Za-z0-9_.:-]",
        )
    return command_uuid


@dataclass(frozen=True)
class CommandTemplate:
    """One command body, pre-rendered, waiting for a CommandUUID.

    ``request_type`` and ``command`` (the ``Command`` dictionary, read-only) describe it;
    ``render(uuid)`` gives the wire bytes for one device.
    """

    request_type: str
    command: Mapping[str, Any] = field(repr=False, hash=False)
    _prefix: bytes = field(repr=False, compare=False)
    _suffix: bytes = field(repr=False, compare=False)

    @classmethod
    def build(cls, request_type: str, keys: Mapping[str, Any] | None = None) -> CommandTemplate:
        """Render the command ``request_type`` with its own ``keys`` once, via plistlib."""
        if not isinstance(request_type, str) or not request_type:
            raise MDMProtocolError("bad_value", "RequestType must be a non-empty string")
        command: dict[str, Any] = dict(keys or {})
        if "RequestType" in command:
            raise MDMProtocolError("bad_value", "pass RequestType as request_type, not as a key")
        command["RequestType"] = request_type
        # A placeholder that cannot occur by chance anywhere else in the body (base64 <data>
        # never contains '_', and 128 random bits make a collision with strings impossible).
        placeholder = f"__COMMAND_UUID_{secrets.token_hex(16)}__"
        try:
            body = plistlib.dumps(
                {"Command": command, "CommandUUID": placeholder}, fmt=plistlib.FMT_XML
            )
        except (TypeError, ValueError, OverflowError) as exc:
            raise MDMProtocolError("bad_value", f"command keys cannot be a plist: {exc}") from exc
        parts = body.split(placeholder.encode("ascii"))
        if len(parts) != 2:  # pragma: no cover - guarded by the random placeholder
            raise MDMProtocolError("bad_value", "command keys contain the CommandUUID placeholder")
        return cls(
            request_type=request_type,
            command=MappingProxyType(command),
            _prefix=parts[0],
            _suffix=parts[1],
        )

    def render(self, command_uuid: str) -> bytes:
        """The full command plist for ``command_uuid`` (validated, then spliced in)."""
        validate_command_uuid(command_uuid)
        return b"".join((self._prefix, command_uuid.encode("ascii"), self._suffix))

    def render_with_plistlib(self, command_uuid: str) -> bytes:
        """The same bytes as :meth:`render`, the slow way (a reference for tests)."""
        validate_command_uuid(command_uuid)
        return plistlib.dumps(
            {"Command": dict(self.command), "CommandUUID": command_uuid}, fmt=plistlib.FMT_XML
        )

    @property
    def size(self) -> int:
        """Length in bytes of a rendered command, not counting the CommandUUID."""
        return len(self._prefix) + len(self._suffix)


def install_provisioning_profile(profile_bytes: bytes) -> CommandTemplate:
    """``InstallProvisioningProfile`` with the whole signed ``.mobileprovision`` file as data.

    Only a DER (CMS ``SignedData``) blob is accepted: the first byte must be 0x30 (SEQUENCE).
    An unsigned XML plist or an empty file is refused with ``bad_value``.
    """
    if not isinstance(profile_bytes, bytes | bytearray | memoryview):
        raise MDMProtocolError("bad_value", "ProvisioningProfile must be bytes")
    data = bytes(profile_bytes)
    if not data or data[0] != 0x30:
        raise MDMProtocolError(
            "bad_value",
            "ProvisioningProfile must be the whole signed .mobileprovision file (CMS, DER)",
        )
    return CommandTemplate.build(INSTALL_PROVISIONING_PROFILE, {"ProvisioningProfile": data})


def provisioning_profile_list(managed_only: bool = False) -> CommandTemplate:
    """``ProvisioningProfileList``; ``ManagedOnly`` is always sent explicitly."""
    if not isinstance(managed_only, bool):
        raise MDMProtocolError("bad_value", "ManagedOnly must be a bool")
    return CommandTemplate.build(PROVISIONING_PROFILE_LIST, {"ManagedOnly": managed_only})


def remove_provisioning_profile(uuid: str) -> CommandTemplate:
    """``RemoveProvisioningProfile`` for the installed profile with this ``UUID``."""
    if not isinstance(uuid, str) or not uuid.strip():
        raise MDMProtocolError("bad_value", "UUID must be a non-empty string")
    return CommandTemplate.build(REMOVE_PROVISIONING_PROFILE, {"UUID": uuid})


@dataclass(frozen=True)
class ParsedCommand:
    """A server-to-device command read back from its plist (for simulated devices and tests)."""

    command_uuid: str
    request_type: str
    command: Mapping[str, Any] = field(repr=False, hash=False)


def parse_command(body: bytes, *, max_bytes: int = MAX_BODY_BYTES) -> ParsedCommand:
    """Parse a command plist: ``CommandUUID`` and ``Command`` with ``RequestType``.

    A device report (it has ``Status`` or ``MessageType`` and no ``Command``) is refused with
    ``wrong_kind``.
    """
    top = load_plist(body, max_bytes=max_bytes)
    if "Command" not in top and ("Status" in top or "MessageType" in top):
        raise MDMProtocolError("wrong_kind", "this is a device-to-server message, not a command")
    command_uuid = top.get("CommandUUID")
    command = top.get("Command")
    if command_uuid is None or command is None:
        raise MDMProtocolError("missing_key", "a command needs CommandUUID and Command")
    if not isinstance(command_uuid, str):
        raise MDMProtocolError("wrong_type", "CommandUUID must be a string")
    if not isinstance(command, dict):
        raise MDMProtocolError("wrong_type", "Command must be a dictionary")
    request_type = command.get("RequestType")
    if request_type is None or request_type == "":
        raise MDMProtocolError("missing_key", "Command.RequestType is missing")
    if not isinstance(request_type, str):
        raise MDMProtocolError("wrong_type", "Command.RequestType must be a string")
    return ParsedCommand(
        command_uuid=command_uuid,
        request_type=request_type,
        command=MappingProxyType(command),
    )
