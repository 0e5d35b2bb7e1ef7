"""Which platform a device runs, from the product identifier it reports (no I/O).

Authenticate carries ``ProductName`` (``iPhone14,2``, ``iPad13,4``, ``MacBookPro18,3``,
``AppleTV11,1``, ``Watch6,1``, ``RealityDevice14,1``) and, on macOS, ``Model`` in the same
form. The family prefix names the platform; an unknown one names none.
"""

from __future__ import annotations

import re

_FAMILY = re.compile(r"([A-Za-z]+)\d+,\d+")
_PLATFORMS = {
    "iphone": "iOS",
    "ipod": "iOS",
    "ipad": "iPadOS",
    "appletv": "tvOS",
    "watch": "watchOS",
    "realitydevice": "visionOS",
    "mac": "macOS",
    "macbook": "macOS",
    "macbookair": "macOS",
    "macbookpro": "macOS",
    "macmini": "macOS",
    "macpro": "macOS",
    "imac": "macOS",
    "imacpro": "macOS",
    "virtualmac": "macOS",
}


def platform_of(*identifiers: str | None) -> str | None:
    """The platform the first recognised product identifier names (``iOS``, ``iPadOS``,
    ``macOS``, ``tvOS``, ``watchOS``, ``visionOS``), or None."""
    for identifier in identifiers:
        if not identifier:
            continue
        found = _FAMILY.fullmatch(identifier.strip())
        if found is not None and found[1].lower() in _PLATFORMS:
            return _PLATFORMS[found[1].lower()]
    return None
