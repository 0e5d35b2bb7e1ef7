"""Alert notifications leave through the outbox: signed webhook posts to a real receiver,
retried with back-off on a failure, given up on a permanent one, never holding up a scan; mail
through a real SMTP server."""

from __future__ import annotations

import datetime as dt

from rollout import renewal
from rollout.clock import ManualClock
from rollout.config import Settings, load_settings
from rollout.ledger import Ledger
from rollout.renewal_setup import deliver_alerts
from tests.alerting.receiver import SECRET, running
from tests.alerting.smtp_server import Inbox, SmtpServer
from tests.engine.support import expiring, held_fleet


def settings_for(url: str) -> Settings:
    return load_settings(alert_webhook_url=url, alert_webhook_secret=SECRET.decode())


def outbox(ledger: Ledger) -> list[tuple[str, str, int]]:
    with ledger.alerts() as store:
        return [
            (d.payload["event"], d.state, d.attempts)
            for a in store.alerts()
            for d in store.deliveries(a.id)
        ]


def test_a_new_alert_is_posted_signed_and_a_failure_is_retried_later(
    clock: ManualClock, ledger: Ledger
) -> None:
    old = expiring(ledger, clock.now(), 10)
    held_fleet(ledger, clock.now(), 2, old)
    with running(clock) as receiver:
        settings = settings_for(receiver.url("/ok"))
        renewal.scan(ledger, clock.now(), alert_policy=settings.alert_policy())
        receiver.script = [500]
        assert deliver_alerts(ledger, settings, clock) == {
            "delivered": 0,
            "retrying": 1,
            "failed": 0,
        }
        assert outbox(ledger) == [("opened", "pending", 1)]
        # not due yet: nothing is sent
        assert deliver_alerts(ledger, settings, clock)["retrying"] == 0
        assert len(receiver.requests) == 1
        clock.advance(dt.timedelta(hours=2))
        assert deliver_alerts(ledger, settings, clock)["delivered"] == 1
        assert outbox(ledger) == [("opened", "delivered", 2)]
        last = receiver.requests[-1]
    assert last.verified and last.path == "/ok"
    assert b'"kind":"renewal.missing"' in last.body and old.uuid.encode() in last.body


def test_a_permanent_refusal_is_given_up_and_journalled(clock: ManualClock, ledger: Ledger) -> None:
    old = expiring(ledger, clock.now(), 10)
    held_fleet(ledger, clock.now(), 2, old)
    with running(clock) as receiver:
        settings = settings_for(receiver.url("/missing"))
        renewal.scan(ledger, clock.now(), alert_policy=settings.alert_policy())
        assert deliver_alerts(ledger, settings, clock)["failed"] == 1
    assert outbox(ledger) == [("opened", "failed", 1)]
    with ledger.alerts() as store:
        [event] = store.events(kind="alert.delivery_failed")
    assert event.data["channel"] == "webhook" and "404" in str(event.data["error"])


def test_an_unreachable_webhook_never_holds_up_the_scan(clock: ManualClock, ledger: Ledger) -> None:
    old = expiring(ledger, clock.now(), 10)
    held_fleet(ledger, clock.now(), 2, old)
    settings = settings_for("http://127.0.0.1:9/hook")  # discard port: nothing listens
    report = renewal.scan(ledger, clock.now(), alert_policy=settings.alert_policy())
    assert report.alerts["opened"] == [f"renewal.missing:{old.uuid}"]
    assert deliver_alerts(ledger, settings, clock)["retrying"] == 1
    assert outbox(ledger) == [("opened", "pending", 1)]


def test_mail_goes_to_every_recipient_through_the_outbox(
    clock: ManualClock, ledger: Ledger
) -> None:
    old = expiring(ledger, clock.now(), 5)
    held_fleet(ledger, clock.now(), 2, old)
    inbox = Inbox()
    server = SmtpServer(inbox)
    try:
        settings = load_settings(
            smtp_host="127.0.0.1",
            smtp_port=server.port,
            smtp_from="rollout@fleet.example",
            smtp_to="ops@fleet.example, oncall@fleet.example",
        )
        renewal.scan(ledger, clock.now(), alert_policy=settings.alert_policy())
        assert deliver_alerts(ledger, settings, clock)["delivered"] == 1
    finally:
        server.close()
    [arrived] = inbox.arrived
    assert arrived.rcpt_tos == ["ops@fleet.example", "oncall@fleet.example"]
    assert arrived.message["Subject"].startswith("[rollout] CRITICAL: no renewal for")
    assert old.uuid in arrived.message.get_content()
    assert outbox(ledger) == [("opened", "delivered", 1)]
