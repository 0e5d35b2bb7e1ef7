"""Every CLI command over a corpus of hostile inputs: a non-zero exit, one line on stderr naming
what is wrong, never a traceback, and nothing half-written.

The commands run in this process (``rollout.cli.main`` with its own argv and environment), so
the whole corpus takes seconds, not a subprocess per case.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from rollout.cli import main
from rollout.config import get_settings

UDID = "00008020-000915083C80012E"


@pytest.fixture
def run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Iterator[object]:
    """``run(*argv, **env) -> (exit code, stdout, stderr)`` on a fresh home under tmp_path."""

    def run_(*argv: str, **env: str) -> tuple[int, str, str]:
        for key in [k for k in os.environ if k.startswith("ROLLOUT_")]:
            monkeypatch.delenv(key)
        monkeypatch.setenv("ROLLOUT_HOME", str(tmp_path / "home"))
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        monkeypatch.setattr("sys.argv", ["rollout", *argv])
        get_settings.cache_clear()
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        finally:
            get_settings.cache_clear()
        out, err = capsys.readouterr()
        return code, out, err

    yield run_


def hostile_files(folder: Path) -> dict[str, Path]:
    folder.mkdir(exist_ok=True)
    files = {
        "long-csv-field": f"udid,device_name\n{UDID},{'x' * 200_000}\n".encode(),
        "deep-json": ('{"udid": ' + "[" * 100_000 + "]" * 100_000 + "}\n").encode(),
        "huge-number": (
            json.dumps({"udid": UDID})[:-1] + ', "access_rights": ' + "9" * 5000 + "}\n"
        ).encode(),
        "bad-utf8": b"udid\n" + UDID.encode() + b"\xff\xfe\n",
        "binary": bytes(range(256)) * 64,
        "empty": b"",
        "truncated-profile": b"0\x82\x10\x00\x06\x09*\x86H\x86\xf7\r\x01\x07\x02",
    }
    out = {}
    for name, data in files.items():
        out[name] = folder / name
        out[name].write_bytes(data)
    out["directory"] = folder
    out["missing"] = folder / "no-such-file"
    out["dev-zero"] = Path("/dev/zero")
    return out


FILE_COMMANDS = [
    ("profiles", "inspect"),
    ("profiles", "add"),
    ("devices", "import"),
    ("devices", "import", "--format", "jsonl"),
    ("rollouts", "create", "--profile", "00000000", "--devices"),
]


def assert_refused(code: int, out: str, err: str, case: str) -> None:
    """Refused with one line saying why; an inventory may say one line per bad row."""
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("note: ")]
    assert code != 0, f"{case}: exit 0\n{out}\n{err}"
    assert "Traceback" not in err + out, f"{case}: a traceback\n{err}"
    assert lines, f"{case}: nothing on stderr"
    if len(lines) > 1:
        assert all(re.search(r": line \d+: ", line) for line in lines), f"{case}:\n{err}"
    else:
        assert lines[0].startswith("error: ") or ": line " in lines[0], f"{case}: {lines[0]}"


def test_every_file_command_refuses_every_hostile_file(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    files = hostile_files(tmp_path / "corpus")
    for command in FILE_COMMANDS:
        for name, path in files.items():
            code, out, err = run(*command, str(path))
            assert_refused(code, out, err, f"{' '.join(command)} <{name}>")
    # nothing was half-written: the ledger holds no device and no profile
    code, out, _ = run("devices", "list", "--json")
    assert code == 0 and json.loads(out) == []
    code, out, _ = run("profiles", "list", "--json")
    assert code == 0 and json.loads(out) == []


@pytest.mark.parametrize(
    "argv",
    [
        ("rollouts", "show", "99999999999999999999"),
        ("rollouts", "show", "-1"),
        ("rollouts", "show", "abc"),
        ("rollouts", "start", "0"),
        ("rollouts", "create", "--profile", "x", "--all", "--tag", "a"),
        ("rollouts", "create", "--profile", "x"),
        ("profiles", "show", ""),
        ("profiles", "show", "not-a-uuid"),
        ("devices", "list", "--limit", "-5"),
        ("devices", "import", "x", "--format", "xml"),
        ("demo", "--timeout", "-1"),
        ("demo", "--devices", "0"),
        ("serve", "--port", "70000"),
        ("bench", "push", "--size", "0"),
        ("alerts", "ack", "99999999999999999999"),
        ("alerts", "ack", "-1"),
        ("alerts", "resolve", "abc"),
        ("tokens", "create", "--role", "god", "--name", "x"),
        ("tokens", "create", "--role", "viewer", "--name", "a" * 500),
        ("tokens", "revoke", "no-such-token"),
        ("renewals", "scan", "--since", "x"),
        ("no-such-command",),
    ],
)
def test_bad_arguments_are_one_line(run, argv: tuple[str, ...]) -> None:  # type: ignore[no-untyped-def]
    code, out, err = run(*argv)
    assert_refused(code, out, err, " ".join(argv))


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"ROLLOUT_APPLE_API": "enterprise"}, "ROLLOUT_APPLE_ISSUER_ID"),
        (
            {
                "ROLLOUT_APPLE_API": "enterprise",
                "ROLLOUT_APPLE_ISSUER_ID": "i",
                "ROLLOUT_APPLE_KEY_ID": "K",
                "ROLLOUT_APPLE_KEY_FILE": "/no/such/AuthKey_K.p8",
            },
            "ROLLOUT_APPLE_KEY_FILE",
        ),
        (
            {
                "ROLLOUT_APPLE_API": "enterprise",
                "ROLLOUT_APPLE_ISSUER_ID": "i",
                "ROLLOUT_APPLE_KEY_ID": "K",
                "ROLLOUT_APPLE_KEY_FILE": "/dev/zero",
            },
            "ROLLOUT_APPLE_KEY_FILE",
        ),
        ({"ROLLOUT_TRUST_ANCHORS": "/etc/hostname"}, "ROLLOUT_TRUST_ANCHORS"),
        ({"ROLLOUT_APNS_CERT": "/etc/hostname"}, "ROLLOUT_APNS_CERT"),
    ],
)
def test_a_scan_with_unusable_settings_is_one_line(  # type: ignore[no-untyped-def]
    run, env: dict[str, str], named: str
) -> None:
    code, out, err = run("renewals", "scan", **env)
    assert_refused(code, out, err, f"renewals scan with {env}")
    assert named in err, err


@pytest.mark.parametrize(
    "env",
    [
        {"ROLLOUT_DATABASE_URL": "garbage"},
        {"ROLLOUT_DATABASE_URL": "mysql://user@localhost/db"},
        {"ROLLOUT_MAX_BODY_BYTES": "abc"},
        {"ROLLOUT_BATCH_SIZE": "-3"},
        {"ROLLOUT_IDENTITY_MODE": "lax"},
        {"ROLLOUT_HOME": "FILE"},
        {"ROLLOUT_HOME": "UNWRITABLE"},
    ],
)
@pytest.mark.parametrize(
    "argv", [("rollouts", "list"), ("db", "current"), ("devices", "list"), ("profiles", "list")]
)
def test_bad_settings_are_one_line(  # type: ignore[no-untyped-def]
    run, tmp_path: Path, env: dict[str, str], argv: tuple[str, ...]
) -> None:
    env = dict(env)
    if env.get("ROLLOUT_HOME") == "FILE":
        (tmp_path / "a-file").write_text("not a folder")
        env["ROLLOUT_HOME"] = str(tmp_path / "a-file")
    elif env.get("ROLLOUT_HOME") == "UNWRITABLE":
        env["ROLLOUT_HOME"] = "/proc/rollout-home"
    code, out, err = run(*argv, **env)
    assert_refused(code, out, err, f"{' '.join(argv)} with {env}")
    name = next(iter(env))
    assert name in err or "ledger" in err, err
