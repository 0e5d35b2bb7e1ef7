"""A short, aligned, human-readable summary of a :class:`Profile`."""

from __future__ import annotations

import datetime as dt

from rollout.profiles.model import Profile, SignatureVerdict, iso_z


def _signature_line(verdict: SignatureVerdict) -> str:
    if not verdict.valid:
        return f"INVALID ({verdict.reason})"
    signer = f" by {verdict.signer}" if verdict.signer else ""
    if verdict.chain_trusted:
        return f"valid{signer}, chain trusted"
    return f"valid{signer}, chain NOT trusted ({verdict.reason})"


def _devices_line(profile: Profile) -> str:
    if profile.provisions_all_devices:
        return "all devices"
    if not profile.provisioned_devices:
        return "none listed"
    return str(len(profile.provisioned_devices))


def render_text(profile: Profile, *, now: dt.datetime | None = None) -> str:
    """A few aligned ``label: value`` lines; ``now`` (default: current time) sets days left."""
    at = now or dt.datetime.now(dt.UTC)
    if profile.is_expired(at):
        left = "EXPIRED"
    else:
        days = profile.days_left(at)
        left = f"{days} day{'s' if days != 1 else ''} left"
    team = f"{profile.team_id} ({profile.team_name})" if profile.team_name else profile.team_id
    rows = [
        ("Name", profile.name),
        ("UUID", profile.uuid),
        ("Kind", profile.kind.value),
        ("Team", team),
        ("App ID", profile.app_id),
        ("Platforms", ", ".join(profile.platforms) or "-"),
        ("Created", iso_z(profile.created_at)),
        ("Expires", f"{iso_z(profile.expires_at)} ({left})"),
        ("Devices", _devices_line(profile)),
        ("Signature", _signature_line(profile.signature)),
    ]
    width = max(len(label) for label, _ in rows) + 1
    return "\n".join(f"{label + ':':<{width}} {value}" for label, value in rows)
