"""Planning a rollout: which devices it targets, which may take its command, and their stages.

Targets come from the registry by an explicit list, the holders of a profile, tags, platforms
or all devices (criteria combine). Each is checked by :mod:`rollout.eligibility`; an excluded
device stays in the plan with its reason (it is written ``ineligible`` and counted). A device's
stage comes from a stable hash of the rollout's salt and its UDID against the stages' reach, so
planning again never reshuffles who is in the canary; the first stage always holds at least one
device. Within a stage, devices seen most recently are pushed first.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from rollout.eligibility import exclusion
from rollout.identifiers import normalize_udid
from rollout.ledger import DeviceFilter, DeviceInfo, PlannedTarget, ProfileEntry, RegistryStore
from rollout.spec import StageSpec, TargetSpec

_PAGE = 5000


class PlanningError(ValueError):
    """The targets cannot be chosen as asked; the message says why, in one line."""


@dataclass
class Plan:
    """A rollout's targets as planning left them, and its figures."""

    targets: list[PlannedTarget] = field(default_factory=list)
    per_stage: list[int] = field(default_factory=list)  # eligible devices in each stage
    excluded: Counter[str] = field(default_factory=Counter)  # reason -> devices

    @property
    def eligible(self) -> int:
        """How many devices will get the command."""
        return sum(self.per_stage)

    def as_json(self, stages: Sequence[StageSpec]) -> dict[str, object]:
        """The dry run's figures: per stage how many devices, per exclusion how many."""
        return {
            "eligible": self.eligible,
            "stages": [
                {"stage": k, "reach": s.label(), "devices": n}
                for k, (s, n) in enumerate(zip(stages, self.per_stage, strict=True))
            ],
            "excluded": dict(sorted(self.excluded.items())),
        }


def point_of(salt: str, key: str) -> float:
    """A device's place in [0, 1) for one rollout: SHA-256(salt, key), uniform over a fleet,
    fixed for a device within a rollout, different across rollouts (so the same devices are not
    always the canaries)."""
    digest = hashlib.sha256(f"{salt}\x00{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def stage_of(salt: str, key: str, edges: Sequence[float]) -> int:
    """The stage of device ``key`` given each stage's reach in [0, 1] (cumulative)."""
    point = point_of(salt, key)
    for k, edge in enumerate(edges):
        if point < edge:
            return k
    return len(edges) - 1


def edges_for(stages: Sequence[StageSpec], points: Sequence[float]) -> list[float]:
    """Each stage's reach as a point in [0, 1]: a share is its own edge; a count is the point
    just past its n-th device (so exactly n devices fall inside); the last edge is 1."""
    ordered = sorted(points)
    edges: list[float] = []
    for stage in stages:
        if stage.share is not None:
            edge = stage.share
        else:
            assert stage.count is not None
            n = min(stage.count, len(ordered))
            edge = math.nextafter(ordered[n - 1], 1.0) if n else 0.0
        edges.append(max(edge, edges[-1] if edges else 0.0))
    edges[-1] = 1.0
    return edges


def plan_targets(
    registry: RegistryStore,
    spec: TargetSpec,
    *,
    salt: str,
    stages: Sequence[StageSpec],
    command: str = "install",
    verify: bool = False,
    profile: ProfileEntry | None = None,
    server_wakes: bool = False,
) -> Plan:
    """Select the devices ``spec`` names, check each one, and give each a stage and an order.

    ``server_wakes``: the MDM server rollout delivers through wakes the devices (see
    :func:`rollout.eligibility.exclusion`)."""
    devices = select_devices(registry, spec)
    held = registry.holding(profile.uuid, [d.id for d in devices]) if profile else set()
    reasons = {
        d.id: exclusion(
            d,
            command=command,
            verify=verify,
            profile=profile,
            holds_profile=d.id in held,
            server_wakes=server_wakes,
        )
        for d in devices
    }
    eligible = [d for d in devices if reasons[d.id] is None]
    points = {d.id: point_of(salt, d.enrollment_id) for d in devices}
    edges = edges_for(stages, [points[d.id] for d in eligible])
    plan = Plan(per_stage=[0] * len(stages))
    for d in devices:
        stage = _stage_at(points[d.id], edges)
        reason = reasons[d.id]
        if reason is None:
            plan.per_stage[stage] += 1
        else:
            plan.excluded[reason] += 1
        plan.targets.append(PlannedTarget(d.id, stage, _priority(d), reason))
    if eligible and plan.per_stage[0] == 0:
        # The first stage always holds one device: the eligible one nearest the start.
        first = min(eligible, key=lambda d: points[d.id])
        plan.targets = [
            PlannedTarget(t.device_id, 0, t.priority, t.excluded) if t.device_id == first.id
            else t
            for t in plan.targets
        ]  # fmt: skip
        plan.per_stage[_stage_at(points[first.id], edges)] -= 1
        plan.per_stage[0] += 1
    return plan


def _stage_at(point: float, edges: Sequence[float]) -> int:
    for k, edge in enumerate(edges):
        if point < edge:
            return k
    return len(edges) - 1


def _priority(device: DeviceInfo) -> int:
    """Pushing order within a stage, lowest first: devices seen most recently lead (online
    devices do not wait behind offline ones); never seen, last."""
    if device.last_seen_at is None:
        return 0
    return -int(device.last_seen_at.timestamp())


def select_devices(registry: RegistryStore, spec: TargetSpec) -> list[DeviceInfo]:
    """Every device the spec selects, whatever its state (eligibility judges it).

    An explicit list must name known devices only (the error says how many are unknown and
    gives one); a selection that matches nothing says why.
    """
    keys = _resolve_keys(registry, spec.keys) if spec.keys is not None else None
    where = DeviceFilter(
        tags=spec.tags, platforms=spec.platforms, holders_of=spec.holders_of, keys=keys
    )
    found: list[DeviceInfo] = []
    after = 0
    while True:
        page = registry.page(after_id=after, limit=_PAGE, where=where)
        found.extend(page)
        if len(page) < _PAGE:
            break
        after = page[-1].id
    if not found:
        raise PlanningError(_why_nothing(registry, spec))
    return found


def _resolve_keys(registry: RegistryStore, given: Sequence[str]) -> tuple[str, ...]:
    """The registry's keys for a list of UDIDs / EnrollmentIDs: a UDID matches in any case
    (an EnrollmentID only exactly); every one must be known."""
    wanted = list(dict.fromkeys(k.strip() for k in given if k.strip()))
    known = registry.device_ids(sorted({*wanted, *(normalize_udid(k) for k in wanted)}))
    keys: list[str] = []
    missing: list[str] = []
    for k in wanted:
        match = k if k in known else normalize_udid(k)
        (keys if match in known else missing).append(match if match in known else k)
    if missing:
        raise PlanningError(
            f"{len(missing)} of {len(wanted)} listed device(s) are not in the registry, "
            f"e.g. {missing[0]!r}"
        )
    return tuple(dict.fromkeys(keys))


def _why_nothing(registry: RegistryStore, spec: TargetSpec) -> str:
    total = sum(registry.count_by_state().values())
    if total == 0:
        return (
            "the registry has no devices yet: import an inventory (rollout devices "
            "import) or let devices enroll on the MDM endpoint"
        )
    return f"no device matches {spec.describe()} ({total} device(s) in the registry)"
