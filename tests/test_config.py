"""Tests for bot.core.config: settings from the environment and .env, validation, error messages."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from bot.core.config import ENV_PREFIX, ConfigError, Settings, env_var, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No SINCHBOT_* variables and an empty working directory (so no stray .env)."""
    for name in list(os.environ):
        if name.upper().startswith(ENV_PREFIX):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write_env(directory: Path, text: str) -> None:
    (directory / ".env").write_text(text, encoding="utf-8")


def config_error(**overrides: object) -> str:
    with pytest.raises(ConfigError) as excinfo:
        load_settings(**overrides)
    message = str(excinfo.value)
    assert "\n" not in message
    assert message.startswith("invalid configuration: ")
    return message


# ---------------------------------------------------------------------------------------------
# Defaults and sources
# ---------------------------------------------------------------------------------------------


def test_defaults() -> None:
    settings = load_settings()
    assert settings.service == "messagemedia"
    assert settings.region == "eu"
    assert settings.base_url is None
    assert settings.api_key is None
    assert settings.api_secret is None
    assert settings.auth == "basic"
    assert settings.hmac_algorithm == "sha256"
    assert settings.account is None
    assert settings.redis_url is None
    assert settings.data_dir == Path(".sinchbot")
    assert settings.throttle_calls == 100
    assert settings.throttle_period == 60.0
    assert settings.connect_timeout == 5.0
    assert settings.request_timeout == 30.0
    assert settings.default_region == "AU"
    assert settings.rcs_path == "/v1/int-power-automate/send-message-v2"
    assert settings.webhook_secret is None
    assert settings.webhook_public_key is None
    assert settings.api_token is None
    assert settings.log_level == "INFO"
    assert settings.log_format == "console"
    assert settings.api_base_url == "https://api.messagemedia.com"
    assert not settings.has_credentials


def test_every_field_is_documented() -> None:
    for name, field in Settings.model_fields.items():
        assert field.description, name


def test_env_var_name() -> None:
    assert env_var("service") == "SINCHBOT_SERVICE"
    assert env_var("hmac_algorithm") == "SINCHBOT_HMAC_ALGORITHM"


def test_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {
        "SINCHBOT_SERVICE": "engage",
        "SINCHBOT_REGION": "apac",
        "SINCHBOT_API_KEY": "key-123",
        "SINCHBOT_API_SECRET": "secret-456",
        "SINCHBOT_AUTH": "hmac",
        "SINCHBOT_HMAC_ALGORITHM": "sha1",
        "SINCHBOT_ACCOUNT": "sub-account-7",
        "SINCHBOT_REDIS_URL": "redis://localhost:6380/1",
        "SINCHBOT_DATA_DIR": "/var/lib/sinchbot",
        "SINCHBOT_THROTTLE_CALLS": "10",
        "SINCHBOT_THROTTLE_PERIOD": "1.5",
        "SINCHBOT_CONNECT_TIMEOUT": "2",
        "SINCHBOT_REQUEST_TIMEOUT": "12.5",
        "SINCHBOT_DEFAULT_REGION": "nz",
        "SINCHBOT_RCS_PATH": "/v1/rcs",
        "SINCHBOT_WEBHOOK_SECRET": "whsec",
        "SINCHBOT_WEBHOOK_PUBLIC_KEY": "-----BEGIN PUBLIC KEY-----",
        "SINCHBOT_API_TOKEN": "tok",
        "SINCHBOT_LOG_LEVEL": "debug",
        "SINCHBOT_LOG_FORMAT": "json",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    assert settings.service == "engage"
    assert settings.region == "apac"
    assert settings.api_key == SecretStr("key-123")
    assert settings.api_secret is not None
    assert settings.api_secret.get_secret_value() == "secret-456"
    assert settings.auth == "hmac"
    assert settings.hmac_algorithm == "sha1"
    assert settings.account == "sub-account-7"
    assert settings.redis_url == "redis://localhost:6380/1"
    assert settings.data_dir == Path("/var/lib/sinchbot")
    assert settings.throttle_calls == 10
    assert settings.throttle_period == 1.5
    assert settings.connect_timeout == 2.0
    assert settings.request_timeout == 12.5
    assert settings.default_region == "NZ"
    assert settings.rcs_path == "/v1/rcs"
    assert settings.webhook_secret == SecretStr("whsec")
    assert settings.webhook_public_key == "-----BEGIN PUBLIC KEY-----"
    assert settings.api_token == SecretStr("tok")
    assert settings.log_level == "DEBUG"
    assert settings.log_format == "json"
    assert settings.has_credentials
    assert settings.api_base_url == "https://au.app.api.sinch.com"


def test_variable_names_are_case_insensitive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("sinchbot_service", "engage")
    assert load_settings().service == "engage"


@pytest.mark.parametrize(
    ("name", "raw", "field", "expected"),
    [
        ("SINCHBOT_SERVICE", "ENGAGE", "service", "engage"),
        ("SINCHBOT_SERVICE", "MessageMedia", "service", "messagemedia"),
        ("SINCHBOT_REGION", "APAC", "region", "apac"),
        ("SINCHBOT_AUTH", " HMAC ", "auth", "hmac"),
        ("SINCHBOT_HMAC_ALGORITHM", "SHA1", "hmac_algorithm", "sha1"),
        ("SINCHBOT_LOG_FORMAT", "JSON", "log_format", "json"),
        ("SINCHBOT_LOG_LEVEL", "warn", "log_level", "WARNING"),
        ("SINCHBOT_LOG_LEVEL", "Error", "log_level", "ERROR"),
        ("SINCHBOT_DEFAULT_REGION", "gb", "default_region", "GB"),
    ],
)
def test_choices_are_case_insensitive(
    monkeypatch: pytest.MonkeyPatch, name: str, raw: str, field: str, expected: str
) -> None:
    monkeypatch.setenv(name, raw)
    assert getattr(load_settings(), field) == expected


def test_dotenv_file(clean_env: Path) -> None:
    write_env(
        clean_env,
        "# shared .env\n"
        "OTHER_TOOL_SETTING=whatever\n"
        "SINCHBOT_SERVICE=Engage\n"
        "SINCHBOT_API_KEY=from-dotenv\n"
        "SINCHBOT_API_SECRET='quoted secret'\n"
        "SINCHBOT_THROTTLE_CALLS=5\n",
    )
    settings = load_settings()
    assert settings.service == "engage"
    assert settings.api_key == SecretStr("from-dotenv")
    assert settings.api_secret == SecretStr("quoted secret")
    assert settings.throttle_calls == 5


def test_precedence_overrides_then_env_then_dotenv(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_env(clean_env, "SINCHBOT_SERVICE=engage\nSINCHBOT_REGION=apac\nSINCHBOT_ACCOUNT=a\n")
    monkeypatch.setenv("SINCHBOT_REGION", "eu")
    monkeypatch.setenv("SINCHBOT_ACCOUNT", "b")
    settings = load_settings(account="c")
    assert (settings.service, settings.region, settings.account) == ("engage", "eu", "c")


def test_dotenv_can_be_disabled(clean_env: Path) -> None:
    write_env(clean_env, "SINCHBOT_SERVICE=engage\n")
    assert load_settings(_env_file=None).service == "messagemedia"


def test_empty_variables_count_as_unset(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SINCHBOT_BASE_URL", "")
    monkeypatch.setenv("SINCHBOT_API_KEY", "")
    write_env(clean_env, "SINCHBOT_SERVICE=\n")
    settings = load_settings()
    assert settings.base_url is None
    assert settings.api_key is None
    assert settings.service == "messagemedia"


def test_unknown_prefixed_variables_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SINCHBOT_NOT_A_SETTING", "1")
    assert load_settings().service == "messagemedia"


def test_unknown_override_is_an_error() -> None:
    message = config_error(servce="engage")
    assert message == "invalid configuration: unknown setting(s) 'servce'"


def test_settings_are_frozen() -> None:
    settings = load_settings()
    with pytest.raises(ValidationError):
        settings.service = "engage"  # type: ignore[misc]


# ---------------------------------------------------------------------------------------------
# Derived values
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({}, "https://api.messagemedia.com"),
        ({"region": "apac"}, "https://api.messagemedia.com"),
        ({"service": "engage"}, "https://eu.app.api.sinch.com"),
        ({"service": "engage", "region": "eu"}, "https://eu.app.api.sinch.com"),
        ({"service": "engage", "region": "apac"}, "https://au.app.api.sinch.com"),
        ({"base_url": "http://127.0.0.1:8080"}, "http://127.0.0.1:8080"),
        ({"service": "engage", "base_url": "https://sandbox.test/"}, "https://sandbox.test"),
        ({"base_url": "https://proxy.test/sinch//"}, "https://proxy.test/sinch"),
    ],
)
def test_api_base_url(overrides: dict[str, str], expected: str) -> None:
    assert load_settings(**overrides).api_base_url == expected


def test_base_url_trailing_slash_is_stripped() -> None:
    assert load_settings(base_url=" https://api.test/ ").base_url == "https://api.test"


@pytest.mark.parametrize(
    ("api_key", "api_secret", "expected"),
    [
        (None, None, False),
        ("k", None, False),
        (None, "s", False),
        ("", "s", False),
        ("k", "", False),
        ("k", "s", True),
    ],
)
def test_has_credentials(api_key: str | None, api_secret: str | None, expected: bool) -> None:
    settings = load_settings(api_key=api_key, api_secret=api_secret)
    assert settings.has_credentials is expected


def test_log_level_number() -> None:
    assert load_settings(log_level="warning").log_level_number == 30


def test_data_dir_expands_user(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("SINCHBOT_DATA_DIR", "~/state")
    assert load_settings().data_dir == tmp_path / "state"


# ---------------------------------------------------------------------------------------------
# Secrets
# ---------------------------------------------------------------------------------------------


def test_secrets_never_appear_in_repr_or_str(monkeypatch: pytest.MonkeyPatch) -> None:
    secrets = {
        "SINCHBOT_API_KEY": "key-AAAA1111",
        "SINCHBOT_API_SECRET": "secret-BBBB2222",
        "SINCHBOT_WEBHOOK_SECRET": "webhook-CCCC3333",
        "SINCHBOT_API_TOKEN": "token-DDDD4444",
    }
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    shown = [repr(settings), str(settings), repr(settings.model_dump()), settings.model_dump_json()]
    for text in shown:
        for value in secrets.values():
            assert value not in text
    assert "**********" in repr(settings)
    assert settings.api_token is not None
    assert settings.api_token.get_secret_value() == "token-DDDD4444"


def test_secret_values_are_not_echoed_in_errors() -> None:
    message = config_error(api_key=12345678, api_token=["tok-EEEE5555"])
    assert "SINCHBOT_API_KEY: Input should be a valid string" in message
    assert "SINCHBOT_API_TOKEN" in message
    assert "12345678" not in message
    assert "tok-EEEE5555" not in message


# ---------------------------------------------------------------------------------------------
# Validation errors
# ---------------------------------------------------------------------------------------------


def test_invalid_service_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SINCHBOT_SERVICE", "foo")
    with pytest.raises(ConfigError) as excinfo:
        load_settings()
    assert str(excinfo.value) == (
        "invalid configuration: SINCHBOT_SERVICE: "
        "Input should be 'messagemedia' or 'engage' (got 'foo')"
    )
    assert excinfo.value.__cause__ is None


def test_invalid_choice_shows_the_value_as_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SINCHBOT_REGION", "US")
    assert config_error().endswith("SINCHBOT_REGION: Input should be 'eu' or 'apac' (got 'US')")


def test_several_errors_in_one_line(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SINCHBOT_SERVICE", "foo")
    monkeypatch.setenv("SINCHBOT_THROTTLE_CALLS", "0")
    write_env(clean_env, "SINCHBOT_LOG_FORMAT=xml\n")
    message = config_error()
    clauses = message.removeprefix("invalid configuration: ").split("; ")
    assert clauses == [
        "SINCHBOT_SERVICE: Input should be 'messagemedia' or 'engage' (got 'foo')",
        "SINCHBOT_THROTTLE_CALLS: Input should be greater than 0 (got '0')",
        "SINCHBOT_LOG_FORMAT: Input should be 'console' or 'json' (got 'xml')",
    ]


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("region", "mars", "SINCHBOT_REGION: Input should be 'eu' or 'apac'"),
        ("auth", "oauth", "SINCHBOT_AUTH: Input should be 'basic' or 'hmac'"),
        ("hmac_algorithm", "md5", "SINCHBOT_HMAC_ALGORITHM: Input should be 'sha256' or 'sha1'"),
        ("base_url", "ftp://files.test", "SINCHBOT_BASE_URL: must be an http:// or https:// URL"),
        ("base_url", "api.messagemedia.com", "SINCHBOT_BASE_URL: must be an http"),
        ("base_url", "https://", "SINCHBOT_BASE_URL: must be an http"),
        ("base_url", "https://x.test/?a=1", "SINCHBOT_BASE_URL: must not have a query"),
        ("throttle_calls", 0, "SINCHBOT_THROTTLE_CALLS: Input should be greater than 0"),
        ("throttle_calls", -5, "SINCHBOT_THROTTLE_CALLS: Input should be greater than 0"),
        ("throttle_calls", "many", "SINCHBOT_THROTTLE_CALLS: Input should be a valid integer"),
        ("throttle_period", 0, "SINCHBOT_THROTTLE_PERIOD: Input should be greater than 0"),
        ("throttle_period", "nan", "SINCHBOT_THROTTLE_PERIOD: Input should be a finite number"),
        ("connect_timeout", -1.0, "SINCHBOT_CONNECT_TIMEOUT: Input should be greater than 0"),
        ("request_timeout", "inf", "SINCHBOT_REQUEST_TIMEOUT: Input should be a finite number"),
        ("default_region", "XX", "SINCHBOT_DEFAULT_REGION: must be a two-letter region code"),
        ("default_region", "AUS", "SINCHBOT_DEFAULT_REGION: must be a two-letter region code"),
        ("rcs_path", "v1/rcs", "SINCHBOT_RCS_PATH: must be a path starting with '/'"),
        ("rcs_path", "//evil.test/x", "SINCHBOT_RCS_PATH: must be a path starting with '/'"),
        ("log_level", "verbose", "SINCHBOT_LOG_LEVEL: must be one of CRITICAL, ERROR, WARNING"),
        ("log_format", "xml", "SINCHBOT_LOG_FORMAT: Input should be 'console' or 'json'"),
    ],
)
def test_invalid_values(field: str, value: object, fragment: str) -> None:
    message = config_error(**{field: value})
    assert fragment in message
    assert f"(got {value!r})" in message
    assert "Value error" not in message


def test_long_values_are_shortened_in_errors() -> None:
    message = config_error(base_url="ftp://" + "x" * 500)
    assert "x" * 100 not in message
    assert message.endswith("...)")


def test_multiline_values_stay_on_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SINCHBOT_SERVICE", "en\ngage")
    message = config_error()
    assert "(got 'en\\ngage')" in message


def test_valid_rcs_path_is_kept() -> None:
    assert load_settings(rcs_path="/v2/rcs/send").rcs_path == "/v2/rcs/send"


def test_settings_direct_construction_raises_validation_error() -> None:
    with pytest.raises(ValidationError):
        Settings(service="foo")
