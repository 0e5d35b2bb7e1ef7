"""Deciding a profile's distribution kind from its plist keys.

Apple does not store the kind; tools (Xcode, fastlane) infer it. The rules here, first match wins:

1. ``ProvisionsAllDevices`` true together with a ``ProvisionedDevices`` list → ``unknown``
   (contradictory keys).
2. ``ProvisionsAllDevices`` true, macOS-only platforms (``OSX``/``macOS``) → ``developer-id``
   (Developer ID profiles are the macOS profiles that cover all devices, TN3125).
3. ``ProvisionsAllDevices`` true otherwise → ``enterprise`` (in-house).
4. ``ProvisionedDevices`` present (even empty), macOS-only → ``development``: macOS has no ad hoc
   distribution, so a Mac profile that lists devices is a development one whatever its
   get-task-allow says (Mac development profiles often leave it out).
5. ``ProvisionedDevices`` present and get-task-allow true → ``development``.
6. ``ProvisionedDevices`` present and get-task-allow false/absent → ``ad-hoc``.
7. No device keys, get-task-allow true → ``unknown`` (a development profile always lists devices,
   and no distribution profile allows a debugger: the keys contradict each other).
8. No device keys, at least one iOS-like platform (``iOS``, ``xrOS``, ``visionOS``, ``tvOS``,
   ``watchOS``) → ``app-store``.
9. No device keys, macOS-only → ``mac-app-store`` (the only macOS profile with neither key).
10. Anything else (no ``Platform`` at all, or only names this module does not know) → ``unknown``.

"get-task-allow" is ``Entitlements.get-task-allow``, else
``Entitlements.com.apple.security.get-task-allow``; absent means false.
"""

from __future__ import annotations

from collections.abc import Iterable

from rollout.profiles.model import ProfileKind

IOS_LIKE_PLATFORMS = frozenset({"ios", "xros", "visionos", "tvos", "watchos"})
MACOS_PLATFORMS = frozenset({"osx", "macos"})


def is_macos_only(platforms: Iterable[str]) -> bool:
    """True when every platform is a macOS name (and there is at least one)."""
    names = {p.lower() for p in platforms}
    return bool(names) and names <= MACOS_PLATFORMS


def classify(
    *,
    platforms: Iterable[str],
    provisions_all_devices: bool,
    has_device_list: bool,
    get_task_allow: bool,
) -> ProfileKind:
    """Apply the module's rules."""
    names = {p.lower() for p in platforms}
    if provisions_all_devices:
        if has_device_list:
            return ProfileKind.UNKNOWN
        return ProfileKind.DEVELOPER_ID if is_macos_only(names) else ProfileKind.ENTERPRISE
    if has_device_list:
        if get_task_allow or is_macos_only(names):
            return ProfileKind.DEVELOPMENT
        return ProfileKind.AD_HOC
    if get_task_allow:
        return ProfileKind.UNKNOWN
    if names & IOS_LIKE_PLATFORMS:
        return ProfileKind.APP_STORE
    if is_macos_only(names):
        return ProfileKind.MAC_APP_STORE
    return ProfileKind.UNKNOWN
