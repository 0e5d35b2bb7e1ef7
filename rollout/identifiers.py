"""Device identifiers in one canonical form, on every path (imports, check-ins, lists, CLI).

A UDID is hexadecimal and case-insensitive: older iPhones report 40 lower-case hex digits,
newer ones ``00008020-000915083C80012E`` in upper case, Macs an upper-case UUID, and inventory
exports from other tools use either case. rollout keeps every UDID in upper case, so the same
device never becomes two. An EnrollmentID (User Enrollment) is an opaque string and is kept
exactly as the device sends it.
"""

from __future__ import annotations

import re

UDID_PATTERN = re.compile(
    r"(?:[0-9A-Fa-f]{40}"  # before iPhone XS: 40 hex digits
    r"|[0-9A-Fa-f]{8}-[0-9A-Fa-f]{16}"  # since 2018: 8-16 hex digits
    r"|[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12})"  # Macs
)
"""The UDID shapes Apple devices report (checked on imports; devices are taken at their word)."""


def normalize_udid(udid: str) -> str:
    """The canonical form of a UDID: surrounding blanks dropped, upper case."""
    return udid.strip().upper()


def is_udid(value: str) -> bool:
    """Whether ``value`` has one of the UDID shapes in :data:`UDID_PATTERN`."""
    return UDID_PATTERN.fullmatch(value.strip()) is not None
