"""The device registry: imports upsert by enrollment id, never half-write, and selections
match on tags, platforms and holdings, on both backends."""

from __future__ import annotations

import datetime as dt

import pytest

from rollout.inventory import DeviceRecord, read_inventory
from rollout.ledger import DeviceFilter, Ledger

UDID_A = "00008020-000915083C80012E"
UDID_B = "663B07BB783E9ADE1DAE4FBB92EA12AFC0CE5B69"
PROFILE = "3f2504e0-4f89-11d3-9a0c-0305e82c3301"
NOW = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.UTC)


def _records(text: str) -> tuple[DeviceRecord, ...]:
    report = read_inventory(text.encode(), fmt="csv")
    assert report.errors == ()
    return report.records


def test_import_creates_then_updates_without_clearing_unspecified_fields(ledger: Ledger) -> None:
    first = _records(
        "udid,platform,os_version,serial_number,tags,profiles,push_token,push_magic\n"
        f"{UDID_A},iOS,17.4,SER1,a;b,{PROFILE},{'0f' * 32},M1\n"
        f"{UDID_B},iPadOS,16.0,SER2,,,,\n"
    )
    with ledger.registry() as store:
        result = store.import_devices(first, NOW)
    assert (result.created, result.updated, result.profiles) == (2, 0, 1)
    with ledger.registry() as store:
        result = store.import_devices(_records(f"udid,os_version\n{UDID_A},17.5\n"), NOW)
    assert (result.created, result.updated) == (0, 1)

    with ledger.registry() as store:
        dev = store.get(UDID_A)
        assert dev is not None
        assert dev.os_version == "17.5"
        assert dev.serial_number == "SER1" and dev.platform == "iOS"
        assert dev.tags == ("a", "b")
        assert dev.token_state == "active" and dev.state == "imported"
        facts = store.installed(dev.id)
        assert [(f.profile_uuid, f.source, f.seen_at) for f in facts] == [(PROFILE, "import", NOW)]
        other = store.get(UDID_B)
        assert other is not None and other.token_state == "missing"


def test_reimporting_the_same_file_is_harmless(ledger: Ledger) -> None:
    records = _records(f"udid,profiles\n{UDID_A},{PROFILE}\n")
    for _ in range(3):
        with ledger.registry() as store:
            store.import_devices(records, NOW)
    with ledger.registry() as store:
        assert store.count_by_state() == {"imported": 1}
        [device] = store.page()
        assert len(store.installed(device.id)) == 1


def test_a_failed_import_writes_nothing(ledger: Ledger) -> None:
    records = _records(f"udid\n{UDID_A}\n{UDID_B}\n")

    class Boom(RuntimeError):
        pass

    with pytest.raises(Boom), ledger.registry() as store:
        store.import_devices(records, NOW)
        raise Boom
    with ledger.registry() as store:
        assert store.count_by_state() == {}


def test_large_import_is_batched_and_complete(ledger: Ledger) -> None:
    rows = "\n".join(f"{i:08X}-{i:016X},iOS" for i in range(12000))
    with ledger.registry() as store:
        result = store.import_devices(_records("udid,platform\n" + rows + "\n"), NOW)
    assert result.created == 12000
    with ledger.registry() as store:
        assert store.count_by_state() == {"imported": 12000}


def test_selections_combine_tags_platforms_holdings_and_pages(ledger: Ledger) -> None:
    lines = ["udid,platform,tags,profiles"]
    for i in range(30):
        tags = ";".join(t for t, every in (("field", 2), ("eu", 3)) if i % every == 0)
        lines.append(
            f"00008020-{i:016X},{'iOS' if i % 5 else 'macOS'},{tags},{PROFILE if i < 10 else ''}"
        )
    with ledger.registry() as store:
        store.import_devices(_records("\n".join(lines) + "\n"), NOW)

    def keys(where: DeviceFilter) -> list[int]:
        with ledger.registry() as store:
            return sorted(int(k[9:], 16) for _, k in store.select(where))

    assert keys(DeviceFilter(tags=("field",))) == list(range(0, 30, 2))
    assert keys(DeviceFilter(tags=("field", "eu"))) == list(range(0, 30, 6))
    assert keys(DeviceFilter(platforms=("macOS",))) == list(range(0, 30, 5))
    assert keys(DeviceFilter(holders_of=PROFILE.upper())) == list(range(10))
    assert keys(DeviceFilter(tags=("eu",), platforms=("iOS",), holders_of=PROFILE)) == [3, 6, 9]
    assert keys(DeviceFilter(states=("enrolled",))) == []
    with ledger.registry() as store:
        first = store.select(DeviceFilter(), limit=7)
        rest = store.select(DeviceFilter(), after_id=first[-1][0])
    assert len(first) == 7 and len(rest) == 23 and first[-1][0] < rest[0][0]
