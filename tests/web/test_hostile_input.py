"""Input no device should send gets a 4xx with its reason recorded, never a 5xx or a traceback:
check-in types this product does not serve, nesting thousands deep, values over their bounds."""

from __future__ import annotations

import logging
import plistlib

import pytest

from rollout.mdm import Enrollment, OtherCheckin, checkin_reply
from rollout.sim.identity import sign_body
from tests.web.support import CHECKIN, CONNECT, TOPIC, Device, Served, events

UNKNOWN_TYPE = "NoSuchMessageType"


def reply_for(message_type: str) -> tuple[int, str | None]:
    """What the protocol layer says to answer a check-in of ``message_type``, and why."""
    reply = checkin_reply(OtherCheckin(message_type, Enrollment(udid="00008020-0000000000000C01")))
    return reply.status_code, reply.reason


@pytest.mark.parametrize("message_type", ["UserAuthenticate", "SetBootstrapToken", UNKNOWN_TYPE])
def test_other_checkins_get_what_the_protocol_says_and_the_reason_is_recorded(
    web: Served, message_type: str
) -> None:
    dev = Device(web, "00008020-0000000000000C01")
    dev.enroll()
    status, reason = reply_for(message_type)
    assert dev.checkin(message_type, UserID="A-USER") == status
    if status == 400:
        [event] = events(web, "mdm.refused")
        assert event.data["reason"] == reason
    else:
        [event] = events(web, "mdm.checkin_other")
        assert event.data == {"message_type": message_type, "answered": status, "reason": reason}


def test_an_unknown_checkin_type_is_a_4xx_with_its_reason_end_to_end(web: Served) -> None:
    dev = Device(web, "00008020-0000000000000C02")
    dev.enroll()
    assert dev.checkin(UNKNOWN_TYPE) == 400
    [event] = events(web, "mdm.refused")
    assert event.data["reason"] == "unknown_message_type" and event.data["status"] == 400


def nested(depth: int) -> bytes:
    return (
        b'<?xml version="1.0" encoding="UTF-8"?>\n<plist version="1.0"><dict>'
        b"<key>UDID</key><string>00008020-0000000000000C03</string>"
        b"<key>Status</key><string>Acknowledged</string>"
        b"<key>CommandUUID</key><string>c-1</string><key>Deep</key>"
        + b"<array>" * depth
        + b"</array>" * depth
        + b"</dict></plist>"
    )


def test_nesting_thousands_deep_is_refused_without_a_traceback(
    web: Served, caplog: pytest.LogCaptureFixture
) -> None:
    dev = Device(web, "00008020-0000000000000C03")
    dev.enroll()
    body = nested(3000)
    headers = {"Content-Type": CONNECT, "Mdm-Signature": sign_body(dev.identity, body)}
    with caplog.at_level(logging.WARNING):
        res = dev.client.put("/mdm/connect", content=body, headers=headers)
    assert res.status_code == 400
    assert [e.data["reason"] for e in events(web, "mdm.refused")] in (["unreadable"], ["too_deep"])
    assert not any(r.exc_info for r in caplog.records)
    assert "Traceback" not in caplog.text


def test_a_checkin_with_values_over_their_bounds_is_refused_and_fails_alone(web: Served) -> None:
    dev = Device(web, "00008020-0000000000000C04")
    # a serial number longer than the ledger keeps: the protocol layer refuses it, and were it
    # to let one through, the ledger would refuse it as this check-in's alone (unstorable)
    assert dev.checkin("Authenticate", SerialNumber="S" * 5000) == 400
    [event] = events(web, "mdm.refused")
    assert event.data["reason"] in ("too_long", "unstorable")
    neighbour = Device(web, "00008020-0000000000000C05")
    neighbour.enroll()  # the ledger and the writer carry on


def test_a_report_whose_values_the_ledger_cannot_store_fails_alone(web: Served) -> None:
    dev = Device(web, "00008020-0000000000000C06")
    dev.enroll()
    body = plistlib.dumps({"UDID": "X" * 5000, "Status": "Idle", "Topic": TOPIC})
    headers = {"Content-Type": CONNECT, "Mdm-Signature": sign_body(dev.identity, body)}
    assert dev.client.put("/mdm/connect", content=body, headers=headers).status_code == 400
    [event] = events(web, "mdm.refused")
    assert event.enrollment_id is None or len(event.enrollment_id) <= 128
    assert dev.report("Idle").status_code == 200


def test_a_checkin_on_the_connect_path_and_a_report_on_the_checkin_path(web: Served) -> None:
    dev = Device(web, "00008020-0000000000000C07")
    dev.enroll()
    report = dev.put("/mdm/checkin", {"UDID": dev.udid, "Status": "Idle"}, CHECKIN)
    assert report.status_code == 400
    checkin = dev.put("/mdm/connect", {"UDID": dev.udid, "MessageType": "Authenticate"}, CONNECT)
    assert checkin.status_code == 400
