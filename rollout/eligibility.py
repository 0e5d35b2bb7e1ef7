"""Who may receive a rollout's command, decided at planning (no I/O).

A whole rollout is refused when its profile can do no good (expired, expiring before the
deadline, an untrusted or broken signature, an App Store distribution profile). A device is
excluded, with a reason that is recorded and counted, when the command cannot work on it.
Facts come from Apple's device-management schema: the provisioning-profile commands exist on
iOS 4, macOS 11, tvOS 10.2, watchOS 10 and visionOS 1.1 and later, on the device channel; they
need AccessRights bit 128 (install/remove) or 64 (list, and so verification); on macOS they
handle iOS-style profiles only; in User Enrollment Apple allows them on iOS.
"""

from __future__ import annotations

import datetime as dt
import re

from rollout.ledger import DeviceInfo, ProfileEntry
from rollout.states import EnrollmentState, TokenState

#: The first OS version each platform runs the provisioning-profile commands on.
MINIMUM_OS: dict[str, tuple[int, ...]] = {
    "iOS": (4,),
    "iPadOS": (4,),
    "macOS": (11,),
    "tvOS": (10, 2),
    "watchOS": (10,),
    "visionOS": (1, 1),
}
#: For each device platform, the profile ``Platform`` values that can serve it.
PROFILE_PLATFORMS: dict[str, frozenset[str]] = {
    "iOS": frozenset({"iOS"}),
    "iPadOS": frozenset({"iOS"}),
    "macOS": frozenset({"iOS"}),  # macOS installs iOS-style profiles only (iOS apps on Macs)
    "tvOS": frozenset({"tvOS"}),
    "watchOS": frozenset({"watchOS", "iOS"}),
    "visionOS": frozenset({"xrOS", "visionOS", "iOS"}),
}
USER_ENROLLMENT_PLATFORMS = frozenset({"iOS", "iPadOS"})
RIGHT_INSPECT = 64
RIGHT_INSTALL_REMOVE = 128
STORE_KINDS = frozenset({"app-store", "mac-app-store"})
_VERSION = re.compile(r"(\d+)(?:\.(\d+))?(?:\.(\d+))?")


def refusal(profile: ProfileEntry, *, now: dt.datetime, deadline: dt.datetime | None) -> str | None:
    """Why a profile must not be installed at all (one line), or None."""
    if profile.expires_at <= now:
        return f"profile {profile.uuid} expired on {profile.expires_at:%Y-%m-%d}"
    if deadline is not None and profile.expires_at <= deadline:
        return (
            f"profile {profile.uuid} expires on {profile.expires_at:%Y-%m-%d}, "
            f"before the rollout's deadline"
        )
    if not profile.signature_valid:
        return f"profile {profile.uuid} has a broken signature (tampered or damaged)"
    if not profile.chain_trusted:
        return (
            f"profile {profile.uuid} is signed by an untrusted chain "
            "(configure ROLLOUT_TRUST_ANCHORS and add it again)"
        )
    if profile.kind in STORE_KINDS:
        return (
            f"profile {profile.uuid} is an App Store distribution profile: it only signs "
            "store submissions, a device has no use for it"
        )
    return None


def exclusion(
    device: DeviceInfo,
    *,
    command: str,
    verify: bool,
    profile: ProfileEntry | None,
    holds_profile: bool,
    server_wakes: bool = False,
) -> str | None:
    """Why ``device`` cannot take the command (a short reason), or None when it can.

    ``server_wakes``: the MDM server rollout delivers through wakes the devices, so a device
    known only from an inventory or the server's device list needs no push data of its own.
    """
    if device.state == EnrollmentState.CHECKED_OUT:
        return "checked_out"
    if (
        not server_wakes
        and device.state == EnrollmentState.IMPORTED
        and (device.token_state != TokenState.ACTIVE or not device.has_push_magic)
    ):
        return "never_pushable"
    if device.platform is not None:
        minimum = MINIMUM_OS.get(device.platform)
        if minimum is None:
            return "platform_unsupported"
        version = _version(device.os_version)
        if version is not None and version < minimum:
            return "os_too_old"
        if device.enrollment_type == "user" and device.platform not in USER_ENROLLMENT_PLATFORMS:
            return "user_enrollment"
    needed = RIGHT_INSTALL_REMOVE if command in ("install", "remove") else RIGHT_INSPECT
    if verify:
        needed |= RIGHT_INSPECT
    if device.access_rights is not None and device.access_rights & needed != needed:
        return "access_rights"
    if command != "install" or profile is None:
        return None
    if (
        device.platform is not None
        and profile.platforms
        and not PROFILE_PLATFORMS[device.platform] & set(profile.platforms)
    ):
        return "profile_platform"
    provisioned = profile.metadata.get("provisioned_devices") or []
    if provisioned and (device.udid or "").upper() not in {u.upper() for u in provisioned}:
        return "not_provisioned"
    if holds_profile:
        return "already_current"
    return None


def _version(text: str | None) -> tuple[int, ...] | None:
    if not text:
        return None
    found = _VERSION.match(text.strip())
    if found is None:
        return None
    return tuple(int(p) for p in found.groups() if p is not None)
