"""The renewal scan on a test clock: nothing far out; inside the window a renewal rollout that
runs to the end, or one alert that escalates; one rollout per pair however the scan races; a
replacement for another team or app is never picked; the push-certificate alert."""

from __future__ import annotations

import datetime as dt

from rollout import alerts, controller, renewal
from rollout.alerts import AlertPolicy, acknowledge
from rollout.clock import ManualClock
from rollout.dispatch import RecordingDispatcher
from rollout.ledger import Ledger, NewAlert, ProfileEntry, ProfileFact
from rollout.operations import rollout_report
from rollout.policy import EnginePolicy
from rollout.profiles import parse_profile
from rollout.reconcile import Report, process_reports
from rollout.renewal import PushCertificate, RenewalPolicy
from rollout.sim.profiles import make_apple_like_chain, make_profile
from tests.engine.support import at_once, expiring, held_fleet
from tests.support import NO_IDENTITY, add_profile

POLICY = EnginePolicy(max_pushes=2, response_timeout=dt.timedelta(minutes=10), max_verify=2)
ALERTS = AlertPolicy(channels=("webhook",))
DAY = dt.timedelta(days=1)


def live_alerts(ledger: Ledger) -> dict[str, tuple[str, str]]:
    with ledger.alerts() as store:
        return {a.key: (a.kind, a.severity) for a in store.alerts(states=("open", "acknowledged"))}


def deliveries(ledger: Ledger) -> list[str]:
    with ledger.alerts() as store:
        return [d.payload["event"] for a in store.alerts() for d in store.deliveries(a.id)]


def drive_to_the_end(
    ledger: Ledger, clock: ManualClock, rollout_id: int, new: ProfileEntry
) -> None:
    """Every device takes what it is served: it installs, then lists the new profile."""
    dispatcher = RecordingDispatcher()
    for _ in range(40):
        controller.tick(ledger, dispatcher, POLICY, clock.advance(5))
        with ledger.rollouts() as store:
            if store.get(rollout_id).state == "completed":  # type: ignore[union-attr]
                return
            devices = [d for d in store.targets(rollout_id)]
        with ledger.registry() as reg:
            keys = {d.id: d.enrollment_id for d in reg.page(limit=1000)}
        for device in devices:
            with ledger.checkin() as store:
                [out] = process_reports(
                    store,
                    [Report(keys[device], "Idle")],
                    identity=NO_IDENTITY,
                    policy=POLICY,
                    now=clock.now(),
                )
                while out.served is not None:
                    listed = None
                    if out.served.request_type == "ProvisioningProfileList":
                        listed = (ProfileFact(new.uuid, new.name, new.expires_at),)
                    [out] = process_reports(
                        store,
                        [
                            Report(
                                keys[device],
                                "Acknowledged",
                                command_uuid=out.served.command_uuid,
                                profile_list=listed,
                            )
                        ],
                        identity=NO_IDENTITY,
                        policy=POLICY,
                        now=clock.now(),
                    )
    raise AssertionError("the renewal rollout did not finish")


def test_nothing_happens_forty_days_out(clock: ManualClock, ledger: Ledger) -> None:
    old = expiring(ledger, clock.now(), 40)
    add_profile(ledger, clock.now())  # a replacement exists, but it is not time yet
    held_fleet(ledger, clock.now(), 5, old)
    report = renewal.scan(ledger, clock.now(), alert_policy=ALERTS)
    assert report.profiles == [] and report.opened == []
    with ledger.rollouts() as store:
        assert store.recent() == []
    assert live_alerts(ledger) == {}


def test_inside_the_window_a_renewal_rollout_opens_once_and_runs_to_the_end(
    clock: ManualClock, ledger: Ledger
) -> None:
    old = expiring(ledger, clock.now(), 29)
    other_team = add_profile(ledger, clock.now(), team_id="ZZZZZ99999")
    other_app = add_profile(ledger, clock.now(), bundle_id="com.example.other")
    new = add_profile(ledger, clock.now())
    held_fleet(ledger, clock.now(), 30, old)

    report = renewal.scan(ledger, clock.now(), alert_policy=ALERTS)
    [item] = report.profiles
    assert item["replacement"] == new.uuid and item["devices"] == 30
    assert other_team.uuid not in item["rejected"]  # another team is not even a candidate
    assert other_app.uuid not in item["rejected"]
    [rid] = report.opened
    with ledger.rollouts() as store:
        info = store.get(rid)
    assert info is not None and info.state == "running"
    assert info.profile_uuid == new.uuid and info.replaces_uuid == old.uuid
    data = rollout_report(ledger, rid, clock.now())
    assert [s["reach"] for s in data["stages"]] == ["1%", "5%", "25%", "100%"]
    assert live_alerts(ledger) == {}

    again = renewal.scan(ledger, clock.advance(3600), alert_policy=ALERTS)
    assert again.opened == [] and again.profiles[0]["rollout"]["id"] == rid

    drive_to_the_end(ledger, clock, rid, new)
    data = rollout_report(ledger, rid, clock.now())
    assert data["states"] == {"verified": 30}
    after = renewal.scan(ledger, clock.advance(3600), alert_policy=ALERTS)
    assert after.opened == [] and after.profiles[0]["lacking"] == 0
    assert live_alerts(ledger) == {}


def test_another_teams_or_apps_profile_is_never_a_replacement(
    clock: ManualClock, ledger: Ledger
) -> None:
    old = expiring(ledger, clock.now(), 20)
    # the same app identifier text under another team, and another app of the same team
    add_profile(ledger, clock.now(), team_id="ZZZZZ99999")
    add_profile(ledger, clock.now(), bundle_id="com.example.field2")
    held_fleet(ledger, clock.now(), 3, old)
    report = renewal.scan(ledger, clock.now(), alert_policy=ALERTS)
    assert report.opened == [] and report.profiles[0]["replacement"] is None
    assert live_alerts(ledger) == {f"renewal.missing:{old.uuid}": ("renewal.missing", "warning")}


def test_without_a_replacement_one_alert_opens_escalates_and_resolves(
    clock: ManualClock, ledger: Ledger
) -> None:
    old = expiring(ledger, clock.now(), 12)
    held_fleet(ledger, clock.now(), 4, old)
    key = f"renewal.missing:{old.uuid}"

    renewal.scan(ledger, clock.now(), alert_policy=ALERTS)
    assert live_alerts(ledger) == {key: ("renewal.missing", "warning")}
    with ledger.alerts() as store:
        [alert] = store.alerts()
    assert alert.data["devices"] == 4 and alert.data["days_left"] == 12
    assert "4 device(s), 12 days left" in alert.title
    for _ in range(5):  # hourly scans: never a second alert, never sent again the same day
        renewal.scan(ledger, clock.advance(3600), alert_policy=ALERTS)
    assert deliveries(ledger) == ["opened"]
    renewal.scan(ledger, clock.advance(DAY), alert_policy=ALERTS)  # unacknowledged: repeated
    assert deliveries(ledger) == ["opened", "repeated"]
    acknowledge(ledger, alert.id, actor="op", now=clock.now())
    renewal.scan(ledger, clock.advance(DAY), alert_policy=ALERTS)  # acknowledged: quiet
    assert deliveries(ledger) == ["opened", "repeated"]

    clock.advance(alert.opened_at + dt.timedelta(days=6) - clock.now())  # 6 days left
    renewal.scan(ledger, clock.now(), alert_policy=ALERTS)
    assert live_alerts(ledger) == {key: ("renewal.missing", "critical")}
    assert deliveries(ledger) == ["opened", "repeated", "escalated"]
    with ledger.alerts() as store:
        assert [a.state for a in store.alerts()] == ["open"]  # escalation reopens it

    new = add_profile(ledger, clock.now())  # the renewal arrives: a rollout, and it resolves
    report = renewal.scan(ledger, clock.advance(3600), alert_policy=ALERTS)
    assert report.profiles[0]["replacement"] == new.uuid and len(report.opened) == 1
    assert report.alerts["resolved"] == [key]
    assert live_alerts(ledger) == {}
    assert deliveries(ledger)[-1] == "resolved"


def test_a_dry_run_explains_and_writes_nothing(clock: ManualClock, ledger: Ledger) -> None:
    old = expiring(ledger, clock.now(), 10)
    new = add_profile(ledger, clock.now())
    held_fleet(ledger, clock.now(), 3, old)
    report = renewal.scan(ledger, clock.now(), dry_run=True, alert_policy=ALERTS)
    [item] = report.profiles
    assert item["replacement"] == new.uuid and "would open" in item["action"]
    with ledger.rollouts() as store:
        assert store.recent() == []
    assert live_alerts(ledger) == {}


def test_two_concurrent_scans_open_one_rollout(clock: ManualClock, ledger: Ledger) -> None:
    old = expiring(ledger, clock.now(), 25)
    add_profile(ledger, clock.now())
    held_fleet(ledger, clock.now(), 10, old)
    reports = at_once(4, lambda: renewal.scan(ledger, clock.now(), alert_policy=ALERTS))
    assert sum(len(r.opened) for r in reports) == 1
    with ledger.rollouts() as store:
        assert len(store.renewing([old.uuid])) == 1


def test_a_halted_renewal_and_an_expired_profile_raise_alerts(
    clock: ManualClock, ledger: Ledger
) -> None:
    old = expiring(ledger, clock.now(), 20)
    add_profile(ledger, clock.now())
    held_fleet(ledger, clock.now(), 10, old)
    [rid] = renewal.scan(ledger, clock.now(), alert_policy=ALERTS).opened
    with ledger.rollouts() as store:
        store.set_state(rid, "halted", clock.now())
        store.set_reason(rid, "stage 0 gate failed", clock.now())
    renewal.scan(ledger, clock.advance(3600), alert_policy=ALERTS)
    assert live_alerts(ledger) == {f"renewal.halted:{rid}": ("renewal.halted", "warning")}

    clock.advance(dt.timedelta(days=21))  # the old profile has expired on the devices
    renewal.scan(ledger, clock.now(), alert_policy=ALERTS)
    alerts = live_alerts(ledger)
    assert alerts[f"profile.expired:{old.uuid}"] == ("profile.expired", "critical")
    assert alerts[f"renewal.halted:{rid}"] == ("renewal.halted", "critical")


def test_the_push_certificate_alert_fires_inside_its_window(
    clock: ManualClock, ledger: Ledger
) -> None:
    far = PushCertificate("com.apple.mgmt.x", clock.now() + dt.timedelta(days=200))
    renewal.scan(ledger, clock.now(), push_certificate=far, alert_policy=ALERTS)
    assert live_alerts(ledger) == {}
    soon = PushCertificate("com.apple.mgmt.x", clock.now() + dt.timedelta(days=10))
    report = renewal.scan(ledger, clock.now(), push_certificate=soon, alert_policy=ALERTS)
    assert report.push_certificate is not None and report.push_certificate["days_left"] == 10
    key = "apns.certificate_expiring:com.apple.mgmt.x"
    assert live_alerts(ledger) == {key: ("apns.certificate_expiring", "warning")}
    # a scan that was not given the certificate leaves its alert alone
    renewal.scan(ledger, clock.advance(3600), alert_policy=ALERTS)
    assert key in live_alerts(ledger)
    renewed = PushCertificate("com.apple.mgmt.x", clock.now() + dt.timedelta(days=365))
    renewal.scan(ledger, clock.now(), push_certificate=renewed, alert_policy=ALERTS)
    assert live_alerts(ledger) == {}


def test_a_developer_certificate_that_dies_before_its_profile_raises_an_alert(
    clock: ManualClock, ledger: Ledger
) -> None:
    now = clock.now()
    # a chain whose certificates (the developer's among them) end in 20 days, and a profile
    # signed with it that lives 300 more days
    chain = make_apple_like_chain(not_before=now - dt.timedelta(days=380), days=400)
    data = make_profile(
        chain, created_at=now - dt.timedelta(days=60), expires_at=now + dt.timedelta(days=300)
    )
    with ledger.library() as store:
        held, _ = store.add(parse_profile(data, trust_anchors=chain.anchors), data, now)
    held_fleet(ledger, now, 4, held)
    report = renewal.scan(ledger, now, alert_policy=ALERTS)
    assert report.profiles == []  # the profile itself is far from its renewal window
    [key] = report.alerts["opened"]
    assert key.startswith(f"profile.certificate_expiring:{held.uuid}:")
    with ledger.alerts() as store:
        [alert] = store.alerts()
    assert alert.severity == "warning" and alert.data["days_left"] == 20
    assert alert.data["devices"] == 4 and "before the profile" in alert.title
    renewal.scan(ledger, clock.advance(dt.timedelta(days=14)), alert_policy=ALERTS)
    assert live_alerts(ledger) == {key: ("profile.certificate_expiring", "critical")}


def test_per_app_windows(clock: ManualClock) -> None:
    policy = RenewalPolicy(
        windows=(("com.example.slow.*", 60 * DAY), ("com.example.fast", 7 * DAY))
    )
    assert policy.window_for("ABCDE12345.com.example.slow.app") == 60 * DAY
    assert policy.window_for("ABCDE12345.com.example.fast") == 7 * DAY
    assert policy.window_for("ABCDE12345.com.example.other") == 30 * DAY
    assert policy.window_for(None) == 30 * DAY


def test_concurrent_scans_raise_one_alert_and_send_it_once(
    clock: ManualClock, ledger: Ledger
) -> None:
    old = expiring(ledger, clock.now(), 12)
    held_fleet(ledger, clock.now(), 3, old)

    def alert_step() -> object:  # every scan's alert step at the same moment
        with ledger.alerts() as store:
            return alerts.reconcile(
                store,
                [NewAlert(f"renewal.missing:{old.uuid}", "renewal.missing", "warning", "t")],
                kinds=renewal.KINDS,
                policy=ALERTS,
                now=clock.now(),
            )

    at_once(4, alert_step)
    assert len(live_alerts(ledger)) == 1
    assert deliveries(ledger) == ["opened"]
