"""Settings: every bad value is one line naming its variable; the home folder is fixed at load."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from rollout.config import SettingsError, get_settings, load_settings
from tests.support import settings_fixture as clean_environment  # noqa: F401 (autouse)


def _error(monkeypatch: pytest.MonkeyPatch, **env: str) -> str:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as info:
        load_settings()
    message = str(info.value)
    assert "\n" not in message and "Traceback" not in message
    return message


def test_a_word_where_a_number_belongs_is_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    message = _error(monkeypatch, ROLLOUT_MAX_BODY_BYTES="abc")
    assert message == "ROLLOUT_MAX_BODY_BYTES: 'abc' is not a whole number"


def test_get_settings_raises_the_same_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROLLOUT_BATCH_SIZE", "lots")
    with pytest.raises(SettingsError, match=r"^ROLLOUT_BATCH_SIZE: 'lots' is not a whole number$"):
        get_settings()


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("ROLLOUT_BATCH_SIZE", "0", "0 is less than 1"),
        ("ROLLOUT_BATCH_SIZE", "-5", "-5 is less than 1"),
        ("ROLLOUT_BATCH_SIZE", "1000000", "1000000 is more than 10000"),
        ("ROLLOUT_BATCH_SIZE", "2.5", "'2.5' is not a whole number"),
        ("ROLLOUT_MAX_PUSHES", "0", "0 is less than 1"),
        ("ROLLOUT_MAX_PUSHES", "64", "64 is more than 20"),
        ("ROLLOUT_MAX_BODY_BYTES", "0", "0 is less than 1024"),
        ("ROLLOUT_MAX_BODY_BYTES", "-1", "-1 is less than 1024"),
        (
            "ROLLOUT_MAX_BODY_BYTES",
            "9" * 5000,
            "'99999999999999999999999999999999'... is far too large",
        ),
        ("ROLLOUT_RESPONSE_TIMEOUT_S", "0", "0 must be more than 0 seconds"),
        ("ROLLOUT_RESPONSE_TIMEOUT_S", "-1", "-1 must be more than 0 seconds"),
        ("ROLLOUT_RESPONSE_TIMEOUT_S", "1e12", "1e+12 is more than 2.592e+06 seconds"),
        ("ROLLOUT_NOTNOW_BACKOFF_S", "0", "0 must be more than 0 seconds"),
        ("ROLLOUT_TICK_INTERVAL_S", "0", "0 must be more than 0 seconds"),
        ("ROLLOUT_SWEEP_INTERVAL_S", "-60", "-60 must be more than 0 seconds"),
        ("ROLLOUT_DISPATCH_GRACE_S", "0", "0 must be more than 0 seconds"),
        ("ROLLOUT_APNS_RATE_LIMIT", "-1", "-1 is less than 0 pushes per second"),
        ("ROLLOUT_TICK_INTERVAL_S", "nan", "'nan' is not a number"),
        ("ROLLOUT_TICK_INTERVAL_S", "inf", "'inf' is not a number"),
        ("ROLLOUT_RESPONSE_TIMEOUT_S", "1e999", "'1e999' is not a finite number"),
        ("ROLLOUT_RESPONSE_TIMEOUT_S", "4h", "'4h' is not a number"),
        ("ROLLOUT_FAST", "maybe", "'maybe' is not true or false (use true/false, 1/0, yes/no"),
        ("ROLLOUT_APNS_SANDBOX", "2", "'2' is not true or false"),
        ("ROLLOUT_RENEWAL_WINDOW_DAYS", "0", "0 must be more than 0 days"),
        ("ROLLOUT_RENEWAL_WINDOW_DAYS", "400", "400 is more than 365 days"),
        ("ROLLOUT_RENEWAL_WINDOWS", "com.example.*", "'com.example.*' is not pattern=days"),
        ("ROLLOUT_RENEWAL_WINDOWS", "com.a=45,com.b=soon", "com.b: 'soon' is not a number"),
        ("ROLLOUT_RENEWAL_ESCALATE_DAYS", "-1", "-1 is less than 0 days"),
        ("ROLLOUT_ALERT_REPEAT_HOURS", "0", "0 must be more than 0 hours"),
        ("ROLLOUT_RENEWAL_START", "sometimes", "'sometimes' is not true or false"),
        ("ROLLOUT_SMTP_PORT", "70000", "70000 is more than 65535"),
        ("ROLLOUT_APPLE_API", "itunes", "'itunes' is not one of app-store-connect, enterprise"),
        ("ROLLOUT_ALERT_WEBHOOK_URL", "ftp://hooks", "is not an http:// or https:// URL"),
        ("ROLLOUT_RENEWAL_STAGES", "25%,5%,100%", "each stage must reach further than the one"),
        ("ROLLOUT_RENEWAL_STAGES", "10%,50%", "the last stage is 50%; it must reach 100%"),
        ("ROLLOUT_RENEWAL_MIN_SUCCESS_RATE", "1.5", "1.5 is more than 1"),
    ],
)
def test_numbers_and_flags_outside_sensible_values_are_refused(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, message: str
) -> None:
    assert _error(monkeypatch, **{name: value}).startswith(f"{name}: {message}")


def test_every_bad_setting_is_named_on_the_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    message = _error(monkeypatch, ROLLOUT_BATCH_SIZE="0", ROLLOUT_IDENTITY_MODE="lax")
    assert message == (  # in the order the settings are declared
        "ROLLOUT_IDENTITY_MODE: 'lax' is not one of strict, bind-on-first-sight, off; "
        "ROLLOUT_BATCH_SIZE: 0 is less than 1"
    )


@pytest.mark.parametrize(
    ("given", "message"),
    [
        (
            {"ROLLOUT_APPLE_API": "enterprise"},
            "ROLLOUT_APPLE_ISSUER_ID: must be set when ROLLOUT_APPLE_API is",
        ),
        (
            {"ROLLOUT_ALERT_WEBHOOK_URL": "https://hooks.example/x?token=hunter2"},
            "ROLLOUT_ALERT_WEBHOOK_SECRET: must be set when ROLLOUT_ALERT_WEBHOOK_URL is",
        ),
        ({"ROLLOUT_SMTP_HOST": "mail"}, "ROLLOUT_SMTP_FROM: must be set when ROLLOUT_SMTP_HOST is"),
        (
            {"ROLLOUT_ALERT_WEBHOOK_SECRET": "hunter2"},
            "ROLLOUT_ALERT_WEBHOOK_SECRET: must be at least 16",
        ),
    ],
)
def test_settings_that_only_work_together_name_the_missing_one(
    monkeypatch: pytest.MonkeyPatch, given: dict[str, str], message: str
) -> None:
    error = _error(monkeypatch, **given)
    assert error.startswith(message) and "hunter2" not in error


def test_renewal_and_alert_settings_reach_their_policies(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "ROLLOUT_RENEWAL_WINDOW_DAYS": "21",
        "ROLLOUT_RENEWAL_WINDOWS": "com.example.kiosk=10, com.example.*=45",
        "ROLLOUT_RENEWAL_ESCALATE_DAYS": "3",
        "ROLLOUT_RENEWAL_START": "false",
        "ROLLOUT_RENEWAL_STAGES": "10,100%",
        "ROLLOUT_RENEWAL_MIN_SUCCESS_RATE": "0.75",
        "ROLLOUT_ALERT_REPEAT_HOURS": "6",
        "ROLLOUT_ALERT_WEBHOOK_URL": "https://hooks.example/rollout",
        "ROLLOUT_ALERT_WEBHOOK_SECRET": "s" * 32,
    }.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    policy = settings.renewal_policy()
    day = dt.timedelta(days=1)
    assert policy.window_for("ABCDE12345.com.example.kiosk") == 10 * day
    assert policy.window_for("ABCDE12345.com.example.field") == 45 * day
    assert policy.window_for("ABCDE12345.org.other") == 21 * day
    assert policy.escalate_within == 3 * day and policy.start is False
    assert [s.label() for s in policy.stages] == ["10 devices", "100%"]
    assert {s.gate.min_success_rate for s in policy.stages} == {0.75}
    alerts = settings.alert_policy()
    assert alerts.channels == ("webhook",) and alerts.repeat_every == dt.timedelta(hours=6)


def test_good_values_reach_the_engine_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "ROLLOUT_BATCH_SIZE": " 250 ",
        "ROLLOUT_MAX_PUSHES": "5",
        "ROLLOUT_RESPONSE_TIMEOUT_S": "90.5",
        "ROLLOUT_NOTNOW_BACKOFF_S": "2",
        "ROLLOUT_FAST": "yes",
    }.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    policy = settings.engine_policy()
    assert (policy.batch_size, policy.max_pushes) == (250, 5)
    assert policy.response_timeout == dt.timedelta(seconds=90.5)
    assert policy.notnow_backoff == dt.timedelta(seconds=2)
    assert settings.fast is True


def test_defaults_are_the_documented_ones(tmp_path: Path) -> None:
    settings = load_settings()
    assert settings.home == tmp_path.resolve() / "var"
    assert settings.database_url == "" and settings.max_body_bytes == 1024 * 1024
    assert (settings.batch_size, settings.max_pushes) == (500, 3)
    assert (settings.tick_interval_s, settings.sweep_interval_s) == (5.0, 60.0)
    assert settings.identity_mode == "strict" and settings.identity_sources == "mdm-signature"
    assert settings.apns_rate_limit == 0.0 and settings.fast is False


def test_an_empty_variable_means_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROLLOUT_BATCH_SIZE", "")
    monkeypatch.setenv("ROLLOUT_HOME", "")
    settings = load_settings()
    assert settings.batch_size == 500 and settings.home.name == "var"


# --- the ledger's database ----------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:///ledger.sqlite3",
        "sqlite+pysqlite:////var/lib/rollout/ledger.sqlite3",
        "postgresql://rollout@db.example/rollout",
        "postgresql+psycopg://rollout:pw@db.example:5432/rollout",
        "postgres://rollout@db.example/rollout",
    ],
)
def test_sqlite_and_postgresql_urls_are_accepted(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("ROLLOUT_DATABASE_URL", url)
    assert load_settings().resolved_database_url() == url


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("garbage", "not a database URL (use sqlite or postgresql, e.g. postgresql://"),
        ("mysql://root:hunter2@db/rollout", "backend 'mysql' is not supported (use sqlite or"),
        ("oracle://db", "backend 'oracle' is not supported"),
        (
            "postgresql+asyncpg://u:hunter2@db/rollout",
            "driver 'asyncpg' is not supported (use postgresql:// or postgresql+psycopg://)",
        ),
    ],
)
def test_other_databases_are_refused_naming_what_is_supported(
    monkeypatch: pytest.MonkeyPatch, url: str, message: str
) -> None:
    error = _error(monkeypatch, ROLLOUT_DATABASE_URL=url)
    assert error.startswith(f"ROLLOUT_DATABASE_URL: {message}")
    assert "hunter2" not in error  # a URL may carry a password: it is never echoed


def test_ledger_location_names_the_file_or_the_server_without_its_password(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    settings = load_settings()
    assert settings.ledger_location() == f"SQLite file {tmp_path.resolve()}/var/rollout.sqlite3"
    assert settings.embedded_ledger_path() == tmp_path.resolve() / "var" / "rollout.sqlite3"
    monkeypatch.setenv("ROLLOUT_DATABASE_URL", "postgresql://rollout:hunter2@db/rollout")
    settings = load_settings()
    assert settings.ledger_location() == "postgresql://rollout:***@db/rollout"
    assert settings.embedded_ledger_path() is None


# --- device identity ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "kept"), [("strict", "strict"), (" Bind-On-First-Sight ", "bind-on-first-sight")]
)
def test_identity_modes_are_checked_and_kept_in_canonical_form(
    monkeypatch: pytest.MonkeyPatch, mode: str, kept: str
) -> None:
    monkeypatch.setenv("ROLLOUT_IDENTITY_MODE", mode)
    assert load_settings().identity_mode == kept


@pytest.mark.parametrize(
    ("sources", "result"),
    [
        ("client-cert, mdm-signature", "client-cert,mdm-signature"),
        ("MDM-Signature,mdm-signature", "mdm-signature"),
        ("mdm-signature,,", "mdm-signature"),
    ],
)
def test_identity_sources_are_checked_and_kept_in_order(
    monkeypatch: pytest.MonkeyPatch, sources: str, result: str
) -> None:
    monkeypatch.setenv("ROLLOUT_IDENTITY_SOURCES", sources)
    assert load_settings().identity_sources == result


@pytest.mark.parametrize(
    ("sources", "message"),
    [
        ("mdm-signature,header", "'header' is not one of mdm-signature, client-cert"),
        (" , ", "names no source; use one or more of mdm-signature, client-cert"),
    ],
)
def test_unknown_identity_sources_are_refused(
    monkeypatch: pytest.MonkeyPatch, sources: str, message: str
) -> None:
    assert _error(monkeypatch, ROLLOUT_IDENTITY_SOURCES=sources) == (
        f"ROLLOUT_IDENTITY_SOURCES: {message}"
    )


# --- the home folder ----------------------------------------------------------------------


def test_home_is_resolved_once_so_a_later_change_of_folder_keeps_the_ledger(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("ROLLOUT_HOME", "state/../rollout-home")
    settings = load_settings()
    assert settings.home == tmp_path.resolve() / "rollout-home"
    url = settings.resolved_database_url()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert settings.resolved_database_url() == url
    assert (
        settings.ledger_location()
        == f"SQLite file {tmp_path.resolve()}/rollout-home/rollout.sqlite3"
    )


def test_home_with_a_tilde_is_under_the_users_home(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROLLOUT_HOME", "~/rollout")
    assert load_settings().home == Path.home().resolve() / "rollout"


def test_ensure_home_creates_the_folder(tmp_path: Path) -> None:
    home = tmp_path / "a" / "b"
    assert load_settings(home=home).ensure_home() == home.resolve()
    assert home.is_dir()
    assert load_settings(home=home).ensure_home() == home.resolve()  # again: nothing to do


def test_ensure_home_refuses_a_file(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.write_text("not a folder")
    with pytest.raises(SettingsError) as info:
        load_settings(home=home).ensure_home()
    assert str(info.value) == f"ROLLOUT_HOME: {home.resolve()} is a file, not a folder"


def test_ensure_home_refuses_a_folder_that_cannot_be_made(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    home = blocker / "home"
    with pytest.raises(SettingsError) as info:
        load_settings(home=home).ensure_home()
    assert str(info.value) == f"ROLLOUT_HOME: cannot create {home.resolve()} (Not a directory)"


def test_ensure_home_refuses_a_folder_it_cannot_write_in() -> None:
    # sysfs takes no new files, not even from root (for whom permission bits do not count)
    settings = load_settings(home=Path("/sys"))
    if not Path("/sys").is_dir():
        pytest.skip("no /sys here")
    with pytest.raises(SettingsError, match=r"^ROLLOUT_HOME: cannot write in /sys \("):
        settings.ensure_home()


def test_the_deployment_env_example_is_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    example = Path(__file__).parents[1] / "deploy" / "rollout.env.example"
    for line in example.read_text().splitlines():
        name, sep, value = line.partition("=")
        if sep and not line.lstrip().startswith("#"):
            monkeypatch.setenv(name.strip(), value.strip())
    settings = load_settings()
    assert settings.resolved_database_url().startswith("postgresql")


# --- the config file ----------------------------------------------------------------------


def _config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, text: str) -> Path:
    path = tmp_path / "rollout.toml"
    path.write_text(text)
    monkeypatch.setenv("ROLLOUT_CONFIG_FILE", str(path))
    return path


def test_a_config_file_sets_settings_and_the_environment_wins(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _config(
        monkeypatch,
        tmp_path,
        'database_url = "postgresql://rollout@db/rollout"\n'
        "batch_size = 250\n"
        "fast = true\n"
        'renewal_stages = ["10%", "100%"]\n'
        "max_pushes = 4\n"
        "[renewal]\n"
        "window_days = 21.5\n",
    )
    monkeypatch.setenv("ROLLOUT_MAX_PUSHES", "6")
    settings = load_settings()
    assert settings.resolved_database_url() == "postgresql://rollout@db/rollout"
    assert (settings.batch_size, settings.fast, settings.max_pushes) == (250, True, 6)
    assert settings.renewal_stages == "10%,100%" and settings.renewal_window_days == 21.5
    assert settings.engine_policy().batch_size == 250  # set in the file: set explicitly
    assert load_settings(batch_size=9).batch_size == 9  # and the caller wins over both


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("bach_size = 5\n", "bach_size: unknown key (did you mean batch_size?)"),
        ("[renewal]\nwindow = 5\n", "renewal.window: unknown key (did you mean renewal_window"),
        ("ROLLOUT_FAST = true\n", "ROLLOUT_FAST: unknown key (write it without the ROLLOUT_"),
        ("batch_size = 0\n", "batch_size: 0 is less than 1"),
        ('batch_size = "lots"\n', "batch_size: 'lots' is not a whole number"),
        ("smtp_username = 5\n", "smtp_username: input should be a valid string"),
        ("batch_size = \n", "not valid TOML (Invalid value (at line 1, column 14))"),
    ],
)
def test_a_bad_config_file_is_one_line_naming_the_file_and_key(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, text: str, message: str
) -> None:
    path = _config(monkeypatch, tmp_path, text)
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert str(info.value).startswith(f"{path}: {message}")
    assert "\n" not in str(info.value)


def test_a_missing_config_file_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ROLLOUT_CONFIG_FILE", str(tmp_path / "absent.toml"))
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert str(info.value) == (
        f"ROLLOUT_CONFIG_FILE: cannot read {tmp_path / 'absent.toml'} (No such file or directory)"
    )


def test_a_secret_in_the_config_file_can_name_its_own_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    secret = tmp_path / "pepper"
    secret.write_text("pepper-from-a-secret-file\n")
    path = _config(monkeypatch, tmp_path, f'token_pepper_file = "{secret}"\n')
    assert load_settings().token_pepper == "pepper-from-a-secret-file"
    path.write_text(f'token_pepper = "pepper-inline-in-the-file"\ntoken_pepper_file = "{secret}"\n')
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert str(info.value) == f"{path}: token_pepper and token_pepper_file are both set; use one"
    path.write_text('token_pepper = "short"\n')
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert str(info.value) == f"{path}: token_pepper: must be at least 16 characters (or empty)"


# --- the README documents every setting ----------------------------------------------------


def test_the_readme_configuration_table_lists_every_setting() -> None:
    from rollout.config import FILE_SETTINGS, Settings

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    section = readme.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `ROLLOUT_")]
    documented = " ".join(row.split(" | ")[0] for row in rows)
    missing = [
        f"ROLLOUT_{name.upper()}"
        for name in Settings.model_fields
        if f"`ROLLOUT_{name.upper()}`" not in documented
    ]
    assert not missing, f"settings missing from README's configuration table: {missing}"
    assert "ROLLOUT_CONFIG_FILE" in section and "_FILE`" in section
    for name in FILE_SETTINGS:  # each secret's row says it reads ROLLOUT_<NAME>_FILE too
        assert any(f"`ROLLOUT_{name.upper()}` (`_FILE`)" in row for row in rows), name
