"""``ROLLOUT_REQUIRE_UDID_IN_CERT``: with CAs that name each device's UDID in its certificate,
a message whose certificate names another device is refused (403, never 401) and recorded, from
Authenticate on, whether the certificate comes in ``Mdm-Signature`` or from the TLS proxy."""

from __future__ import annotations

import plistlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from rollout.ledger import Ledger
from rollout.sim.identity import forwarded_cert_header, issue_device_identity, sign_body
from rollout.sim.pki import Issued, issue_leaf
from tests.web.support import CHECKIN, CONNECT, TOPIC, Served, serve

UDID = "00008020-0000000000000A01"
OTHER = "00008020-0000000000000B02"


@pytest.fixture(params=["mdm-signature", "client-cert"])
def web(
    request: pytest.FixtureRequest, ledger: Ledger, tmp_path: Path, device_ca: Issued
) -> Iterator[Served]:
    server = serve(
        ledger, tmp_path, device_ca, require_udid_in_cert=True, identity_sources=request.param
    )
    try:
        yield Served(server.base_url, ledger, device_ca, server)
    finally:
        server.stop()


def put(web: Served, identity: Issued, path: str, msg: dict[str, Any], ctype: str) -> int:
    body = plistlib.dumps(msg)
    headers = {"Content-Type": ctype}
    if web.server.app.mdm.config.identity.sources[0] == "mdm-signature":
        headers["Mdm-Signature"] = sign_body(identity, body)
    else:
        headers["Client-Cert"] = forwarded_cert_header(identity)
    return httpx.put(f"{web.base_url}{path}", content=body, headers=headers).status_code


def checkin(web: Served, identity: Issued, message_type: str, udid: str, **keys: Any) -> int:
    msg = {"MessageType": message_type, "UDID": udid, "Topic": TOPIC, **keys}
    return put(web, identity, "/mdm/checkin", msg, CHECKIN)


def enroll(web: Served, identity: Issued, udid: str) -> list[int]:
    return [
        checkin(web, identity, "Authenticate", udid),
        checkin(web, identity, "TokenUpdate", udid, Token=b"\x07" * 32, PushMagic="m"),
        put(web, identity, "/mdm/connect", {"UDID": udid, "Status": "Idle"}, CONNECT),
    ]


def refusals(web: Served) -> list[str]:
    with web.ledger.checkin() as store:
        return [e.data["reason"] for e in store.events(kind="mdm.refused")]


def enrolled(web: Served, udid: str) -> bool:
    with web.ledger.registry() as store:
        return store.get(udid) is not None


def test_a_certificate_naming_the_udid_in_its_cn_is_accepted(web: Served) -> None:
    assert enroll(web, issue_device_identity(web.device_ca, UDID), UDID) == [200, 200, 200]


def test_a_certificate_naming_the_udid_in_a_subject_alt_name_is_accepted(web: Served) -> None:
    identity = issue_leaf(
        web.device_ca, "iPhone of the front desk", key_kind="ec", client_auth=True,
        dns_names=(UDID.lower(),),  # UDIDs compare without regard to case
    )  # fmt: skip
    assert enroll(web, identity, UDID) == [200, 200, 200]


def test_authenticate_with_a_certificate_naming_another_device_is_refused(web: Served) -> None:
    borrowed = issue_device_identity(web.device_ca, OTHER)  # a valid certificate, for OTHER
    assert checkin(web, borrowed, "Authenticate", UDID) == 403
    assert refusals(web) == ["identity_subject_mismatch"]
    assert not enrolled(web, UDID)


def test_every_later_message_must_name_the_device_too(web: Served) -> None:
    own = issue_device_identity(web.device_ca, UDID)
    assert enroll(web, own, UDID) == [200, 200, 200]
    other = issue_device_identity(web.device_ca, OTHER)
    idle = {"UDID": UDID, "Status": "Idle"}
    assert checkin(web, other, "TokenUpdate", UDID, Token=b"\x08" * 32, PushMagic="n") == 403
    assert put(web, other, "/mdm/connect", idle, CONNECT) == 403
    assert checkin(web, other, "CheckOut", UDID) == 403
    # a CN that merely contains the UDID names someone else
    lookalike = issue_device_identity(web.device_ca, f"{UDID}-2")
    assert put(web, lookalike, "/mdm/connect", idle, CONNECT) == 403
    with web.ledger.checkin() as store:
        [event] = store.events(kind="mdm.refused")  # one source, one reason: one event ...
    assert event.data["reason"] == "identity_subject_mismatch"
    assert web.server.app.refusals.counts() == {"identity_subject_mismatch": 4}  # ... 4 counted
    with web.ledger.registry() as store:
        device, push = store.get(UDID), store.push_data(UDID)
    assert device is not None and device.state == "enrolled" and device.has_push_token
    assert push is not None and push.token == "07" * 32
