"""The platform a device runs, read from its product identifier."""

from __future__ import annotations

import pytest

from rollout.mdm.products import platform_of


@pytest.mark.parametrize(
    ("product", "model", "platform"),
    [
        ("iPhone14,2", None, "iOS"),
        ("iPad2,5", None, "iPadOS"),  # nanomdm's captured Authenticate
        ("iPod9,1", "MVHW2LL", "iOS"),
        (None, "MacBookPro18,3", "macOS"),
        ("Mac14,2", None, "macOS"),
        ("VirtualMac2,1", None, "macOS"),
        ("AppleTV11,1", None, "tvOS"),
        ("Watch6,1", None, "watchOS"),
        ("RealityDevice14,1", None, "visionOS"),
        ("Toaster3,1", None, None),
        ("", "", None),
        ("iPhone", None, None),
    ],
)
def test_platform_from_product_identifiers(
    product: str | None, model: str | None, platform: str | None
) -> None:
    assert platform_of(product, model) == platform
