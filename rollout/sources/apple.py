"""Apple's API as a profile source of the renewal scan.

The scan knows a library entry; Apple's client wants what the old profile asks of its renewal
(:class:`~rollout.sources.apple_api.WantedRenewal`). This module makes one from the other and
hands back the signed files Apple returns; the scan verifies each one like any other source's.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, cast

from rollout.clock import Clock
from rollout.ledger import ProfileEntry
from rollout.sources.apple_api import DEVICE_KINDS, AppleProfileSource, WantedRenewal
from rollout.sources.apple_jwt import ApiName, AppleApiKey

if TYPE_CHECKING:
    from rollout.config import Settings


def wanted_from_entry(old: ProfileEntry) -> WantedRenewal:
    """What a library profile asks of its renewal (``ValueError`` when Apple cannot renew
    it: a store kind, no app identifier)."""
    meta = old.metadata
    app_id = old.app_id or ""
    if not old.team_id or "." not in app_id:
        raise ValueError(f"profile {old.uuid} names no application identifier")
    bundle = app_id.split(".", 1)[1]
    serials = tuple(
        str(c["serial"]) for c in meta.get("developer_certificates", []) if c.get("serial")
    )
    devices = tuple(meta.get("provisioned_devices", [])) if old.kind in DEVICE_KINDS else ()
    return WantedRenewal(
        bundle_id=bundle,
        team_id=old.team_id,
        name=old.name,
        uuid=old.uuid,
        platforms=old.platforms,
        kind=old.kind,  # type: ignore[arg-type]  # checked by WantedRenewal itself
        certificate_serials=serials,
        expires_at=old.expires_at,
        devices=devices,
    )


class AppleSource:
    """Renewed profiles from Apple's App Store Connect or Enterprise Program API."""

    name = "apple"

    def __init__(self, client: AppleProfileSource) -> None:
        self.client = client

    @classmethod
    def from_settings(cls, settings: Settings, clock: Clock) -> AppleSource:
        """The source the ``ROLLOUT_APPLE_*`` settings describe."""
        key = AppleApiKey.from_p8(
            settings.apple_key_file,
            issuer_id=settings.apple_issuer_id,
            key_id=settings.apple_key_id or None,
        )
        return cls(
            AppleProfileSource(
                key,
                api=cast(ApiName, settings.apple_api),
                clock=clock,
                base_url=settings.apple_api_url or None,
            )
        )

    def fetch(self, old: ProfileEntry, now: dt.datetime) -> list[bytes]:
        """The signed files Apple offers as renewals of ``old`` (made by Apple when it had
        none)."""
        return [found.content for found in self.client.renewals(wanted_from_entry(old))]
