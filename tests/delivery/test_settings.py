"""The delivery settings: one backend per deployment, and what NanoMDM needs named when
it is missing."""

from __future__ import annotations

import pytest

from rollout.config import SettingsError, load_settings
from tests.support import settings_fixture as clean_environment  # noqa: F401 (autouse)

NANOMDM = {
    "ROLLOUT_DELIVERY": "nanomdm",
    "ROLLOUT_NANOMDM_URL": "https://nanomdm.example.com",
    "ROLLOUT_NANOMDM_API_KEY": "an-api-key",
    "ROLLOUT_WEBHOOK_SECRET": "a-webhook-secret-long-enough",
}


def _set(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)


def test_the_builtin_delivery_is_the_default() -> None:
    settings = load_settings()
    assert settings.delivery == "builtin" and settings.nanomdm_push == "nanomdm"


def test_nanomdm_with_everything_it_needs(monkeypatch: pytest.MonkeyPatch) -> None:
    _set(monkeypatch, {**NANOMDM, "ROLLOUT_DELIVERY": " NanoMDM "})
    settings = load_settings()
    assert settings.delivery == "nanomdm" and settings.nanomdm_url == NANOMDM["ROLLOUT_NANOMDM_URL"]
    assert "an-api-key" not in repr(settings)


@pytest.mark.parametrize("missing", ["ROLLOUT_NANOMDM_URL", "ROLLOUT_NANOMDM_API_KEY",
                                     "ROLLOUT_WEBHOOK_SECRET"])  # fmt: skip
def test_nanomdm_names_the_setting_it_lacks(monkeypatch: pytest.MonkeyPatch, missing: str) -> None:
    _set(monkeypatch, {k: v for k, v in NANOMDM.items() if k != missing})
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert str(info.value) == f"{missing}: must be set when ROLLOUT_DELIVERY is nanomdm"


def test_micromdm_needs_its_own_url_and_key(monkeypatch: pytest.MonkeyPatch) -> None:
    _set(monkeypatch, {**NANOMDM, "ROLLOUT_DELIVERY": "micromdm"})
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert str(info.value) == "ROLLOUT_MICROMDM_URL: must be set when ROLLOUT_DELIVERY is micromdm"
    monkeypatch.setenv("ROLLOUT_MICROMDM_URL", "https://micromdm.example.com")
    monkeypatch.setenv("ROLLOUT_MICROMDM_API_KEY", "a-micromdm-key")
    settings = load_settings()
    assert settings.delivery == "micromdm" and "a-micromdm-key" not in repr(settings)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("ROLLOUT_DELIVERY", "jamf", "'jamf' is not one of builtin, nanomdm, micromdm"),
        ("ROLLOUT_NANOMDM_PUSH", "apns", "'apns' is not one of nanomdm, rollout"),
        ("ROLLOUT_NANOMDM_URL", "nanomdm:9000", "is not an http:// or https:// URL"),
        ("ROLLOUT_MICROMDM_URL", "micromdm:8080", "is not an http:// or https:// URL"),
        ("ROLLOUT_WEBHOOK_SECRET", "short", "must be at least 16 characters (or empty)"),
    ],
)
def test_a_bad_delivery_setting_is_one_line(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, message: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert str(info.value) == f"{name}: {message}"
