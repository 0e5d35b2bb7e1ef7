"""Planning a rollout: which devices it targets, and which stage each one is in.

Targets come from the registry by an explicit list, the holders of a profile, tags, platforms
or all devices (criteria combine). A device's stage comes from a stable hash of the rollout's
salt and its UDID against the stages' cumulative fractions, so planning again never reshuffles
who is in the canary.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from rollout.identifiers import normalize_udid
from rollout.ledger import DeviceFilter, RegistryStore
from rollout.states import EnrollmentState

SINGLE_STAGE: tuple[float, ...] = (1.0,)
"""One stage holding every target."""

#: Devices a rollout may target: every one that has not left management. Imported devices
#: without push data wait as ``unreachable: no_token`` and resume at their first TokenUpdate.
TARGETABLE_STATES = (
    EnrollmentState.ENROLLED.value,
    EnrollmentState.AUTHENTICATED.value,
    EnrollmentState.IMPORTED.value,
)
_PAGE = 5000


class PlanningError(ValueError):
    """The targets cannot be chosen as asked; the message says why, in one line."""


@dataclass(frozen=True)
class TargetSpec:
    """Which devices a rollout targets; every given criterion must hold."""

    keys: tuple[str, ...] | None = None  # UDIDs / EnrollmentIDs
    holders_of: str | None = None  # a profile UUID
    tags: tuple[str, ...] = ()  # all of them
    platforms: tuple[str, ...] = ()  # any of them
    everything: bool = False  # no criterion: every targetable device

    def __post_init__(self) -> None:
        given = self.keys is not None or self.holders_of or self.tags or self.platforms
        if not given and not self.everything:
            raise PlanningError(
                "choose the devices: a list, holders of a profile, tags, platforms, or all"
            )

    def describe(self) -> str:
        """The criteria in a few words (for messages)."""
        parts = []
        if self.keys is not None:
            parts.append(f"{len(self.keys)} listed device(s)")
        if self.holders_of:
            parts.append(f"holders of {self.holders_of}")
        if self.tags:
            parts.append("tags " + "+".join(self.tags))
        if self.platforms:
            parts.append("platform " + "/".join(self.platforms))
        return ", ".join(parts) or "all devices"


def stage_of(salt: str, key: str, stages: Sequence[float]) -> int:
    """The stage of device ``key`` in a rollout salted ``salt`` with cumulative ``stages``.

    The device's point in [0, 1) is read from SHA-256(salt, key): uniform over a fleet, fixed
    for a device within a rollout, and different across rollouts (so the same devices are not
    always the canaries).
    """
    digest = hashlib.sha256(f"{salt}\x00{key}".encode()).digest()
    point = int.from_bytes(digest[:8], "big") / 2**64
    for k, edge in enumerate(stages):
        if point < edge:
            return k
    return len(stages) - 1


def select_targets(registry: RegistryStore, spec: TargetSpec) -> list[tuple[int, str]]:
    """``(device id, UDID/EnrollmentID)`` of every device the spec selects.

    An explicit list must name known devices only (the error says how many are unknown and
    gives one); a selection that matches nothing says why.
    """
    keys = None
    if spec.keys is not None:
        keys = _resolve_keys(registry, spec.keys)
    where = DeviceFilter(
        states=TARGETABLE_STATES,
        tags=spec.tags,
        platforms=spec.platforms,
        holders_of=spec.holders_of,
        keys=keys,
    )
    found: list[tuple[int, str]] = []
    after = 0
    while True:
        page = registry.select(where, after_id=after, limit=_PAGE)
        found.extend(page)
        if len(page) < _PAGE:
            break
        after = page[-1][0]
    if not found:
        raise PlanningError(_why_nothing(registry, spec, where))
    return found


def assign_stages(
    devices: Sequence[tuple[int, str]], salt: str, stages: Sequence[float]
) -> tuple[tuple[int, int], ...]:
    """``(device id, stage)`` for each device."""
    return tuple((device_id, stage_of(salt, key, stages)) for device_id, key in devices)


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


def _why_nothing(registry: RegistryStore, spec: TargetSpec, where: DeviceFilter) -> str:
    total = sum(registry.count_by_state().values())
    if total == 0:
        return (
            "the registry has no devices yet: import an inventory (rollout devices "
            "import) or let devices enroll on the MDM endpoint"
        )
    matching = registry.count_by_state(
        DeviceFilter(
            tags=where.tags, platforms=where.platforms, holders_of=where.holders_of, keys=where.keys
        )
    )
    if not matching:
        return f"no device matches {spec.describe()} ({total} device(s) in the registry)"
    states = ", ".join(f"{n} {state}" for state, n in sorted(matching.items()))
    return f"no device that can be targeted matches {spec.describe()} ({states})"
