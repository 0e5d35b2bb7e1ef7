"""The renewal scan: no in-house app stops launching because its profile expired.

Run hourly by the beat (``rollout renewals scan`` by hand). For each provisioning profile that
devices hold and that expires inside its renewal window, the scan finds a replacement (in the
library, else from the configured profile sources: a watched folder, Apple's API), and opens a
**renewal rollout** of it over the devices that hold the old one, with the default stages and
gates, started unless the policy says otherwise. There is one renewal rollout per (old, new)
pair, however often and however concurrently the scan runs. Without a replacement it raises an
alert, escalated inside ``escalate_within``.

It also alerts when a held profile has expired, when a developer certificate inside a held
profile expires before the profile (and inside the window), when a renewal rollout halted on a
gate or ended without reaching every holder, and when the MDM push certificate is about to
expire. Every alert of these kinds that the scan no longer finds is resolved by itself.

``dry_run`` writes nothing and asks no source: it explains, per profile, what it would do.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from cryptography import x509
from sqlalchemy.exc import IntegrityError

from rollout import alerts
from rollout.alerts import AlertPolicy
from rollout.ledger import (
    Event,
    Holding,
    Ledger,
    NewAlert,
    ProfileConflictError,
    ProfileEntry,
    RolloutInfo,
)
from rollout.operations import AlreadyRenewingError, OperationError, create_rollout
from rollout.planning import PlanningError
from rollout.profiles import ProfileError, ensure_installable, parse_profile
from rollout.replacement import choose
from rollout.spec import DEFAULT_STAGE_SPECS, RolloutSpec, StageSpec, TargetSpec
from rollout.states import RolloutState

log = logging.getLogger(__name__)

ACTOR = "renewal-scan"
KINDS = (
    "renewal.missing",
    "renewal.halted",
    "renewal.incomplete",
    "renewal.blocked",
    "profile.expired",
    "profile.certificate_expiring",
)
PUSH_KIND = "apns.certificate_expiring"
FAR = dt.timedelta(days=3650)
"""How far ahead held profiles are read for certificate checks (every held profile)."""


class ProfileSource(Protocol):
    """Somewhere renewed profiles come from (a watched folder, Apple's API)."""

    name: str

    def fetch(self, old: ProfileEntry, now: dt.datetime) -> list[bytes]:
        """Profile files that may renew ``old`` (the scan checks each one)."""
        ...


@dataclass(frozen=True)
class RenewalPolicy:
    """When and how the scan acts."""

    window: dt.timedelta = dt.timedelta(days=30)
    windows: tuple[tuple[str, dt.timedelta], ...] = ()  # (app identifier pattern, window)
    escalate_within: dt.timedelta = dt.timedelta(days=7)
    start: bool = True  # start renewal rollouts (the gates decide the rest)
    stages: tuple[StageSpec, ...] = DEFAULT_STAGE_SPECS
    push_window: dt.timedelta = dt.timedelta(days=30)
    server_wakes: bool = False  # the MDM server rollout delivers through wakes the devices

    def window_for(self, app_id: str | None) -> dt.timedelta:
        """The renewal window of an application identifier (``TEAMID.bundle``): the first
        pattern that matches it or its bundle part, else the default."""
        if app_id:
            bundle = app_id.split(".", 1)[1] if "." in app_id else app_id
            for pattern, window in self.windows:
                if fnmatch.fnmatchcase(app_id, pattern) or fnmatch.fnmatchcase(bundle, pattern):
                    return window
        return self.window

    def severity(self, left: dt.timedelta) -> str:
        """``critical`` inside the escalation period, else ``warning``."""
        return "critical" if left <= self.escalate_within else "warning"


@dataclass(frozen=True)
class PushCertificate:
    """The MDM push certificate the scan watches."""

    topic: str
    not_after: dt.datetime


@dataclass
class ScanReport:
    """What a scan found and did, per profile."""

    dry_run: bool
    profiles: list[dict[str, Any]] = field(default_factory=list)
    opened: list[int] = field(default_factory=list)
    alerts: dict[str, list[str]] = field(default_factory=dict)
    push_certificate: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return {
            "dry_run": self.dry_run,
            "profiles": self.profiles,
            "opened": self.opened,
            "alerts": self.alerts,
            "push_certificate": self.push_certificate,
        }


def scan(
    ledger: Ledger,
    now: dt.datetime,
    policy: RenewalPolicy | None = None,
    *,
    sources: Sequence[ProfileSource] = (),
    trust_anchors: Sequence[x509.Certificate] = (),
    alert_policy: AlertPolicy | None = None,
    push_certificate: PushCertificate | None = None,
    dry_run: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> ScanReport:
    """One pass over every held profile (see the module notes); ``progress(done, total)`` is
    told after each one."""
    policy = policy or RenewalPolicy()
    report = ScanReport(dry_run=dry_run)
    findings: list[NewAlert] = []
    with ledger.registry() as registry:
        held = registry.expiring(now + FAR)
    for k, holding in enumerate(held):
        if progress is not None:
            progress(k, len(held))
        entry = _library_entry(ledger, holding.profile_uuid)
        window = policy.window_for(entry.app_id if entry else holding.app_id)
        findings.extend(_certificate_findings(holding, entry, now, window, policy))
        if holding.expires_at > now + window:
            continue
        item, found = _renew(ledger, holding, entry, now, policy, sources, trust_anchors, dry_run)
        report.profiles.append(item)
        findings.extend(found)
        if item.get("opened"):
            report.opened.append(item["rollout"]["id"])
    if progress is not None:
        progress(len(held), len(held))
    kinds: list[str] = list(KINDS)
    if push_certificate is not None:
        kinds.append(PUSH_KIND)
        report.push_certificate, found = _push_findings(push_certificate, now, policy)
        findings.extend(found)
    if dry_run:
        report.alerts = {"would_raise": sorted(f.key for f in findings)}
        return report
    with ledger.alerts() as store:
        changes = alerts.reconcile(
            store, findings, kinds=kinds, policy=alert_policy or AlertPolicy(), now=now
        )
    report.alerts = changes.as_dict()
    return report


def _library_entry(ledger: Ledger, uuid: str) -> ProfileEntry | None:
    with ledger.library() as store:
        return store.get(uuid)


def _days(left: dt.timedelta) -> int:
    return left // dt.timedelta(days=1)


def _renew(
    ledger: Ledger,
    holding: Holding,
    entry: ProfileEntry | None,
    now: dt.datetime,
    policy: RenewalPolicy,
    sources: Sequence[ProfileSource],
    anchors: Sequence[x509.Certificate],
    dry_run: bool,
) -> tuple[dict[str, Any], list[NewAlert]]:
    """What to do about one expiring held profile: its report item and its findings."""
    left = holding.expires_at - now
    uuid = holding.profile_uuid
    name = holding.name or uuid
    with ledger.registry() as registry:
        devices, sample = registry.lacking(uuid, None)
    item: dict[str, Any] = {
        "profile": uuid,
        "name": holding.name,
        "app_id": entry.app_id if entry else holding.app_id,
        "expires_at": holding.expires_at.isoformat(),
        "days_left": _days(left),
        "devices": devices,
        "replacement": None,
        "rollout": None,
    }
    facts = {k: item[k] for k in ("profile", "name", "app_id", "expires_at", "days_left")}
    findings: list[NewAlert] = []
    if left <= dt.timedelta(0):
        findings.append(
            NewAlert(
                f"profile.expired:{uuid}",
                "profile.expired",
                "critical",
                f"{name} expired on {holding.expires_at:%Y-%m-%d}; {devices} device(s) hold it",
                {**facts, "devices": devices, "sample": sample},
            )
        )
    if entry is None:
        item["why"] = (
            "not in the library, so no replacement can be matched "
            "(add it with `rollout profiles add`)"
        )
        findings.append(_missing(holding, facts, devices, sample, left, policy, item["why"]))
        return item, findings
    with ledger.rollouts() as store:
        existing = store.renewing([uuid])
    live = [r for r in existing if r.state not in _FINISHED]
    if live:  # one renewal at a time per old profile
        return item, findings + _follow(ledger, live[-1], holding, facts, item, left, policy)
    choice = _choose(ledger, entry, now)
    if choice.replacement is None and sources:
        if dry_run:
            item["sources"] = {s.name: "would be asked" for s in sources}
        else:
            item["sources"] = _ask_sources(ledger, entry, now, sources, anchors)
            choice = _choose(ledger, entry, now)
    item["rejected"] = choice.rejected
    new = choice.replacement
    if new is None:
        item["why"] = "no replacement: " + (
            "; ".join(f"{u}: {r}" for u, r in sorted(choice.rejected.items()))
            or "no profile of the same app and team in the library"
        )
        findings.append(_missing(holding, facts, devices, sample, left, policy, item["why"]))
        return item, findings
    item["replacement"] = new.uuid
    done = [r for r in existing if r.profile_uuid == new.uuid]
    if done:
        return item, findings + _follow(ledger, done[-1], holding, facts, item, left, policy)
    if dry_run:
        item["action"] = f"would open a renewal rollout of {new.uuid} over the holders"
        return item, findings
    spec = RolloutSpec(
        profile=new.uuid,
        targets=TargetSpec(holders_of=uuid),
        stages=policy.stages,
        name=f"renew {name}"[:200] + f" (expires {holding.expires_at:%Y-%m-%d})",
    )
    try:
        summary = create_rollout(
            ledger,
            spec,
            actor=ACTOR,
            now=now,
            start=policy.start,
            replaces=uuid,
            server_wakes=policy.server_wakes,
        )
    except (AlreadyRenewingError, IntegrityError):
        # a concurrent scan opened it first
        with ledger.rollouts() as store:
            mine = [r for r in store.renewing([uuid]) if r.profile_uuid == new.uuid]
        if not mine:
            raise
        item["rollout"] = {"id": mine[-1].id, "state": mine[-1].state}
        item["action"] = "opened by a concurrent scan"
        return item, findings
    except (OperationError, PlanningError) as exc:
        item["action"] = "blocked"
        item["why"] = str(exc)
        findings.append(
            NewAlert(
                f"renewal.blocked:{uuid}",
                "renewal.blocked",
                policy.severity(left),
                f"{name} cannot be renewed with {new.uuid}: {exc}",
                {**facts, "replacement": new.uuid, "why": str(exc)},
            )
        )
        return item, findings
    info = summary.rollout
    item["rollout"] = {"id": info.id, "state": info.state}
    item["opened"] = True
    item["action"] = f"opened renewal rollout {info.id}"
    item["excluded"] = dict(summary.reasons.get("ineligible", {}))
    with ledger.rollouts() as store:
        store.record(
            [Event("renewal.opened", {**facts, "replacement": new.uuid}, rollout_id=info.id)], now
        )
    return item, findings


_FINISHED = (RolloutState.COMPLETED.value, RolloutState.ABORTED.value)


def _choose(ledger: Ledger, entry: ProfileEntry, now: dt.datetime) -> Any:
    if entry.app_id is None or entry.team_id is None:
        return choose(entry, [], now)
    with ledger.library() as store:
        candidates = store.like(app_id=entry.app_id, team_id=entry.team_id)
    return choose(entry, candidates, now)


def _ask_sources(
    ledger: Ledger,
    entry: ProfileEntry,
    now: dt.datetime,
    sources: Sequence[ProfileSource],
    anchors: Sequence[x509.Certificate],
) -> dict[str, str]:
    """Ask each source in turn until one gives a profile the library did not have; every file
    is checked and kept in the library (a bad one is said, never kept)."""
    said: dict[str, str] = {}
    for source in sources:
        try:
            files = source.fetch(entry, now)
        except Exception as exc:  # a source is outside: it must never stop the scan
            said[source.name] = f"failed: {' '.join(str(exc).split())[:300]}"
            log.warning("profile source %s failed: %s", source.name, said[source.name])
            continue
        added, bad = [], []
        for data in files:
            try:
                profile = parse_profile(data, trust_anchors=anchors)
                ensure_installable(profile, require_trusted_chain=True)
                with ledger.library() as store:
                    kept, new = store.add(profile, data, now)
                    if new:
                        event = {"uuid": kept.uuid, "name": kept.name, "by": source.name}
                        store.record([Event("profile.added", event)], now)
                        added.append(kept.uuid)
            except (ProfileError, ProfileConflictError) as exc:
                bad.append(str(exc))
                log.warning("profile source %s gave a profile refused: %s", source.name, exc)
        said[source.name] = f"{len(files)} file(s), {len(added)} new" + (
            f", {len(bad)} refused" if bad else ""
        )
        if added:
            break
    return said


def _follow(
    ledger: Ledger,
    rollout: RolloutInfo,
    holding: Holding,
    facts: dict[str, Any],
    item: dict[str, Any],
    left: dt.timedelta,
    policy: RenewalPolicy,
) -> list[NewAlert]:
    """An existing renewal rollout: say how it stands in ``item``; a halted one, or a finished
    one that left holders without the new profile, becomes a finding."""
    item["replacement"] = rollout.profile_uuid
    item["rollout"] = {"id": rollout.id, "state": rollout.state}
    with ledger.registry() as registry:
        lacking, sample = registry.lacking(holding.profile_uuid, rollout.profile_uuid)
    item["lacking"] = lacking
    item["action"] = f"renewal rollout {rollout.id} is {rollout.state}"
    name = holding.name or holding.profile_uuid
    found: list[NewAlert] = []
    if rollout.state == RolloutState.HALTED:
        found.append(
            NewAlert(
                f"renewal.halted:{rollout.id}",
                "renewal.halted",
                policy.severity(left),
                f"renewal rollout {rollout.id} of {name} halted: {rollout.reason or 'a gate'}",
                {**facts, "rollout": rollout.id, "reason": rollout.reason, "lacking": lacking},
            )
        )
    elif rollout.state in _FINISHED and lacking:
        found.append(
            NewAlert(
                f"renewal.incomplete:{holding.profile_uuid}",
                "renewal.incomplete",
                policy.severity(left),
                f"{lacking} device(s) hold {name} ({_days(left)} days left) without its "
                f"renewal; rollout {rollout.id} is {rollout.state}",
                {**facts, "rollout": rollout.id, "lacking": lacking, "sample": sample},
            )
        )
    return found


def _missing(
    holding: Holding,
    facts: dict[str, Any],
    devices: int,
    sample: list[str],
    left: dt.timedelta,
    policy: RenewalPolicy,
    why: str,
) -> NewAlert:
    name = holding.name or holding.profile_uuid
    return NewAlert(
        f"renewal.missing:{holding.profile_uuid}",
        "renewal.missing",
        policy.severity(left),
        f"no renewal for {name}: {devices} device(s), {_days(left)} days left",
        {**facts, "devices": devices, "sample": sample, "why": why},
    )


def _certificate_findings(
    holding: Holding,
    entry: ProfileEntry | None,
    now: dt.datetime,
    window: dt.timedelta,
    policy: RenewalPolicy,
) -> list[NewAlert]:
    """Developer certificates of a held profile that expire before it, inside the window."""
    if entry is None:
        return []
    found = []
    for cert in entry.metadata.get("developer_certificates", []):
        try:
            not_after = dt.datetime.fromisoformat(str(cert["not_after"]).replace("Z", "+00:00"))
        except (KeyError, ValueError):
            continue
        if not_after >= entry.expires_at or not_after > now + window:
            continue
        left = not_after - now
        found.append(
            NewAlert(
                f"profile.certificate_expiring:{entry.uuid}:{cert.get('serial')}",
                "profile.certificate_expiring",
                policy.severity(left),
                f"certificate {cert.get('common_name') or cert.get('serial')} in {entry.name} "
                f"expires on {not_after:%Y-%m-%d}, before the profile; apps signed with it stop "
                "launching then",
                {
                    "profile": entry.uuid,
                    "name": entry.name,
                    "serial": cert.get("serial"),
                    "not_after": not_after.isoformat(),
                    "days_left": _days(left),
                    "devices": holding.devices,
                },
            )
        )
    return found


def _push_findings(
    cert: PushCertificate, now: dt.datetime, policy: RenewalPolicy
) -> tuple[dict[str, Any], list[NewAlert]]:
    left = cert.not_after - now
    item = {
        "topic": cert.topic,
        "expires_at": cert.not_after.isoformat(),
        "days_left": _days(left),
    }
    if left > policy.push_window:
        return item, []
    return item, [
        NewAlert(
            f"{PUSH_KIND}:{cert.topic}",
            PUSH_KIND,
            policy.severity(left),
            f"the MDM push certificate ({cert.topic}) expires on {cert.not_after:%Y-%m-%d}: "
            "renew it (keeping its topic) or no device can be woken",
            item,
        )
    ]
