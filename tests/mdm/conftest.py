"""Fixtures for the MDM wire-protocol tests: the real-world samples, a small device PKI, and
the check that a parsed message holds nothing rollout could not store."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from rollout import bounds
from rollout.identifiers import normalize_udid
from rollout.mdm import (
    NOT_SERVED_CHECKINS,
    Authenticate,
    CheckinMessage,
    CheckOut,
    CommandResult,
    OtherCheckin,
    Status,
    TokenUpdate,
    checkin_reply,
    parse_provisioning_profile_list,
)
from rollout.sim.identity import issue_device_identity, make_device_ca
from rollout.sim.pki import Issued

REALWORLD = Path(__file__).resolve().parents[2].parent / "shared" / "realworld"


def realworld_file(*parts: str) -> Path:
    """A file under the shared real-world folder; skips the test when it is absent."""
    path = REALWORLD.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real-world sample {path} is not available")
    return path


@pytest.fixture(scope="session")
def device_ca() -> Issued:
    return make_device_ca(not_before=dt.datetime.now(dt.UTC) - dt.timedelta(days=365))


@pytest.fixture(scope="session")
def other_ca() -> Issued:
    return make_device_ca("Somebody Else's CA")


@pytest.fixture(scope="session")
def device(device_ca: Issued) -> Issued:
    return issue_device_identity(device_ca, "00008020-000915083C80012E")


@pytest.fixture(scope="session")
def rsa_device(device_ca: Issued) -> Issued:
    return issue_device_identity(device_ca, "RSA-DEVICE-0001", key_kind="rsa")


@pytest.fixture(scope="session")
def foreign_device(other_ca: Issued) -> Issued:
    return issue_device_identity(other_ca, "00008020-000915083C80012E")


@pytest.fixture(scope="session")
def expired_device(device_ca: Issued) -> Issued:
    start = dt.datetime.now(dt.UTC) - dt.timedelta(days=30)
    return issue_device_identity(device_ca, "EXPIRED-DEVICE", not_before=start, days=10)


# The fields of each check-in that rollout stores, and their bounds.
STORED_CHECKIN_FIELDS: dict[type, dict[str, int]] = {
    Authenticate: {
        "topic": bounds.TOPIC,
        "os_version": bounds.OS_VERSION,
        "build_version": bounds.BUILD_VERSION,
        "product_name": bounds.PRODUCT_NAME,
        "serial_number": bounds.SERIAL_NUMBER,
        "model": bounds.MODEL,
        "device_name": bounds.DEVICE_NAME,
    },
    TokenUpdate: {
        "topic": bounds.TOPIC,
        "token": bounds.PUSH_TOKEN_BYTES,
        "token_hex": bounds.PUSH_TOKEN_HEX,
        "push_magic": bounds.PUSH_MAGIC,
    },
    CheckOut: {"topic": bounds.TOPIC},
    OtherCheckin: {"message_type": bounds.MESSAGE_TYPE},
}


def assert_stored_fields_bounded(msg: CheckinMessage | CommandResult) -> None:
    """Every value rollout stores from a parsed message is within :mod:`rollout.bounds`, and
    every JSON it stores encodes strictly (no NaN, no recursion error)."""

    def within(value: str | bytes | None, limit: int) -> None:
        assert value is None or len(value) <= limit, (len(value), limit)

    enrollment = msg.enrollment
    within(enrollment.udid, bounds.UDID)
    assert enrollment.udid is None or enrollment.udid == normalize_udid(enrollment.udid)
    within(enrollment.enrollment_id, bounds.ENROLLMENT_ID)
    within(enrollment.device_key, bounds.COLUMNS["devices.enrollment_id"])
    within(enrollment.enrollment_key, bounds.ENROLLMENT_KEY)
    for name, limit in STORED_CHECKIN_FIELDS.get(type(msg), {}).items():
        within(getattr(msg, name), limit)
    if isinstance(msg, OtherCheckin):
        reply = checkin_reply(msg)
        assert reply.status_code != 401 and reply.reason
        assert reply.status_code < 500 or msg.message_type in NOT_SERVED_CHECKINS
    elif isinstance(msg, CommandResult):
        within(msg.command_uuid, bounds.COMMAND_UUID)
        assert len(msg.error_chain) <= bounds.ERROR_CHAIN_ITEMS
        for item in msg.error_chain:
            within(item.domain, bounds.ERROR_DOMAIN)
            within(item.localized_description, bounds.ERROR_TEXT)
            within(item.us_english_description, bounds.ERROR_TEXT)
            within(f"{item.domain}:{item.code}", bounds.TARGET_REASON)
        json.dumps([item.as_json() for item in msg.error_chain], allow_nan=False)
        text = json.dumps(
            msg.extra_json, allow_nan=False, ensure_ascii=False, separators=(",", ":")
        )
        assert len(text.encode()) <= bounds.EXTRA_JSON_BYTES
        assert json.loads(text) == msg.extra_json
        if msg.status is Status.ACKNOWLEDGED and "ProvisioningProfileList" in msg.raw:
            for profile in parse_provisioning_profile_list(msg):
                within(profile.uuid.lower(), bounds.PROFILE_UUID)
                within(profile.name, bounds.PROFILE_NAME)
    elif type(msg) not in STORED_CHECKIN_FIELDS:
        raise AssertionError(f"not a parsed message: {msg!r}")
