"""Whether one provisioning profile can replace another on the devices that hold it.

A renewed profile must be usable by the same apps on the same devices for longer: the same team
and the same application identifier (a wildcard profile is renewed by the same wildcard), a
later expiry, a valid signature that chains to the trust anchors, every platform the old one
covers, a kind a device can install, and, for a profile that lists devices, the devices that
hold the old one (those it does not list are left out of the rollout, each with its reason).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field

from rollout.ledger import ProfileEntry

STORE_KINDS = frozenset({"app-store", "mac-app-store"})
"""Kinds that only sign store submissions: a device has no use for them."""


def why_not(old: ProfileEntry, new: ProfileEntry, now: dt.datetime) -> str | None:
    """Why ``new`` cannot replace ``old`` (one line), or None when it can."""
    if new.uuid == old.uuid:
        return "it is the same profile"
    if new.team_id != old.team_id:
        return f"another team ({new.team_id}, not {old.team_id})"
    if new.app_id != old.app_id:
        return f"another application identifier ({new.app_id}, not {old.app_id})"
    if new.kind in STORE_KINDS:
        return f"a {new.kind} profile only signs store submissions"
    if new.expires_at <= now:
        return f"it expired on {new.expires_at:%Y-%m-%d}"
    if new.expires_at <= old.expires_at:
        return f"it does not outlive the old one ({new.expires_at:%Y-%m-%d})"
    if not new.signature_valid:
        return "its signature is broken"
    if not new.chain_trusted:
        return "its signature does not chain to the trust anchors"
    missing = sorted(set(old.platforms) - set(new.platforms))
    if missing:
        return f"it does not cover {', '.join(missing)}"
    return None


@dataclass(frozen=True)
class Choice:
    """The replacement picked for a profile (or None) and why each other candidate was not."""

    replacement: ProfileEntry | None
    rejected: dict[str, str] = field(default_factory=dict)  # candidate UUID -> reason


def choose(old: ProfileEntry, candidates: Iterable[ProfileEntry], now: dt.datetime) -> Choice:
    """The candidate that can replace ``old`` and lives longest (then the newest made)."""
    fit: list[ProfileEntry] = []
    rejected: dict[str, str] = {}
    for candidate in candidates:
        if candidate.uuid == old.uuid:
            continue
        reason = why_not(old, candidate, now)
        if reason is None:
            fit.append(candidate)
        else:
            rejected[candidate.uuid] = reason
    if not fit:
        return Choice(None, rejected)
    best = max(fit, key=lambda p: (p.expires_at, p.created_at, p.uuid))
    for other in fit:
        if other is not best:
            rejected[other.uuid] = f"{best.uuid} lives longer"
    return Choice(best, rejected)
