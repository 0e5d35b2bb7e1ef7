"""E-mail delivery against a real SMTP server (aiosmtpd) on a free local port, and rendering."""

from __future__ import annotations

import datetime as dt
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from rollout.alerting import email as mail
from rollout.clock import ManualClock
from tests.alerting.smtp_server import PASSWORD, Inbox, SmtpServer

# The AUTH tests run without TLS (the client cannot be told to trust a test certificate).
pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")

ALERT = {
    "kind": "renewal.alert",
    "severity": "critical",
    "title": "Profile “Field Café” expires in 3 days",
    "text": "No renewal is in the library.\nUpload one before 2026-01-08.",
    "key": "profile:ABCD-1234",
    "opened_at": dt.datetime(2026, 1, 5, 9, 0, tzinfo=dt.UTC),
    "data": {"devices": 412, "bundle_id": "com.example.field", "team": {"id": "T1"}},
}


@pytest.fixture
def inbox() -> Inbox:
    return Inbox()


@pytest.fixture
def server(inbox: Inbox) -> Iterator[SmtpServer]:
    s = SmtpServer(inbox)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def auth_server(inbox: Inbox) -> Iterator[SmtpServer]:
    s = SmtpServer(inbox, require_auth=True)
    try:
        yield s
    finally:
        s.close()


def assert_clean(error: str | None) -> None:
    assert error
    assert "\n" not in error and "\r" not in error
    assert PASSWORD not in error


# --- sending --------------------------------------------------------------------------------


def test_a_rendered_alert_arrives(server: SmtpServer, inbox: Inbox) -> None:
    subject, body = mail.render(ALERT)
    clock = ManualClock()
    result = mail.send(server.settings(), subject, body, clock=clock)
    assert result.delivered and not result.permanent and result.error is None
    assert result.status == 250

    [got] = inbox.arrived
    assert got.mail_from == "rollout@fleet.example"
    assert got.rcpt_tos == ["ops@fleet.example", "oncall@fleet.example"]
    message = got.message
    assert message["Subject"] == subject
    assert message["From"] == "Rollout <rollout@fleet.example>"
    assert message["To"] == "ops@fleet.example, oncall@fleet.example"
    assert message["Auto-Submitted"] == "auto-generated"
    assert message["Message-ID"].endswith("@fleet.example>")
    assert message["Date"].datetime == clock.now()
    assert message.get_content_type() == "text/plain"
    assert message.get_content().replace("\r\n", "\n") == body  # CRLF on the wire


def test_without_a_clock_no_date_is_set(server: SmtpServer, inbox: Inbox) -> None:
    assert mail.send(server.settings(), "s", "b").delivered
    assert inbox.arrived[0].message["Date"] is None


def test_a_550_for_the_message_is_permanent(server: SmtpServer, inbox: Inbox) -> None:
    inbox.data_reply = "550 5.7.1 Message rejected as spam"
    result = mail.send(server.settings(), *mail.render(ALERT))
    assert not result.delivered and result.permanent
    assert result.status == 550
    assert_clean(result.error)
    assert result.error is not None and "rejected as spam" in result.error


def test_a_451_is_not_permanent(server: SmtpServer, inbox: Inbox) -> None:
    inbox.data_reply = "451 4.3.0 Try again later"
    result = mail.send(server.settings(), *mail.render(ALERT))
    assert not result.delivered and not result.permanent
    assert result.status == 451
    assert_clean(result.error)


def test_every_recipient_refused_with_550_is_permanent(server: SmtpServer, inbox: Inbox) -> None:
    inbox.rcpt_reply = {
        "ops@fleet.example": "550 5.1.1 No such user",
        "oncall@fleet.example": "550 5.1.1 No such user",
    }
    result = mail.send(server.settings(), "s", "b")
    assert not result.delivered and result.permanent
    assert result.status == 550
    assert_clean(result.error)
    assert result.error is not None and "oncall@fleet.example" in result.error


def test_a_recipient_refused_for_now_is_not_permanent(server: SmtpServer, inbox: Inbox) -> None:
    inbox.rcpt_reply = {"ops@fleet.example": "550 5.1.1 No such user"}
    settings = server.settings(recipients=("ops@fleet.example",))
    assert mail.send(settings, "s", "b").permanent
    inbox.rcpt_reply = {"ops@fleet.example": "450 4.2.1 Mailbox busy"}
    result = mail.send(settings, "s", "b")
    assert not result.delivered and not result.permanent and result.status == 450


def test_some_recipients_refused_is_delivered_and_says_who(
    server: SmtpServer, inbox: Inbox
) -> None:
    inbox.rcpt_reply = {"oncall@fleet.example": "550 5.1.1 No such user"}
    result = mail.send(server.settings(), "s", "b")
    assert result.delivered and not result.permanent
    assert result.error is not None and "oncall@fleet.example" in result.error
    assert [a.rcpt_tos for a in inbox.arrived] == [["ops@fleet.example"]]


def test_login_over_a_server_requiring_it(auth_server: SmtpServer, inbox: Inbox) -> None:
    settings = auth_server.settings(username="alerts", password=PASSWORD)
    result = mail.send(settings, *mail.render(ALERT))
    assert result.delivered, result
    assert [a.login for a in inbox.arrived] == [b"alerts"]


def test_a_wrong_password_is_permanent_and_not_shown(auth_server: SmtpServer, inbox: Inbox) -> None:
    wrong = PASSWORD + "-old"
    settings = auth_server.settings(username="alerts", password=wrong)
    result = mail.send(settings, "s", "b")
    assert not result.delivered and result.permanent
    assert result.status == 535
    assert_clean(result.error)
    assert result.error is not None and wrong not in result.error
    assert inbox.arrived == []


def test_no_login_where_one_is_required_is_permanent(auth_server: SmtpServer, inbox: Inbox) -> None:
    result = mail.send(auth_server.settings(), "s", "b")
    assert not result.delivered and result.permanent
    assert result.status is not None and 500 <= result.status < 600
    assert inbox.arrived == []


def test_starttls_required_but_not_offered_is_permanent(server: SmtpServer, inbox: Inbox) -> None:
    result = mail.send(server.settings(starttls=True), "s", "b")
    assert not result.delivered and result.permanent
    assert result.error is not None and "STARTTLS" in result.error
    assert inbox.arrived == []


def test_a_closed_port_is_not_permanent() -> None:
    with socket.socket() as bound:  # bound, not listening: connections are refused
        bound.bind(("127.0.0.1", 0))
        port = bound.getsockname()[1]
        settings = mail.SmtpSettings(
            host="127.0.0.1",
            port=port,
            sender="rollout@fleet.example",
            recipients=("ops@fleet.example",),
            username="alerts",
            password=PASSWORD,
            starttls=True,
            timeout=5.0,
        )
        result = mail.send(settings, "s", "b")
    assert not result.delivered and not result.permanent
    assert result.status is None
    assert_clean(result.error)


def test_a_silent_server_times_out_and_is_not_permanent() -> None:
    with socket.socket() as silent:  # listening, never accepting: no greeting ever comes
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        settings = mail.SmtpSettings(
            host="127.0.0.1",
            port=silent.getsockname()[1],
            sender="rollout@fleet.example",
            recipients=("ops@fleet.example",),
            starttls=False,
            timeout=0.2,
        )
        result = mail.send(settings, "s", "b")
    assert not result.delivered and not result.permanent
    assert result.error is not None and "timed out" in result.error


# --- settings -------------------------------------------------------------------------------


def test_settings_repr_hides_the_password() -> None:
    settings = mail.SmtpSettings(
        host="smtp.example",
        port=587,
        sender="rollout@fleet.example",
        recipients=("ops@fleet.example",),
        username="alerts",
        password=PASSWORD,
        starttls=True,
        timeout=30.0,
    )
    assert PASSWORD not in repr(settings)
    assert PASSWORD not in str(settings)
    assert "alerts" in repr(settings)


@pytest.mark.parametrize(
    "overrides",
    [
        {"recipients": ()},
        {"recipients": "ops@fleet.example"},
        {"username": "alerts"},
        {"password": PASSWORD},
        {"port": 0},
        {"sender": "rollout@fleet.example\r\nBcc: x@evil.example"},
        {"recipients": ("ops@fleet.example\n",)},
        {"timeout": 0},
    ],
)
def test_settings_refuse_what_cannot_work(overrides: dict[str, Any]) -> None:
    values: dict[str, Any] = {
        "host": "smtp.example",
        "port": 587,
        "sender": "rollout@fleet.example",
        "recipients": ("ops@fleet.example",),
    }
    values.update(overrides)
    with pytest.raises(ValueError) as info:
        mail.SmtpSettings(**values)
    assert PASSWORD not in str(info.value)


# --- rendering ------------------------------------------------------------------------------


def test_render_a_full_alert() -> None:
    subject, body = mail.render(ALERT)
    assert subject == "[rollout] CRITICAL: Profile “Field Café” expires in 3 days"
    assert body == (
        "Profile “Field Café” expires in 3 days\n"
        "\n"
        "No renewal is in the library.\n"
        "Upload one before 2026-01-08.\n"
        "\n"
        "Severity: critical\n"
        "Kind: renewal.alert\n"
        "Key: profile:ABCD-1234\n"
        "Opened at: 2026-01-05T09:00:00+00:00\n"
        "\n"
        "Details:\n"
        "  bundle_id: com.example.field\n"
        "  devices: 412\n"
        '  team: {"id": "T1"}\n'
    )


def test_render_tolerates_missing_keys() -> None:
    assert mail.render({}) == ("[rollout] alert", "alert\n")
    subject, body = mail.render({"kind": "push.certificate"})
    assert subject == "[rollout] push.certificate"
    assert "Kind: push.certificate" in body
    subject, body = mail.render({"text": "first line\nsecond line"})
    assert subject == "[rollout] first line"
    assert body.startswith("first line\n\nfirst line\nsecond line\n")


def test_render_any_values() -> None:
    subject, body = mail.render(
        {
            "title": "two\r\nlines\tand  tabs",
            "severity": 3,
            "opened_at": 1767603600,
            "data": ["not", "a", "mapping"],
            "resolved": True,
            "count": 0,
            "note": "line one\nline two",
            "nothing": None,
        }
    )
    assert subject == "[rollout] 3: two lines and tabs"
    assert "\n" not in subject
    assert "Opened at: 2026-01-05T09:00:00+00:00" in body
    assert 'Details:\n  ["not", "a", "mapping"]' in body
    assert "  resolved: yes" in body
    assert "  count: 0" in body
    assert "  note: line one\n    line two" in body
    assert "nothing" not in body


def test_render_keeps_the_subject_short_and_sendable(server: SmtpServer, inbox: Inbox) -> None:
    subject, body = mail.render({"title": "x" * 1000, "severity": "warning"})
    assert len(subject) <= mail.MAX_SUBJECT_CHARS
    assert mail.send(server.settings(), subject, body).delivered
    assert inbox.arrived[0].message["Subject"] == subject


def test_render_a_wrapped_notification() -> None:
    notification = {
        "event": "resolved",
        "alert": {
            "id": 7,
            "key": "profile:ABCD-1234",
            "kind": "renewal.alert",
            "severity": "warning",
            "state": "resolved",
            "title": "Profile expires in 3 days",
            "data": {"devices": 2},
            "opened_at": "2026-01-05T09:00:00+00:00",
        },
    }
    subject, body = mail.render(notification)
    assert subject == "[rollout] WARNING: Profile expires in 3 days (resolved)"
    assert body == (
        "Profile expires in 3 days\n"
        "\n"
        "Severity: warning\n"
        "Kind: renewal.alert\n"
        "Event: resolved\n"
        "State: resolved\n"
        "Key: profile:ABCD-1234\n"
        "Opened at: 2026-01-05T09:00:00+00:00\n"
        "\n"
        "Details:\n"
        "  devices: 2\n"
        "\n"
        "Also:\n"
        "  id: 7\n"
    )
    long_subject, _ = mail.render({"event": "escalated", "alert": {"title": "y" * 500}})
    assert len(long_subject) == mail.MAX_SUBJECT_CHARS
    assert long_subject.endswith("… (escalated)")
