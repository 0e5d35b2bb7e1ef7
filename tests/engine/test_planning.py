"""Planning: stable stages, the first stage never empty, eligibility with reasons, rollouts
refused as a whole, and specs validated with clear errors."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rollout.clock import ManualClock
from rollout.inventory import read_inventory
from rollout.ledger import Ledger
from rollout.operations import OperationError, create_rollout, plan_rollout
from rollout.planning import edges_for, plan_targets
from rollout.spec import (
    ONE_STAGE,
    RolloutSpec,
    SpecError,
    StageSpec,
    TargetSpec,
    parse_window,
    spec_from_mapping,
)
from tests.engine.support import import_fleet
from tests.support import add_profile, signing_chain, udid

FOUR = tuple(spec_from_mapping({"profile": "x", "targets": {"all": True}}).stages)


def test_stages_are_stable_across_planning_and_the_first_is_never_empty(
    clock: ManualClock, ledger: Ledger
) -> None:
    import_fleet(ledger, 500, clock.now())
    with ledger.registry() as store:
        first = plan_targets(store, TargetSpec(everything=True), salt="s1", stages=FOUR)
        again = plan_targets(store, TargetSpec(everything=True), salt="s1", stages=FOUR)
        other = plan_targets(store, TargetSpec(everything=True), salt="s2", stages=FOUR)
    assert first.targets == again.targets
    assert [t.stage for t in first.targets] != [t.stage for t in other.targets]
    assert sum(first.per_stage) == 500 and all(n > 0 for n in first.per_stage)
    # roughly 1% / 4% / 20% / 75% of 500
    assert 1 <= first.per_stage[0] <= 15 and 250 <= first.per_stage[3] <= 450
    with ledger.registry() as store:  # a fleet of 3: 1% of it is less than a device
        tiny = plan_targets(
            store, TargetSpec(keys=(udid(0), udid(1), udid(2))), salt="s", stages=FOUR
        )
    assert tiny.per_stage[0] == 1 and sum(tiny.per_stage) == 3


def test_count_stages_hold_exactly_their_count() -> None:
    stages = (StageSpec(count=3), StageSpec(count=10), StageSpec(share=1.0))
    points = [i / 100 for i in range(100)]
    edges = edges_for(stages, points)
    assert sum(p < edges[0] for p in points) == 3
    assert sum(p < edges[1] for p in points) == 10
    assert edges[-1] == 1.0


def inventory(ledger: Ledger, clock: ManualClock, text: str) -> None:
    report = read_inventory(text.encode(), fmt="csv")
    assert not report.errors, report.errors
    with ledger.registry() as store:
        store.import_devices(report.records, clock.now())


def test_eligibility_excludes_with_reasons(clock: ManualClock, ledger: Ledger) -> None:
    profile = add_profile(ledger, clock.now())
    ok = f"{'ab' * 32},magic"
    inventory(
        ledger,
        clock,
        "udid,platform,os_version,access_rights,push_token,push_magic,profiles\n"
        f"{udid(1)},iOS,17.5,8191,{ok},\n"
        f"{udid(2)},iOS,3.2,,{ok},\n"  # too old
        f"{udid(3)},tvOS,17.0,,{ok},\n"  # an iOS profile cannot serve tvOS
        f"{udid(4)},iOS,17.5,63,{ok},\n"  # no right 128
        f"{udid(5)},iOS,17.5,,,,\n"  # never pushable
        f"{udid(6)},iOS,17.5,,{ok},{profile.uuid}\n"  # already holds it
        f"{udid(7)},macOS,14.4,,{ok},\n",  # macOS takes iOS-style profiles
    )
    spec = RolloutSpec(
        profile=profile.uuid, targets=TargetSpec(everything=True), verify=False, stages=ONE_STAGE
    )
    planned = plan_rollout(ledger, spec, clock.now())
    assert planned.plan.eligible == 2
    assert dict(planned.plan.excluded) == {
        "os_too_old": 1,
        "profile_platform": 1,
        "access_rights": 1,
        "never_pushable": 1,
        "already_current": 1,
    }
    summary = create_rollout(ledger, spec, actor="t", now=clock.now())
    assert summary.states == {"planned": 2, "ineligible": 5}
    assert summary.reasons["ineligible"]["os_too_old"] == 1
    # verifying needs right 64 too: 191 has 128 but not 64
    inventory(ledger, clock, f"udid,access_rights\n{udid(1)},191\n")
    verifying = RolloutSpec(
        profile=profile.uuid,
        targets=TargetSpec(keys=(udid(1), udid(7))),
        verify=True,
        stages=ONE_STAGE,
    )
    with pytest.raises(OperationError, match="already installs profile"):
        plan_rollout(ledger, verifying, clock.now())  # the first rollout holds these devices


def test_a_device_scoped_profile_goes_only_to_its_devices(
    clock: ManualClock, ledger: Ledger
) -> None:
    from rollout.profiles import parse_profile
    from rollout.sim.profiles import make_profile

    import_fleet(ledger, 3, clock.now())
    data = make_profile(
        signing_chain(),
        kind="development",
        devices=[udid(1).lower()],
        created_at=clock.now() - dt.timedelta(days=1),
    )
    with ledger.library() as store:
        entry, _ = store.add(
            parse_profile(data, trust_anchors=signing_chain().anchors), data, clock.now()
        )
    spec = RolloutSpec(profile=entry.uuid, targets=TargetSpec(everything=True), verify=False)
    planned = plan_rollout(ledger, spec, clock.now())
    assert planned.plan.eligible == 1 and dict(planned.plan.excluded) == {"not_provisioned": 2}


def test_whole_rollouts_are_refused_for_profiles_that_can_do_no_good(
    clock: ManualClock, ledger: Ledger
) -> None:
    import_fleet(ledger, 2, clock.now())
    now = clock.now()
    expiring = add_profile(
        ledger,
        now,
        expires_at=now + dt.timedelta(days=3),
        name="soon",
        created_at=now - dt.timedelta(days=360),
    )
    every = TargetSpec(everything=True)
    with pytest.raises(OperationError, match="before the rollout's deadline"):
        plan_rollout(
            ledger,
            RolloutSpec(profile=expiring.uuid, targets=every, deadline=now + dt.timedelta(days=10)),
            now,
        )
    with pytest.raises(OperationError, match="expired"):
        plan_rollout(
            ledger, RolloutSpec(profile=expiring.uuid, targets=every), now + dt.timedelta(days=4)
        )
    store_profile = _store_profile(ledger, now)
    with pytest.raises(OperationError, match="App Store distribution profile"):
        plan_rollout(ledger, RolloutSpec(profile=store_profile, targets=every), now)


def _store_profile(ledger: Ledger, now: dt.datetime) -> str:
    from rollout.profiles import parse_profile
    from rollout.sim.profiles import make_profile

    data = make_profile(signing_chain(), kind="app-store", created_at=now - dt.timedelta(days=1))
    with ledger.library() as store:
        entry, _ = store.add(parse_profile(data, trust_anchors=signing_chain().anchors), data, now)
    return entry.uuid


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"targets": {"all": True}}, "profile: a profile UUID"),
        ({"profile": "p", "targets": {"all": True}, "stages": ["5%", "1%"]}, "further"),
        ({"profile": "p", "targets": {"all": True}, "stages": ["5%", "50%"]}, "reach 100%"),
        ({"profile": "p", "targets": {"all": True}, "stages": ["150%"]}, "outside (0, 100]%"),
        ({"profile": "p", "targets": {"all": True}, "gate": {"min_success_rate": 2}}, "(0, 1]"),
        ({"profile": "p", "targets": {"all": True}, "gate": {"colour": 1}}, "unknown key"),
        (
            {"profile": "p", "targets": {"all": True}, "window": "Mon 17:00-09:00 UTC"},
            "never opens",
        ),
        (
            {"profile": "p", "targets": {"all": True}, "window": "Mon 09:00-17:00 Mars/Base"},
            "not a time zone",
        ),
        ({"profile": "p", "targets": {}}, "choose devices"),
        ({"profile": "p", "targets": {"all": True, "tags": ["a"]}}, "do not combine"),
        ({"profile": "p", "targets": {"all": True}, "command": "wipe"}, "not one of"),
        ({"profile": "p", "targets": {"all": True}, "deadline": "tomorrow"}, "ISO 8601"),
        ({"profile": "p", "targets": {"all": True}, "command_ttl": "3 fortnights"}, "duration"),
    ],
)
def test_specs_are_validated_with_clear_errors(data: dict[str, object], message: str) -> None:
    with pytest.raises(
        SpecError,
        match=message.replace("(", r"\(")
        .replace(")", r"\)")
        .replace("[", r"\[")
        .replace("]", r"\]"),
    ):
        spec_from_mapping(data)


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats()
    | st.text(max_size=20)
    | st.sampled_from(["25%", "100%", "0%", "1e9", "4h", "Mon-Fri 09:00-17:00 UTC", "all"]),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
SPEC_KEYS = ["profile", "command", "name", "targets", "stages", "gate", "rate_limit", "start_at",
             "deadline", "window", "command_ttl", "verify", "cleanup"]  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(
    st.dictionaries(st.sampled_from(SPEC_KEYS), JSON_VALUES, max_size=6),
    st.dictionaries(
        st.sampled_from(["devices", "tags", "all", "holders_of", "platforms"]), JSON_VALUES
    ),
)
def test_any_json_spec_is_a_spec_or_one_clear_spec_error(
    data: dict[str, object], targets: dict[str, object]
) -> None:
    # what an API body or a YAML file can hold, key by key: never an exception but SpecError
    for candidate in ({"profile": "p", "targets": targets, **data}, data, [data], "spec"):
        try:
            spec_from_mapping(candidate)
        except SpecError as exc:
            text = str(exc)
            assert text and "\n" not in text and len(text) < 400


def test_a_window_opens_on_its_days_and_hours_in_its_time_zone() -> None:
    window = parse_window("Mon-Fri 09:00-17:00 Europe/Berlin")
    monday_9_utc = dt.datetime(2026, 1, 5, 9, 0, tzinfo=dt.UTC)  # 10:00 in Berlin
    assert window.is_open(monday_9_utc)
    assert not window.is_open(monday_9_utc + dt.timedelta(hours=7))  # 17:00 Berlin
    assert not window.is_open(monday_9_utc + dt.timedelta(days=5))  # Saturday


def test_a_gate_fails_as_soon_as_the_success_rate_cannot_be_reached() -> None:
    from rollout.gates import judge
    from rollout.spec import Gate

    gate = Gate(min_success_rate=0.9, min_final_share=0.9)
    now = dt.datetime(2026, 1, 5, tzinfo=dt.UTC)
    # 3 failed of 20, 10 still open: at best 17/20 = 85% < 90%, no need to wait for them
    early = judge(gate, {"failed": 3, "acknowledged": 7, "pushed": 10}, now, now)
    assert early.kind == "fail" and "at most 85%" in early.why
    # 1 failed, 10 open: at best 95%, so wait
    waiting = judge(gate, {"failed": 1, "acknowledged": 9, "pushed": 10}, now, now)
    assert waiting.kind == "wait"
    # ineligible targets do not count
    done = judge(gate, {"acknowledged": 19, "failed": 1, "ineligible": 50}, now, now)
    assert done.kind == "pass" and done.figures["eligible"] == 20


def test_user_enrollments_take_provisioning_commands_on_ios_only(
    clock: ManualClock, ledger: Ledger
) -> None:
    profile = add_profile(ledger, clock.now())
    inventory(
        ledger,
        clock,
        "enrollment_id,platform,push_token,push_magic\n"
        f"USER-ENROLLMENT-IOS,iOS,{'ab' * 32},m\n"
        f"USER-ENROLLMENT-MAC,macOS,{'cd' * 32},m\n",
    )
    spec = RolloutSpec(
        profile=profile.uuid, targets=TargetSpec(everything=True), stages=ONE_STAGE, verify=False
    )
    planned = plan_rollout(ledger, spec, clock.now())
    assert planned.plan.eligible == 1 and dict(planned.plan.excluded) == {"user_enrollment": 1}
