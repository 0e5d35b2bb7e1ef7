"""A rollout's spec: what to send, to whom, in which stages, behind which gates, and when.

Specs come from CLI flags, a YAML or JSON file, or the API; all of them end here, in
:func:`spec_from_mapping`, which validates everything and says what is wrong in one line
(:class:`SpecError`). The spec is stored with the rollout (:meth:`RolloutSpec.to_json`) and
read back by the controller each tick (:meth:`RolloutSpec.from_json`). No I/O.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

COMMANDS = ("install", "list", "remove")
"""install: InstallProvisioningProfile; list: ProvisioningProfileList (an inventory sweep);
remove: RemoveProvisioningProfile (clean-up)."""

DEFAULT_STAGES = ("1%", "5%", "25%", "100%")
NAME_MAX = 255  # a rollout's name: the ledger's rollouts.name is VARCHAR(255)
_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(s|m|h|d|w)?")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, None: 1}
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


class SpecError(ValueError):
    """A spec is not valid; the message names the field and what is wrong, in one line."""


@dataclass(frozen=True)
class TargetSpec:
    """Which devices a rollout targets; every given criterion must hold."""

    keys: tuple[str, ...] | None = None  # UDIDs / EnrollmentIDs
    holders_of: str | None = None  # a profile UUID
    tags: tuple[str, ...] = ()  # all of them
    platforms: tuple[str, ...] = ()  # any of them
    everything: bool = False  # no criterion: every device in the registry

    def __post_init__(self) -> None:
        given = self.keys is not None or self.holders_of or self.tags or self.platforms
        if not given and not self.everything:
            raise SpecError(
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


@dataclass(frozen=True)
class Gate:
    """What a stage must show before the next one starts (judged from kept counters).

    ``min_success_rate`` is acknowledged ÷ (acknowledged + failed); ``max_failures`` counts
    failed targets; both are judged once ``min_final_share`` of the stage's eligible targets
    have a final answer and ``soak`` has passed since the stage started. ``manual`` stages
    wait for an operator's approval after passing.
    """

    min_success_rate: float | None = 0.9
    max_failures: int | None = None
    min_final_share: float = 0.9
    soak: dt.timedelta = dt.timedelta(0)
    manual: bool = False

    def to_json(self) -> dict[str, Any]:
        """The stored form."""
        return {
            "min_success_rate": self.min_success_rate,
            "max_failures": self.max_failures,
            "min_final_share": self.min_final_share,
            "soak_s": self.soak.total_seconds(),
            "manual": self.manual,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Gate:
        """Read the stored form back."""
        return cls(
            min_success_rate=data.get("min_success_rate"),
            max_failures=data.get("max_failures"),
            min_final_share=float(data.get("min_final_share", 0.9)),
            soak=dt.timedelta(seconds=float(data.get("soak_s", 0))),
            manual=bool(data.get("manual", False)),
        )


@dataclass(frozen=True)
class StageSpec:
    """One stage: how far it reaches (a cumulative share in (0, 1], or a cumulative device
    count), and its gate."""

    share: float | None = None
    count: int | None = None
    gate: Gate = field(default_factory=Gate)

    def label(self) -> str:
        """``25%`` or ``100 devices``."""
        if self.share is not None:
            return f"{self.share * 100:g}%"
        return f"{self.count} devices"


@dataclass(frozen=True)
class Window:
    """When promotions may happen: on ``days`` (0 = Monday) between ``start`` and ``end``
    local time in ``tz``."""

    days: frozenset[int]
    start: dt.time
    end: dt.time
    tz: str

    def is_open(self, at: dt.datetime) -> bool:
        """Whether ``at`` falls inside the window."""
        local = at.astimezone(ZoneInfo(self.tz))
        return local.weekday() in self.days and self.start <= local.time() < self.end

    def to_json(self) -> dict[str, Any]:
        """The stored form."""
        return {
            "days": sorted(self.days),
            "start": self.start.strftime("%H:%M"),
            "end": self.end.strftime("%H:%M"),
            "tz": self.tz,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Window:
        """Read the stored form back."""
        return cls(
            days=frozenset(int(d) for d in data["days"]),
            start=dt.time.fromisoformat(data["start"]),
            end=dt.time.fromisoformat(data["end"]),
            tz=str(data["tz"]),
        )

    def describe(self) -> str:
        """``Mon-Fri 09:00-17:00 Europe/Berlin``."""
        days = ",".join(_DAYS[d].capitalize() for d in sorted(self.days))
        return f"{days} {self.start:%H:%M}-{self.end:%H:%M} {self.tz}"


@dataclass(frozen=True)
class RolloutSpec:
    """Everything a rollout is asked to do."""

    profile: str
    targets: TargetSpec
    command: str = "install"
    name: str = ""
    stages: tuple[StageSpec, ...] = field(default_factory=lambda: DEFAULT_STAGE_SPECS)
    rate_limit: float | None = None  # pushes per second for this rollout
    start_at: dt.datetime | None = None
    deadline: dt.datetime | None = None
    window: Window | None = None
    command_ttl: dt.timedelta | None = None
    verify: bool = True  # installs only: a ProvisioningProfileList must show the profile
    cleanup: str | None = None  # installs only: remove this superseded profile once verified

    def to_json(self) -> dict[str, Any]:
        """What the ledger keeps with the rollout (the controller reads it back each tick)."""
        return {
            "command": self.command,
            "rate_limit": self.rate_limit,
            "start_at": self.start_at.isoformat() if self.start_at else None,
            "deadline": self.deadline.isoformat() if self.deadline else None,
            "window": self.window.to_json() if self.window else None,
            "command_ttl_s": self.command_ttl.total_seconds() if self.command_ttl else None,
            "verify": self.verify and self.command == "install",  # installs only
            "cleanup": self.cleanup,
        }


@dataclass(frozen=True)
class RolloutOptions:
    """The stored part of a spec, as the controller and reconciliation read it."""

    command: str = "install"
    rate_limit: float | None = None
    start_at: dt.datetime | None = None
    deadline: dt.datetime | None = None
    window: Window | None = None
    command_ttl: dt.timedelta | None = None
    verify: bool = False
    cleanup: str | None = None
    remove_uuid: str | None = None  # a remove rollout's profile

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> RolloutOptions:
        """Read :meth:`RolloutSpec.to_json` back (an empty mapping: a plain install)."""
        data = data or {}
        ttl = data.get("command_ttl_s")
        return cls(
            command=str(data.get("command", "install")),
            rate_limit=data.get("rate_limit"),
            start_at=_when(data.get("start_at")),
            deadline=_when(data.get("deadline")),
            window=Window.from_json(data["window"]) if data.get("window") else None,
            command_ttl=dt.timedelta(seconds=float(ttl)) if ttl else None,
            verify=bool(data.get("verify", False)),
            cleanup=data.get("cleanup"),
            remove_uuid=data.get("remove_uuid"),
        )


NO_GATE = Gate(min_success_rate=None, max_failures=None)
"""A gate that never fails (a lone stage has nothing after it to protect)."""
ONE_STAGE = (StageSpec(share=1.0, gate=NO_GATE),)
"""A single stage holding every target, without a gate."""


def _when(value: Any) -> dt.datetime | None:
    return dt.datetime.fromisoformat(value) if value else None


# ---- parsing and validation -----------------------------------------------------------------


def parse_duration(text: Any, what: str) -> dt.timedelta:
    """``90``, ``30s``, ``15m``, ``4h``, ``3d``, ``1w`` (a number alone is seconds)."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        seconds = float(text) if abs(text) < 1e18 else math.inf
    else:
        found = _DURATION.fullmatch(str(text).strip().lower())
        if found is None:
            raise SpecError(f"{what}: {_shown(text)} is not a duration (like 90s, 15m, 4h, 3d)")
        seconds = float(found[1]) * _UNITS[found[2]]
    if not 0 <= seconds <= 366 * 86400:
        raise SpecError(f"{what}: {_shown(text)} is outside 0 s to a year")
    return dt.timedelta(seconds=seconds)


def parse_time(text: Any, what: str) -> dt.datetime:
    """An ISO 8601 date-time with its offset (``2027-01-04T09:00:00+01:00``, or ``…Z``)."""
    try:
        when = dt.datetime.fromisoformat(str(text).strip().replace("Z", "+00:00"))
    except ValueError:
        raise SpecError(f"{what}: {_shown(text)} is not an ISO 8601 date-time") from None
    if when.tzinfo is None:
        raise SpecError(f"{what}: {_shown(text)} has no time zone offset (add Z or +01:00)")
    return when.astimezone(dt.UTC)


def parse_stage(value: Any, what: str) -> StageSpec:
    """``25%`` (a cumulative share) or ``200`` (a cumulative device count)."""
    text = str(value).strip()
    if text.endswith("%"):
        try:
            percent = float(text[:-1])
        except ValueError:
            raise SpecError(f"{what}: {_shown(value)} is not a percentage") from None
        if not 0 < percent <= 100:
            raise SpecError(f"{what}: {_shown(value)} is outside (0, 100]%")
        return StageSpec(share=percent / 100)
    if isinstance(value, bool) or not re.fullmatch(r"\d+", text):
        raise SpecError(f"{what}: {_shown(value)} is neither a percentage (25%) nor a device count")
    count = int(text)
    if not 0 < count <= 10_000_000:
        raise SpecError(f"{what}: {count} devices is not a sensible stage size")
    return StageSpec(count=count)


def parse_window(text: Any, what: str = "window") -> Window:
    """``Mon-Fri 09:00-17:00 Europe/Berlin`` (days as a range or a comma list)."""
    parts = str(text).split()
    if len(parts) != 3:
        raise SpecError(f"{what}: {_shown(text)} is not like 'Mon-Fri 09:00-17:00 Europe/Berlin'")
    days_text, hours, tz = parts
    days: set[int] = set()
    for piece in days_text.lower().split(","):
        first, _, last = piece.partition("-")
        if first[:3] not in _DAYS or (last and last[:3] not in _DAYS):
            raise SpecError(f"{what}: {_shown(piece)} is not a day or range of days (Mon-Fri)")
        a, b = _DAYS.index(first[:3]), _DAYS.index((last or first)[:3])
        days.update(range(a, b + 1) if a <= b else [*range(a, 7), *range(0, b + 1)])
    start_text, _, end_text = hours.partition("-")
    try:
        start, end = dt.time.fromisoformat(start_text), dt.time.fromisoformat(end_text)
    except ValueError:
        raise SpecError(f"{what}: {_shown(hours)} is not like 09:00-17:00") from None
    if start >= end:
        raise SpecError(f"{what}: {_shown(hours)} never opens (the start is not before the end)")
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise SpecError(f"{what}: {_shown(tz)} is not a time zone (like Europe/Berlin)") from None
    return Window(frozenset(days), start, end, tz)


def _rate(value: Any, what: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise SpecError(f"{what}: {_shown(value)} is not a number")
    try:
        number = float(value) if not isinstance(value, int) or abs(value) < 10**18 else math.inf
    except ValueError:
        raise SpecError(f"{what}: {_shown(value)} is not a number") from None
    if not 0 < number <= 1_000_000:
        raise SpecError(f"{what}: {_shown(value)} is outside (0, 1000000]")
    return number


def _share(value: Any, what: str) -> float:
    number = _rate(value, what)
    if number is None or not 0 < number <= 1:
        raise SpecError(f"{what}: {_shown(value)} is not a share in (0, 1] (0.95 for 95%)")
    return number


def _mapping(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise SpecError(f"{what}: {_shown(value)} is not a mapping of keys to values")
    return value


def _shown(value: Any) -> str:
    """``repr(value)`` cut short: an error quotes a bad value, never all of a big one."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def parse_gate(data: Any, what: str, base: Gate | None = None) -> Gate:
    """A gate from ``min_success_rate``, ``max_failures``, ``min_final_share``, ``soak``,
    ``manual`` (unknown keys are refused)."""
    data = _mapping(data, what)
    known = {"min_success_rate", "max_failures", "min_final_share", "soak", "manual"}
    unknown = sorted(str(k) for k in set(data) - known)
    if unknown:
        raise SpecError(
            f"{what}: unknown key {_shown(unknown[0])} (known: {', '.join(sorted(known))})"
        )
    gate = base or Gate()
    if "min_success_rate" in data:
        rate = data["min_success_rate"]
        gate = replace(
            gate,
            min_success_rate=None if rate is None else _share(rate, f"{what}.min_success_rate"),
        )
    if "max_failures" in data:
        value = data["max_failures"]
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 0
        ):
            raise SpecError(f"{what}.max_failures: {_shown(value)} is not a count (0 or more)")
        gate = replace(gate, max_failures=value)
    if "min_final_share" in data:
        gate = replace(
            gate, min_final_share=_share(data["min_final_share"], f"{what}.min_final_share")
        )
    if "soak" in data:
        gate = replace(gate, soak=parse_duration(data["soak"], f"{what}.soak"))
    if "manual" in data:
        if not isinstance(data["manual"], bool):
            raise SpecError(f"{what}.manual: {_shown(data['manual'])} is not true or false")
        gate = replace(gate, manual=data["manual"])
    return gate


def spec_from_mapping(data: Any) -> RolloutSpec:
    """A validated spec from a mapping (a parsed YAML/JSON file, an API body, CLI flags).

    Keys: ``profile`` (required), ``command``, ``name``, ``targets`` (``devices``,
    ``holders_of``, ``tags``, ``platforms``, ``all``), ``stages`` (a list of ``"25%"``,
    ``200`` or ``{"stage": "25%", "gate": {...}}``), ``gate`` (the default gate of every
    stage), ``rate_limit``, ``start_at``, ``deadline``, ``window``, ``command_ttl``,
    ``verify``, ``cleanup``.
    """
    data = _mapping(data, "spec")
    known = {"profile", "command", "name", "targets", "stages", "gate", "rate_limit",
             "start_at", "deadline", "window", "command_ttl", "verify", "cleanup"}  # fmt: skip
    unknown = sorted(str(k) for k in set(data) - known)
    if unknown:
        raise SpecError(f"unknown key {_shown(unknown[0])} (known: {', '.join(sorted(known))})")
    command = str(data.get("command", "install"))
    if command not in COMMANDS:
        raise SpecError(f"command: {_shown(command)} is not one of {', '.join(COMMANDS)}")
    profile = data.get("profile") or ("" if command == "list" else None)
    if not isinstance(profile, str) or (command != "list" and not profile.strip()):
        raise SpecError("profile: a profile UUID (or a unique start of one) is required")
    default_gate = parse_gate(data.get("gate") or {}, "gate")
    stages = _stages(data.get("stages", DEFAULT_STAGES), default_gate)
    verify = data.get("verify", command == "install")
    if not isinstance(verify, bool):
        raise SpecError(f"verify: {_shown(verify)} is not true or false")
    cleanup = data.get("cleanup")
    if cleanup is not None:
        if command != "install":
            raise SpecError("cleanup: only an install rollout removes a superseded profile")
        if not isinstance(cleanup, str) or not _UUID.fullmatch(cleanup.strip()):
            raise SpecError(f"cleanup: {_shown(cleanup)} is not a profile UUID")
        if not verify:
            raise SpecError(
                "cleanup: needs verify (a profile is removed only once its successor is seen)"
            )
        cleanup = cleanup.strip().lower()
    start_at = parse_time(data["start_at"], "start_at") if data.get("start_at") else None
    deadline = parse_time(data["deadline"], "deadline") if data.get("deadline") else None
    if start_at and deadline and deadline <= start_at:
        raise SpecError("deadline: it is not after start_at")
    return RolloutSpec(
        profile=profile.strip(),
        targets=_targets(data.get("targets") or {}),
        command=command,
        name=_name(data.get("name")),
        stages=stages,
        rate_limit=_rate(data.get("rate_limit"), "rate_limit"),
        start_at=start_at,
        deadline=deadline,
        window=parse_window(data["window"]) if data.get("window") else None,
        command_ttl=parse_duration(data["command_ttl"], "command_ttl")
        if data.get("command_ttl")
        else None,
        verify=verify and command == "install",
        cleanup=cleanup,
    )


def _name(value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str) or not value.isprintable():
        raise SpecError(f"name: {_shown(value)} is not a line of text")
    if len(value.strip()) > NAME_MAX:
        raise SpecError(f"name: {len(value.strip())} characters is more than {NAME_MAX}")
    return value.strip()


def parse_stages(text: str) -> tuple[StageSpec, ...]:
    """``1%,5%,25%,100%`` (cumulative shares or device counts), each behind the default gate;
    raises :class:`SpecError`."""
    return _stages(text, Gate())


def _stages(raw: Any, default_gate: Gate) -> tuple[StageSpec, ...]:
    if isinstance(raw, str):
        raw = [s for s in raw.split(",") if s.strip()]
    if not isinstance(raw, Sequence) or not raw:
        raise SpecError("stages: give a list such as 1%, 5%, 25%, 100%")
    if len(raw) > 20:
        raise SpecError(f"stages: {len(raw)} stages is more than 20")
    stages: list[StageSpec] = []
    for k, item in enumerate(raw):
        what = f"stages[{k}]"
        gate = default_gate
        if isinstance(item, Mapping):
            extra = sorted(str(k) for k in set(item) - {"stage", "gate"})
            if extra:
                raise SpecError(f"{what}: unknown key {_shown(extra[0])} (known: gate, stage)")
            gate = parse_gate(item.get("gate") or {}, f"{what}.gate", default_gate)
            item = item.get("stage")
        stages.append(replace(parse_stage(item, what), gate=gate))
    _check_increasing(stages)
    last = stages[-1]
    if last.share is not None and last.share < 1:
        raise SpecError(f"stages: the last stage is {last.label()}; it must reach 100%")
    return tuple(stages)


def _check_increasing(stages: Sequence[StageSpec]) -> None:
    shares = [s.share for s in stages if s.share is not None]
    counts = [s.count for s in stages if s.count is not None]
    if shares != sorted(set(shares)) or counts != sorted(set(counts)):
        raise SpecError("stages: each stage must reach further than the one before")
    seen_share = False
    for s in stages:
        if s.share is not None:
            seen_share = True
        elif seen_share:
            raise SpecError("stages: device counts must come before percentages")


def _targets(raw: Any) -> TargetSpec:
    raw = _mapping(raw, "targets")
    known = {"devices", "holders_of", "tags", "platforms", "all"}
    unknown = sorted(str(k) for k in set(raw) - known)
    if unknown:
        raise SpecError(
            f"targets: unknown key {_shown(unknown[0])} (known: {', '.join(sorted(known))})"
        )
    everything = raw.get("all", False)
    if not isinstance(everything, bool):
        raise SpecError(f"targets.all: {_shown(everything)} is not true or false")

    def words(key: str) -> tuple[str, ...]:
        value = raw.get(key) or ()
        if isinstance(value, str):
            value = [v for v in value.split(",") if v.strip()]
        if not isinstance(value, Sequence) or not all(isinstance(v, str) for v in value):
            raise SpecError(f"targets.{key}: give a list of words")
        return tuple(v.strip() for v in value)

    devices = raw.get("devices")
    keys = words("devices") if devices is not None else None
    narrowed = keys is not None or raw.get("holders_of") or words("tags") or words("platforms")
    if everything and narrowed:
        raise SpecError(
            "targets.all: do not combine it with devices, holders_of, tags or platforms"
        )
    if not everything and not narrowed:
        raise SpecError("targets: choose devices, holders_of, tags, platforms, or all")
    holders = raw.get("holders_of")
    if holders is not None and not isinstance(holders, str):
        raise SpecError(f"targets.holders_of: {_shown(holders)} is not a profile UUID")
    return TargetSpec(
        keys=keys,
        holders_of=holders,
        tags=words("tags"),
        platforms=words("platforms"),
        everything=everything,
    )


DEFAULT_STAGE_SPECS: tuple[StageSpec, ...] = tuple(parse_stage(s, "stages") for s in DEFAULT_STAGES)
"""1%, 5%, 25%, 100%, each behind the default gate."""
