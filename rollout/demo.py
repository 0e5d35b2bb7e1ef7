"""The demo: the product at work on a simulated fleet, on the embedded default.

Today it shows the profile library and the device registry: it makes a test signing chain
shaped like Apple's, an enterprise profile about to expire and its renewal, inspects and
verifies them (a tampered copy is refused), keeps them in the ledger, imports a generated
inventory, and reports what a renewal would have to reach.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, func, select

from rollout.inventory import read_inventory
from rollout.ledger import db
from rollout.ledger.devices import import_devices
from rollout.ledger.models import DeviceRow, InstalledProfileRow, ProfileRow
from rollout.ledger.profiles import add_profile
from rollout.profiles import (
    Profile,
    ProfileError,
    ensure_installable,
    parse_profile,
    render_text,
)
from rollout.sim.profiles import make_apple_like_chain, make_profile, tamper


@dataclass(frozen=True)
class DemoConfig:
    """What the demo builds."""

    devices: int = 2000
    seed: int = 7
    home: Path = Path("var")


def _fleet_csv(n: int, rng: random.Random, profile_uuid: str) -> bytes:
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(["udid", "enrollment_id", "platform", "os_version", "push_token", "push_magic",
                "tags", "profiles"])  # fmt: skip
    for i in range(n):
        roll = rng.random()
        platform = rng.choice(["iOS", "iOS", "iOS", "iPadOS", "macOS"])
        tags = rng.choice(["store", "warehouse", "office", "field"])
        token = f"{rng.getrandbits(256):064x}"
        magic = f"{rng.getrandbits(128):032X}"
        udid = f"00008{rng.randint(100, 999):03d}-{i:016X}"
        os_version = {"macOS": "14.6", "iPadOS": "17.6"}.get(platform, "17.5")
        if roll < 0.02:  # a damaged row, as real exports have
            w.writerow([f"bad-{i}", "", platform, "17.5", "", "", tags, profile_uuid])
        elif roll < 0.07:  # User Enrollment (BYOD): identified by EnrollmentID
            w.writerow(["", f"ENR-{i:08d}", "iOS", "17.5", token, magic, "byod", profile_uuid])
        elif roll < 0.12:  # never sent a TokenUpdate: cannot be woken
            w.writerow([udid, "", platform, os_version, "", "", tags, profile_uuid])
        else:
            w.writerow([udid, "", platform, os_version, token, magic, tags, profile_uuid])
    return out.getvalue().encode()


def run_demo(engine: Engine, cfg: DemoConfig, say: Any = print) -> dict[str, Any]:
    """Run the demo against ``engine`` (a migrated ledger); return its summary."""
    rng = random.Random(cfg.seed)
    work = cfg.home / "demo"
    work.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)

    say("1. A test signing chain shaped like Apple's (root, intermediate, profile signer)")
    chain = make_apple_like_chain(not_before=now - dt.timedelta(days=400))
    (work / "test-apple-root.der").write_bytes(chain.root.cert_der())

    say("2. An in-house profile that expires in 21 days, and its renewal")
    current = make_profile(
        chain, name="Field App In-House", created_at=now - dt.timedelta(days=344),
        expires_at=now + dt.timedelta(days=21),
    )  # fmt: skip
    renewal = make_profile(
        chain, name="Field App In-House", created_at=now, expires_at=now + dt.timedelta(days=365)
    )
    files = {"current": current, "renewal": renewal, "tampered": tamper(renewal)}
    for label, data in files.items():
        (work / f"{label}.mobileprovision").write_bytes(data)

    say("3. Inspect and verify each file")
    parsed: dict[str, Profile] = {}
    for label, data in files.items():
        profile = parse_profile(data, trust_anchors=chain.anchors)
        parsed[label] = profile
        say(f"--- {label}.mobileprovision")
        say(render_text(profile, now=now))

    say("4. Keep the good ones in the library; the tampered copy is refused")
    refused: list[str] = []
    with db.transaction(engine) as session:
        for label in ("current", "renewal", "tampered"):
            try:
                ensure_installable(parsed[label], require_trusted_chain=True)
            except ProfileError as exc:
                refused.append(label)
                say(f"   refused {label}: {exc}")
                continue
            row, created = add_profile(session, parsed[label], files[label])
            say(f"   {'added' if created else 'kept'} {label}: {row.uuid}")

    say(f"5. Import an inventory of {cfg.devices} devices holding the expiring profile")
    report = read_inventory(_fleet_csv(cfg.devices, rng, parsed["current"].uuid), fmt="csv")
    for error in report.errors[:3]:
        say(f"   invalid row, {error}")
    if len(report.errors) > 3:
        say(f"   … and {len(report.errors) - 3} more invalid rows")
    with db.transaction(engine) as session:
        result = import_devices(session, report.records)
    say(f"   {result.created} created, {result.updated} updated, {len(report.errors)} invalid")

    say("6. What a renewal has to reach")
    cur = parsed["current"]
    with db.transaction(engine) as session:
        holders = session.scalar(
            select(func.count())
            .select_from(InstalledProfileRow)
            .where(InstalledProfileRow.profile_uuid == cur.uuid)
        )
        pushable = session.scalar(
            select(func.count())
            .select_from(InstalledProfileRow)
            .join(DeviceRow, DeviceRow.id == InstalledProfileRow.device_id)
            .where(InstalledProfileRow.profile_uuid == cur.uuid, DeviceRow.token_state == "active")
        )
        replacement = session.scalar(
            select(ProfileRow.uuid)
            .where(
                ProfileRow.app_id == cur.app_id,
                ProfileRow.team_id == cur.team_id,
                ProfileRow.expires_at > cur.expires_at,
            )
            .order_by(ProfileRow.expires_at.desc())
        )
        library = session.scalar(select(func.count()).select_from(ProfileRow))
        by_platform = dict(
            session.execute(
                select(DeviceRow.platform, func.count()).group_by(DeviceRow.platform)
            ).all()
        )
    summary = {
        "devices": cfg.devices,
        "library": {"profiles": library, "refused": refused},
        "expiring": {
            "uuid": cur.uuid,
            "expires_at": cur.to_json()["expires_at"],
            "days_left": cur.days_left(now),
            "held_by": holders,
            "pushable": pushable,
            "replacement": replacement,
        },
        "import": {
            "created": result.created,
            "updated": result.updated,
            "invalid": len(report.errors),
        },
        "platforms": {str(k): v for k, v in sorted(by_platform.items(), key=lambda kv: str(kv[0]))},
    }
    say(
        f"   {holders} devices hold {cur.uuid} (expires in {cur.days_left(now)} days); "
        f"{pushable} can be woken by APNs; replacement in the library: {replacement}"
    )
    return summary
