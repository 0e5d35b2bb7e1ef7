"""Secrets: each one can come from a file (``ROLLOUT_<NAME>_FILE``), and no secret's value shows
in an error, in ``repr(settings)``, in the web app's start-up log or in its API answers."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import httpx
import pytest

from rollout.config import (
    FILE_SETTINGS,
    SECRET_SETTINGS,
    SettingsError,
    get_settings,
    load_settings,
    setting_variables,
)
from rollout.ledger import Ledger, db
from rollout.web.app import create_app
from rollout.web.server import BackgroundServer
from tests.support import settings_fixture as clean_environment  # noqa: F401 (autouse)

# one distinct value per secret, each valid for its setting
API_TOKEN = "api-token-0f3c9d1e7b2a4c68a5e1"
PEPPER = "pepper-9b7e3a1c5d2f4e60"
WEBHOOK_SECRET = "webhook-secret-4d2b8e6f1a3c"
SMTP_PASSWORD = "smtp-password-7c1e5a9d"
APNS_PASSWORD = "apns-password-3e8b2d6f"
DB_PASSWORD = "db-password-5a9c1e7b"
LEDGER_KEYS = "Zm9yLXRlc3RzLW9ubHktbm90LWEtcmVhbC1rZXktLS0="  # 32 bytes, base64
SECRETS = {
    "ROLLOUT_API_TOKEN": API_TOKEN,
    "ROLLOUT_TOKEN_PEPPER": PEPPER,
    "ROLLOUT_ALERT_WEBHOOK_SECRET": WEBHOOK_SECRET,
    "ROLLOUT_SMTP_PASSWORD": SMTP_PASSWORD,
    "ROLLOUT_APNS_PASSWORD": APNS_PASSWORD,
    "ROLLOUT_DATABASE_PASSWORD": DB_PASSWORD,
    "ROLLOUT_LEDGER_KEYS": LEDGER_KEYS,
    "ROLLOUT_NANOMDM_API_KEY": "nanomdm-api-key-4d2f8a6c",
    "ROLLOUT_MICROMDM_API_KEY": "micromdm-api-key-6e0a2c8b",
    "ROLLOUT_WEBHOOK_SECRET": "mdm-webhook-secret-9b3e1f7a",
}


def secret_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every secret as a container secret: a file with a trailing newline."""
    folder = tmp_path / "secrets"
    folder.mkdir(exist_ok=True)
    for name, value in SECRETS.items():
        path = folder / name.lower()
        path.write_text(value + "\n")
        monkeypatch.setenv(f"{name}_FILE", str(path))
    monkeypatch.setenv("ROLLOUT_DATABASE_URL", "postgresql://rollout@db.example/rollout")
    monkeypatch.setenv("ROLLOUT_ALERT_WEBHOOK_URL", "https://hooks.example/rollout")


def assert_no_secret(text: str) -> None:
    for name, value in SECRETS.items():
        assert value not in text, f"{name}'s value shows"


def test_each_secret_is_read_from_its_file_without_the_trailing_newline(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    secret_files(tmp_path, monkeypatch)
    settings = load_settings()
    assert settings.api_token == API_TOKEN and settings.token_pepper == PEPPER
    assert settings.alert_webhook_secret == WEBHOOK_SECRET
    assert settings.smtp_password == SMTP_PASSWORD and settings.apns_password == APNS_PASSWORD
    assert settings.database_password == DB_PASSWORD and settings.ledger_keys == LEDGER_KEYS
    assert settings.sealer().sealing
    # the password is merged into the ledger's URL, and shown nowhere
    assert settings.resolved_database_url() == (
        f"postgresql://rollout:{DB_PASSWORD}@db.example/rollout"
    )
    assert settings.ledger_location() == "postgresql://rollout:***@db.example/rollout"


def test_a_url_can_come_from_a_file_too(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    url = tmp_path / "database_url"
    url.write_text(f"postgresql://rollout:{DB_PASSWORD}@db/rollout\r\n")
    monkeypatch.setenv("ROLLOUT_DATABASE_URL_FILE", str(url))
    settings = load_settings()
    assert settings.resolved_database_url() == f"postgresql://rollout:{DB_PASSWORD}@db/rollout"
    assert DB_PASSWORD not in repr(settings)


def test_every_secret_setting_reads_a_file_variable() -> None:
    variables = setting_variables()
    for field in FILE_SETTINGS:
        assert f"ROLLOUT_{field.upper()}_FILE" in variables
    assert {"ROLLOUT_CONFIG_FILE", "ROLLOUT_API_TOKEN", "ROLLOUT_BATCH_SIZE"} <= variables
    assert SECRET_SETTINGS <= FILE_SETTINGS


def test_a_secret_given_both_ways_is_refused_naming_both(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "token"
    path.write_text(API_TOKEN)
    monkeypatch.setenv("ROLLOUT_API_TOKEN_FILE", str(path))
    monkeypatch.setenv("ROLLOUT_API_TOKEN", "another-token-of-24-characters")
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert str(info.value) == "ROLLOUT_API_TOKEN and ROLLOUT_API_TOKEN_FILE are both set; use one"


def test_a_missing_secret_file_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ROLLOUT_TOKEN_PEPPER_FILE", str(tmp_path / "absent"))
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert str(info.value) == (
        f"ROLLOUT_TOKEN_PEPPER_FILE: cannot read {tmp_path / 'absent'} (No such file or directory)"
    )


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("ROLLOUT_API_TOKEN", "short one", "must be at least 24 printable characters"),
        ("ROLLOUT_TOKEN_PEPPER", "tiny", "must be at least 16 characters"),
        ("ROLLOUT_ALERT_WEBHOOK_SECRET", "tiny", "must be at least 16 characters"),
        ("ROLLOUT_LEDGER_KEYS", f"{LEDGER_KEYS},c2hvcnQ=", "key 2 is 5 bytes; a ledger key is 32"),
    ],
)
def test_a_bad_secret_in_a_file_names_the_file_not_the_value(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, name: str, value: str, message: str
) -> None:
    path = tmp_path / "secret"
    path.write_text(value + "\n")
    monkeypatch.setenv(f"{name}_FILE", str(path))
    with pytest.raises(SettingsError) as info:
        load_settings()
    if name == "ROLLOUT_LEDGER_KEYS":
        assert str(info.value).startswith(f"{name}_FILE ({path}): {message}")
    else:
        assert str(info.value) == f"{name}_FILE ({path}): {message}" + (
            " without spaces (or empty)" if name == "ROLLOUT_API_TOKEN" else " (or empty)"
        )
    assert value not in str(info.value) and LEDGER_KEYS not in str(info.value)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("", "ROLLOUT_DATABASE_PASSWORD: needs ROLLOUT_DATABASE_URL (a server URL, no password)"),
        ("sqlite:///ledger.sqlite3", "ROLLOUT_DATABASE_PASSWORD: a SQLite ledger has no password"),
        (
            "postgresql://u:other-password@db/rollout",
            "ROLLOUT_DATABASE_PASSWORD: ROLLOUT_DATABASE_URL holds a password too; give one",
        ),
    ],
)
def test_a_database_password_needs_a_server_url_without_one(
    monkeypatch: pytest.MonkeyPatch, url: str, message: str
) -> None:
    monkeypatch.setenv("ROLLOUT_DATABASE_PASSWORD", DB_PASSWORD)
    if url:
        monkeypatch.setenv("ROLLOUT_DATABASE_URL", url)
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert str(info.value) == message
    assert "other-password" not in str(info.value)


def test_no_secret_shows_in_errors_repr_logs_or_api_answers(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    secret_files(tmp_path, monkeypatch)
    # a bad setting next to every secret: the one line names it, and no secret
    monkeypatch.setenv("ROLLOUT_BATCH_SIZE", "0")
    monkeypatch.setenv("ROLLOUT_SMTP_HOST", "mail.example")
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert "ROLLOUT_BATCH_SIZE: 0 is less than 1" in str(info.value)
    assert_no_secret(str(info.value))
    # each secret refused itself (too short, a URL that is not one): never quoted back
    for name, bad in {
        "ROLLOUT_API_TOKEN": API_TOKEN[:20],
        "ROLLOUT_TOKEN_PEPPER": PEPPER[:10],
        "ROLLOUT_ALERT_WEBHOOK_SECRET": WEBHOOK_SECRET[:10],
        "ROLLOUT_LEDGER_KEYS": LEDGER_KEYS[:20],
    }.items():
        monkeypatch.delenv(f"{name}_FILE")
        monkeypatch.setenv(name, bad)
        with pytest.raises(SettingsError) as info:
            load_settings()
        assert name in str(info.value) and bad not in str(info.value)
        monkeypatch.delenv(name)
    with pytest.raises(SettingsError) as info:
        load_settings(database_url=f"mysql://rollout:{DB_PASSWORD}@db/rollout")
    assert "ROLLOUT_DATABASE_URL: backend 'mysql'" in str(info.value)
    assert_no_secret(str(info.value))

    # the settings as the web app reads them, with the ledger on SQLite
    for name in list(os.environ):
        if name.startswith("ROLLOUT_"):
            monkeypatch.delenv(name)
    secret_files(tmp_path, monkeypatch)
    settings = get_settings()
    url = f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
    assert_no_secret(repr(settings))
    assert_no_secret(str(settings))
    assert "<secret>" in repr(settings)

    db.upgrade(url)
    ledger = Ledger.open(url)
    caplog.set_level(logging.DEBUG)
    server = BackgroundServer(create_app(settings, ledger), log_level="debug").start()
    try:
        with httpx.Client(base_url=server.base_url, timeout=10) as client:
            health = client.get("/healthz")
            whoami = client.get("/api/v1/whoami", headers={"Authorization": f"Bearer {API_TOKEN}"})
            refused = client.get("/api/v1/whoami", headers={"Authorization": "Bearer nope"})
    finally:
        server.stop()
        ledger.dispose()
    assert health.status_code == 200 and whoami.status_code == 200
    assert whoami.json() == {"actor": "api", "role": "admin"}
    for answer in (health, whoami, refused):
        assert_no_secret(answer.text)
        assert_no_secret(str(answer.headers))
    assert caplog.records  # the start-up said something, and nothing secret
    assert_no_secret(caplog.text)
    assert_no_secret("\n".join(str(r.args) for r in caplog.records))
