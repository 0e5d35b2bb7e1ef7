"""``rollout profiles`` through the real command line, as an operator runs it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rollout.ledger import db
from rollout.sim.profiles import AppleLikeChain, make_apple_like_chain, make_profile, tamper
from tests.cli.support import rollout
from tests.profiles.test_fields import JSON_KEYS


@pytest.fixture(scope="module")
def chain() -> AppleLikeChain:
    return make_apple_like_chain()


@pytest.fixture
def files(tmp_path: Path, chain: AppleLikeChain) -> dict[str, Path]:
    root = tmp_path / "root.der"
    root.write_bytes(chain.root.cert_der())
    good = make_profile(chain, name="Good", uuid="3F2504E0-4F89-11D3-9A0C-0305E82C3301")
    other = make_profile(chain, name="Other", uuid="3F2504E0-4F89-11D3-9A0C-0305E82C3301")
    out = {"root": root}
    for name, data in {"good": good, "other": other, "tampered": tamper(good)}.items():
        out[name] = tmp_path / f"{name}.mobileprovision"
        out[name].write_bytes(data)
    out["notcms"] = tmp_path / "plain.mobileprovision"
    out["notcms"].write_bytes(b'<?xml version="1.0"?><plist version="1.0"><dict/></plist>')
    return out


def test_inspect_json_has_the_stable_keys_and_the_chain_verdict(files: dict[str, Path]) -> None:
    res = rollout(
        "profiles",
        "inspect",
        str(files["good"]),
        "--json",
        "--trust-anchor",
        str(files["root"]),
        home=files["root"].parent,
    )
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert set(data) == JSON_KEYS
    assert data["uuid"] == "3f2504e0-4f89-11d3-9a0c-0305e82c3301"
    assert data["kind"] == "enterprise" and data["provisions_all_devices"] is True
    assert data["signature"]["valid"] is True and data["signature"]["chain_trusted"] is True
    assert data["expires_at"].endswith("Z")


def test_inspect_of_a_bad_file_is_one_line_on_stderr(files: dict[str, Path]) -> None:
    res = rollout("profiles", "inspect", str(files["notcms"]), home=files["root"].parent)
    assert res.returncode != 0
    assert res.stdout == ""
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in res.stderr
    assert "plain.mobileprovision" in lines[0]


def test_add_list_show_on_the_ledger(files: dict[str, Path], ledger_url: str) -> None:
    home = files["root"].parent
    anchor = ("--trust-anchor", str(files["root"]))
    res = rollout("profiles", "add", str(files["good"]), *anchor, home=home, db_url=ledger_url)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("added 3f2504e0")
    res = rollout("profiles", "add", str(files["good"]), *anchor, home=home, db_url=ledger_url)
    assert res.returncode == 0 and res.stdout.startswith("already in the library")
    res = rollout("profiles", "add", str(files["other"]), *anchor, home=home, db_url=ledger_url)
    assert res.returncode == 1 and "different file" in res.stderr
    res = rollout("profiles", "add", str(files["tampered"]), *anchor, home=home, db_url=ledger_url)
    assert res.returncode == 1 and "signature is not valid" in res.stderr

    res = rollout("profiles", "list", "--json", home=home, db_url=ledger_url)
    items = json.loads(res.stdout)
    assert [i["name"] for i in items] == ["Good"]
    res = rollout(
        "profiles", "show", items[0]["uuid"].upper(), "--json", home=home, db_url=ledger_url
    )
    assert json.loads(res.stdout)["sha256"] == items[0]["sha256"]
    res = rollout(
        "profiles", "show", "00000000-0000-0000-0000-000000000000", home=home, db_url=ledger_url
    )
    assert res.returncode == 1 and "no profile" in res.stderr


def test_untrusted_profiles_need_an_explicit_flag(files: dict[str, Path], sqlite_url: str) -> None:
    home = files["root"].parent
    res = rollout("profiles", "add", str(files["good"]), home=home, db_url=sqlite_url)
    assert res.returncode == 1 and "--allow-untrusted" in res.stderr
    res = rollout(
        "profiles", "add", str(files["good"]), "--allow-untrusted", home=home, db_url=sqlite_url
    )
    assert res.returncode == 0, res.stderr


def test_devices_import_reports_bad_lines_and_keeps_good_rows(
    tmp_path: Path, ledger_url: str
) -> None:
    inv = tmp_path / "fleet.csv"
    inv.write_text(
        "udid,platform,tags\n00008020-000915083C80012E,iOS,a\nnot-a-udid,iOS,\n"
        "663b07bb783e9ade1dae4fbb92ea12afc0ce5b69,iPadOS,b\n"
    )
    res = rollout(
        "devices", "import", str(inv), "--all-or-nothing", home=tmp_path, db_url=ledger_url
    )
    assert res.returncode == 1 and "line 3:" in res.stderr and "nothing written" in res.stdout
    res = rollout("devices", "import", str(inv), "--json", home=tmp_path, db_url=ledger_url)
    assert res.returncode == 1
    out = json.loads(res.stdout)
    assert (out["created"], out["invalid"], out["errors"][0]["line"]) == (2, 1, 3)
    res = rollout("devices", "list", "--json", home=tmp_path, db_url=ledger_url)
    assert len(json.loads(res.stdout)) == 2


def test_a_server_ledger_must_be_migrated_first(tmp_path: Path, postgres_url: str) -> None:
    res = rollout("profiles", "list", home=tmp_path, db_url=postgres_url)
    assert res.returncode == 1 and "rollout db upgrade" in res.stderr
    res = rollout("db", "upgrade", home=tmp_path, db_url=postgres_url)
    assert res.returncode == 0 and f"revision {db.head_revision()}" in res.stdout
    res = rollout("profiles", "list", "--json", home=tmp_path, db_url=postgres_url)
    assert res.returncode == 0 and json.loads(res.stdout) == []


def test_inspect_of_a_tampered_file_shows_the_verdict_and_fails(files: dict[str, Path]) -> None:
    res = rollout(
        "profiles", "inspect", str(files["tampered"]), "--json", home=files["root"].parent
    )
    assert res.returncode == 1
    assert json.loads(res.stdout)["signature"]["valid"] is False
    assert len(res.stderr.strip().splitlines()) == 1 and "tampered" in res.stderr


def test_inspect_every_real_world_profile(realworld: Path) -> None:
    anchor = realworld / "certs" / "apple_root_ca_from_Fastlane_PR_Unit_Tests.der"
    apple_signed = {
        "fastlane_fastlane_Fastlane_PR_Unit_Tests.mobileprovision": ("app-store", "2024-06-28"),
        "fastlane_fastlane_fastlane-spec-fixtures-profiles_test.mobileprovision": (
            "app-store",
            "2016-11-07",
        ),
        "icyleaf_app_info_ios_adhoc.mobileprovision": ("ad-hoc", "2020-10-24"),
        "icyleaf_app_info_ios_development.mobileprovision": ("development", "2021-07-21"),
        "saucelabs_isign_test-2015-06.mobileprovision": ("development", "2016-06-11"),
    }
    for name, (kind, expires) in apple_signed.items():
        res = rollout(
            "profiles",
            "inspect",
            str(realworld / "profiles" / name),
            "--json",
            "--trust-anchor",
            str(anchor),
            home=realworld,
        )
        assert res.returncode == 0, (name, res.stderr)
        data = json.loads(res.stdout)
        assert (data["kind"], data["expires_at"][:10]) == (kind, expires), name
        assert data["signature"]["valid"] and data["signature"]["chain_trusted"], name
    for broken in (
        "fastlane_fastlane_downloaded_provisioning_profile.mobileprovision",
        "fastlane_fastlane_match_test.provisionprofile",
    ):
        res = rollout("profiles", "inspect", str(realworld / "profiles" / broken), home=realworld)
        assert res.returncode == 1, broken
        assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr
