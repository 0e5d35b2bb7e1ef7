"""Device imports upsert by enrollment id on both backends and never half-write."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, func, select

from rollout.inventory import read_inventory
from rollout.ledger import db
from rollout.ledger.devices import get_device, import_devices, installed_profiles
from rollout.ledger.events import list_events
from rollout.ledger.models import DeviceRow, InstalledProfileRow

UDID_A = "00008020-000915083C80012E"
UDID_B = "663b07bb783e9ade1dae4fbb92ea12afc0ce5b69"
PROFILE = "3f2504e0-4f89-11d3-9a0c-0305e82c3301"


def _records(text: str) -> tuple:  # type: ignore[type-arg]
    report = read_inventory(text.encode(), fmt="csv")
    assert report.errors == ()
    return report.records


def test_import_creates_then_updates_without_clearing_unspecified_fields(engine: Engine) -> None:
    first = _records(
        "udid,platform,os_version,serial_number,tags,profiles,push_token,push_magic\n"
        f"{UDID_A},iOS,17.4,SER1,a;b,{PROFILE},{'0f' * 32},M1\n"
        f"{UDID_B},iPadOS,16.0,SER2,,,,\n"
    )
    with db.transaction(engine) as s:
        result = import_devices(s, first)
    assert (result.created, result.updated, result.profiles) == (2, 0, 1)

    with db.transaction(engine) as s:
        result = import_devices(s, _records(f"udid,os_version\n{UDID_A},17.5\n"))
    assert (result.created, result.updated) == (0, 1)

    with db.transaction(engine) as s:
        dev = get_device(s, UDID_A)
        assert dev is not None
        assert dev.os_version == "17.5"
        assert dev.serial_number == "SER1" and dev.platform == "iOS"
        assert dev.tags == ["a", "b"]
        assert dev.push_token == "0f" * 32 and dev.token_state == "active"
        assert dev.enrollment_state == "imported"
        facts = installed_profiles(s, dev.id)
        assert [(f.profile_uuid, f.source) for f in facts] == [(PROFILE, "import")]
        other = get_device(s, UDID_B)
        assert other is not None and other.token_state == "missing"
        assert [e.kind for e in list_events(s, kind="devices.imported")] == [
            "devices.imported",
            "devices.imported",
        ]


def test_reimporting_the_same_file_is_harmless(engine: Engine) -> None:
    records = _records(f"udid,profiles\n{UDID_A},{PROFILE}\n")
    for _ in range(3):
        with db.transaction(engine) as s:
            import_devices(s, records)
    with db.transaction(engine) as s:
        assert s.scalar(select(func.count()).select_from(DeviceRow)) == 1
        assert s.scalar(select(func.count()).select_from(InstalledProfileRow)) == 1


def test_a_failed_import_writes_nothing(engine: Engine) -> None:
    records = _records(f"udid\n{UDID_A}\n{UDID_B}\n")

    class Boom(RuntimeError):
        pass

    with pytest.raises(Boom), db.transaction(engine) as s:
        import_devices(s, records)
        raise Boom
    with db.transaction(engine) as s:
        assert s.scalar(select(func.count()).select_from(DeviceRow)) == 0


def test_large_import_is_batched_and_complete(engine: Engine) -> None:
    rows = "\n".join(f"{i:08X}-{i:016X},iOS" for i in range(12000))
    records = _records("udid,platform\n" + rows + "\n")
    with db.transaction(engine) as s:
        result = import_devices(s, records)
    assert result.created == 12000
    with db.transaction(engine) as s:
        assert s.scalar(select(func.count()).select_from(DeviceRow)) == 12000
