"""The endpoint's guard settings: defaults a public endpoint needs, every bad value one line
naming its variable, and the values reaching the app and its uvicorn configuration."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from rollout.config import SettingsError, get_settings, load_settings
from rollout.ledger import Ledger, db
from rollout.web.app import RolloutApp
from rollout.web.server import uvicorn_config


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    for name in list(os.environ):
        if name.startswith("ROLLOUT_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("ROLLOUT_HOME", str(tmp_path))
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_defaults() -> None:
    settings = load_settings()
    assert (settings.header_timeout_s, settings.body_timeout_s) == (15.0, 30.0)
    assert settings.max_connections == 1000
    assert (settings.refusal_window_s, settings.refusal_max_sources) == (60.0, 200)
    assert settings.require_udid_in_cert is False


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("ROLLOUT_HEADER_TIMEOUT_S", "0", "0 must be more than 0 seconds"),
        ("ROLLOUT_HEADER_TIMEOUT_S", "7200", "7200 is more than 3600 seconds"),
        ("ROLLOUT_HEADER_TIMEOUT_S", "soon", "'soon' is not a number"),
        ("ROLLOUT_BODY_TIMEOUT_S", "-1", "-1 must be more than 0 seconds"),
        ("ROLLOUT_BODY_TIMEOUT_S", "nan", "'nan' is not a number"),
        ("ROLLOUT_MAX_CONNECTIONS", "0", "0 is less than 1"),
        ("ROLLOUT_MAX_CONNECTIONS", "200000", "200000 is more than 100000"),
        ("ROLLOUT_MAX_CONNECTIONS", "1e3", "'1e3' is not a whole number"),
        ("ROLLOUT_REFUSAL_WINDOW_S", "0", "0 must be more than 0 seconds"),
        ("ROLLOUT_REFUSAL_WINDOW_S", "1e9", "1e+09 is more than 86400 seconds"),
        ("ROLLOUT_REFUSAL_MAX_SOURCES", "0", "0 is less than 1"),
        ("ROLLOUT_REFUSAL_MAX_SOURCES", "many", "'many' is not a whole number"),
        ("ROLLOUT_REQUIRE_UDID_IN_CERT", "sometimes", "'sometimes' is not true or false"),
        ("ROLLOUT_API_TOKEN", "short-secret", "must be at least 24 printable characters"),
        ("ROLLOUT_API_TOKEN", "a token with spaces in it, long", "must be at least 24"),
    ],
)
def test_bad_values_are_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, message: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as info:
        load_settings()
    text = str(info.value)
    assert "\n" not in text
    assert text.startswith(f"{name}: {message}")
    if name == "ROLLOUT_API_TOKEN":
        assert value not in text  # a secret is never quoted back


def test_values_reach_the_app_and_the_server(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name, value in {
        "ROLLOUT_HEADER_TIMEOUT_S": "4.5",
        "ROLLOUT_BODY_TIMEOUT_S": "9",
        "ROLLOUT_MAX_CONNECTIONS": "77",
        "ROLLOUT_REFUSAL_WINDOW_S": "120",
        "ROLLOUT_REFUSAL_MAX_SOURCES": "5",
        "ROLLOUT_REQUIRE_UDID_IN_CERT": "yes",
        "ROLLOUT_IDENTITY_MODE": "off",
    }.items():
        monkeypatch.setenv(name, value)
    url = f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
    db.upgrade(url)
    ledger = Ledger.open(url)
    try:
        app = RolloutApp(ledger, load_settings())
        assert app.mdm.config.body_timeout_s == 9.0 and app.mdm.config.require_udid_in_cert
        assert app.refusals.limits.window == dt.timedelta(seconds=120)
        assert app.refusals.limits.max_sources == 5
        protocol = uvicorn_config(app, host="127.0.0.1", port=1).http
        assert isinstance(protocol, type)
        assert protocol.limits.header_timeout_s == 4.5  # type: ignore[attr-defined]
        assert protocol.limits.max_connections == 77  # type: ignore[attr-defined]
    finally:
        ledger.dispose()
