"""Configuration, read from ``SINCHBOT_*`` environment variables and a ``.env`` file.

Every setting is a field of :class:`Settings`; its environment variable is its name in upper
case with the ``SINCHBOT_`` prefix (``service`` → ``SINCHBOT_SERVICE``). Values passed to
:func:`load_settings` win over the environment, which wins over ``.env`` in the working
directory, which wins over the defaults. Empty variables count as unset. Choice-valued
settings are case-insensitive (``SINCHBOT_SERVICE=ENGAGE`` works).

Use :func:`load_settings` rather than ``Settings()``: it turns validation failures into a
single-line :class:`ConfigError` that names the offending environment variables.
"""

from __future__ import annotations

import importlib.util
import logging
import re
from pathlib import Path
from typing import Any, Final, Literal, get_args
from urllib.parse import urlsplit

import phonenumbers
from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

__all__ = ["ENV_PREFIX", "ConfigError", "Settings", "env_var", "load_settings"]

ENV_PREFIX: Final = "SINCHBOT_"
"""Prefix of every environment variable read by :class:`Settings`."""

_BASE_URLS: Final[dict[tuple[str, str], str]] = {
    ("engage", "eu"): "https://eu.app.api.sinch.com",
    ("engage", "apac"): "https://au.app.api.sinch.com",
}
_MESSAGEMEDIA_URL: Final = "https://api.messagemedia.com"
_LOG_LEVELS: Final = ("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG")
_MAX_SHOWN_INPUT: Final = 60
_HOST_NAME: Final = re.compile(
    r"[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*"
)


class ConfigError(Exception):
    """The configuration is invalid; the message is one line naming each bad setting."""


def env_var(field: str) -> str:
    """Return the environment variable that sets the :class:`Settings` field *field*."""
    return f"{ENV_PREFIX}{field.upper()}"


class Settings(BaseSettings):
    """All sinchbot settings. The attribute docstrings are the configuration reference."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        env_file_encoding="utf-8",
        env_ignore_empty=True,
        case_sensitive=False,
        extra="ignore",
        frozen=True,
        use_attribute_docstrings=True,
    )

    service: Literal["messagemedia", "engage"] = "messagemedia"
    """Provider API: Sinch MessageMedia (``messagemedia``) or Sinch Engage (``engage``)."""

    region: Literal["eu", "apac"] = "eu"
    """Sinch Engage data region (``eu`` or ``apac``); ignored for MessageMedia."""

    base_url: str | None = None
    """Override of the provider API base URL (http or https), e.g. to point at the sandbox.
    A trailing slash is removed."""

    api_key: SecretStr | None = None
    """Provider API key."""

    api_secret: SecretStr | None = None
    """Provider API secret."""

    auth: Literal["basic", "hmac"] = "basic"
    """How requests are authenticated: HTTP Basic with key and secret, or HMAC signatures."""

    hmac_algorithm: Literal["sha256", "sha1"] = "sha256"
    """HMAC flavour: ``sha256`` signs a ``Content-MD5`` header as the provider documents;
    ``sha1`` signs an ``x-Content-MD5`` header as the official SDK does."""

    account: str | None = None
    """Sub-account id, sent as the ``Account`` header when set."""

    redis_url: str | None = None
    """Redis URL: ``redis://[:password@]host:port/db`` (``rediss://`` for TLS) for one
    server, ``redis+cluster://[:password@]host:port[,host:port…]`` (``rediss+cluster://``)
    for a Redis Cluster, given one or more of its nodes; when unset an embedded
    redis-server is started."""

    redis_wait_replicas: int = Field(default=0, ge=0)
    """Replicas that must have a webhook's event before it is answered 2xx (Redis
    ``WAIT``, per master): 0 (the default) answers once the master has it, which a
    failover can lose (replication is asynchronous); 1 or more survive it, at the cost of a
    replication round trip per group of webhooks. A master with fewer replicas than this
    makes its partitions' webhooks answer 503 (``sinchbot doctor`` says so)."""

    redis_wait_timeout: float = Field(default=1.0, gt=0, allow_inf_nan=False)
    """Seconds a webhook waits for ``SINCHBOT_REDIS_WAIT_REPLICAS`` replicas before it is
    answered 503 (the provider retries; the copy is then recognised)."""

    data_dir: Path = Path(".sinchbot")
    """Directory for local state (embedded Redis data, logs); ``~`` is expanded."""

    throttle_calls: int = Field(default=100, gt=0)
    """Provider API calls allowed per ``throttle_period`` per connection (> 0)."""

    throttle_period: float = Field(default=60.0, gt=0, allow_inf_nan=False)
    """Length in seconds of the throttling window (> 0)."""

    connect_timeout: float = Field(default=5.0, gt=0, allow_inf_nan=False)
    """Seconds to wait for a connection to the provider (> 0)."""

    request_timeout: float = Field(default=30.0, gt=0, allow_inf_nan=False)
    """Seconds to wait for a whole provider request (> 0)."""

    default_region: str = "AU"
    """Two-letter region (ISO 3166-1 alpha-2) for phone numbers written without ``+``."""

    rcs_path: str = "/v1/int-power-automate/send-message-v2"
    """API path for RCS messages (undocumented by the provider, hence configurable);
    must start with ``/``."""

    webhook_secret: SecretStr | None = None
    """Shared secret that incoming webhook requests are checked against."""

    webhook_public_key: str | None = None
    """Public key (PEM, or base64 DER as the provider's signature-key API returns it) that
    verifies RSA-signed incoming webhooks."""

    webhook_max_skew: float = Field(default=300.0, gt=0, allow_inf_nan=False)
    """Seconds a signed webhook's ``Date`` may differ from our clock."""

    api_token: SecretStr | None = None
    """Bearer token required by the gateway's own HTTP API."""

    host: str = "127.0.0.1"
    """Address ``sinchbot serve`` listens on."""

    port: int = Field(default=8080, ge=0, le=65535)
    """Port ``sinchbot serve`` listens on."""

    reuse_port: bool = True
    """Listen with ``SO_REUSEPORT`` (where the system has it), so several ``sinchbot serve``
    processes on one machine share the port and the kernel spreads connections over them
    (``sinchbot serve --processes N`` starts them). Give them the same ``SINCHBOT_REDIS_URL``:
    processes of different deployments on one port would split their webhooks."""

    event_loop: Literal["auto", "uvloop", "asyncio"] = "auto"
    """The event loop ``sinchbot serve`` runs on: ``uvloop`` (``pip install
    'sinchbot[speed]'``), ``asyncio``'s own, or ``auto``: uvloop when it is installed."""

    json_library: Literal["auto", "orjson", "stdlib"] = "auto"
    """JSON on the message path: ``orjson`` (``pip install 'sinchbot[speed]'``), the standard
    library (``stdlib``), or ``auto``: orjson when it is installed. The results are the same
    (:mod:`bot.core.fastjson`)."""

    public_url: str | None = None
    """The gateway's URL as the provider reaches it; default ``http://HOST:PORT``. The demo
    sandbox pushes to it and the start-up banner shows it; give the same URL to
    ``sinchbot webhooks subscribe``."""

    allowed_hosts: str = ""
    """Comma-separated host names the gateway answers to (the ``Host`` header), besides IP
    addresses, ``localhost`` and the hosts of ``public_url`` and ``host``; ``*``: any. Checked
    in the demo always (against DNS rebinding of its open API), otherwise only when set;
    other requests get 421."""

    partitions: int = Field(default=16, ge=1, le=1024)
    """Number of inbox/outbox partitions. Fixed for the life of the Redis data: the gateway
    refuses to start against data written with another count."""

    dedupe_ttl: float = Field(default=3 * 86400.0, gt=0, allow_inf_nan=False)
    """Seconds a provider event id is remembered, to drop redelivered webhooks (longer than
    the provider's retry window)."""

    max_body: int = Field(default=64 * 1024, ge=1024)
    """Largest webhook or API request body accepted, in bytes (larger: 413)."""

    max_deliveries: int = Field(default=5, ge=1)
    """An inbox or outbox entry that failed this many times goes to the dead-letter stream."""

    inbox_concurrency: int = Field(default=2, ge=0, le=1024)
    """Partitions of one process whose events are handled at once (0: all it owns). The
    others wait their turn (at most 0.1 s) while their batches fill, so under load each
    batch's Redis round trips are shared by more events; a lone event never waits."""

    lease_ttl: float = Field(default=10.0, gt=0, allow_inf_nan=False)
    """Seconds a worker's partition lease lasts without renewal; a crashed worker's
    partitions are taken over after this."""

    timeline_max: int = Field(default=500, ge=10)
    """Entries kept on each conversation's timeline."""

    timeline_ttl: float = Field(default=30 * 86400.0, gt=0, allow_inf_nan=False)
    """Seconds a conversation's timeline and message records are kept after last activity."""

    handler: str | None = None
    """The event handler, as ``module:attribute`` (a class, called without arguments, or an
    instance), replacing the conversation engine (compliance, plugins, keywords) for
    special deployments. Default: the engine."""

    config: Path | None = None
    """The bot's configuration file (TOML): enabled plugins and their settings, the
    compliance texts, keyword replies, the fallback reply, quiet hours. See
    docs/plugins.md."""

    plugins: str | None = None
    """Enabled plugins, comma-separated, in the order they are tried; overrides the config
    file's ``plugins`` list (``none``: no plugins)."""

    sandbox_port: int = Field(default=8025, ge=0, le=65535)
    """Port of the sandbox provider that ``serve`` starts when no provider is configured."""

    forward_urls: str = ""
    """Comma-separated URLs that receive ``message.received`` and receipt events as JSON."""

    forward_secret: SecretStr | None = None
    """Key of the HMAC-SHA256 signature (``X-Sinchbot-Signature``) on forwarded events."""

    log_level: str = "INFO"
    """Logging level: DEBUG, INFO, WARNING, ERROR or CRITICAL (any case; WARN means WARNING)."""

    log_format: Literal["console", "json"] = "console"
    """Log output: human-readable ``console`` lines or ``json`` objects."""

    @field_validator(
        "service",
        "region",
        "auth",
        "hmac_algorithm",
        "log_format",
        "event_loop",
        "json_library",
        mode="before",
    )
    @classmethod
    def _choice_case_insensitive(cls, value: object, info: ValidationInfo) -> object:
        """Accept a choice in any case; leave unknown values as given for the error message."""
        if not isinstance(value, str) or info.field_name is None:
            return value
        choices = get_args(cls.model_fields[info.field_name].annotation)
        folded = value.strip().lower()
        return folded if folded in choices else value

    @field_validator("base_url", "public_url")
    @classmethod
    def _check_base_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        url = value.strip().rstrip("/")
        parts = urlsplit(url)
        if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL")
        if parts.query or parts.fragment:
            raise ValueError("must not have a query or fragment")
        return url

    @field_validator("allowed_hosts")
    @classmethod
    def _check_allowed_hosts(cls, value: str) -> str:
        names = [name.strip().lower().rstrip(".") for name in value.split(",") if name.strip()]
        for name in names:
            if name != "*" and not _HOST_NAME.fullmatch(name):
                raise ValueError("must be comma-separated host names (no scheme or port) or *")
        return ",".join(names)

    @field_validator("data_dir")
    @classmethod
    def _expand_data_dir(cls, value: Path) -> Path:
        return value.expanduser()

    @field_validator("default_region")
    @classmethod
    def _check_region(cls, value: str) -> str:
        region = value.strip().upper()
        if region not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError("must be a two-letter region code such as AU, GB or US")
        return region

    @field_validator("rcs_path")
    @classmethod
    def _check_rcs_path(cls, value: str) -> str:
        path = value.strip()
        if not path.startswith("/") or path.startswith("//") or any(c.isspace() for c in path):
            raise ValueError("must be a path starting with '/'")
        return path

    @field_validator("event_loop", "json_library")
    @classmethod
    def _check_installed(cls, value: str) -> str:
        module = {"uvloop": "uvloop", "orjson": "orjson"}.get(value)
        if module is not None and importlib.util.find_spec(module) is None:
            raise ValueError(f"{module} is not installed (pip install 'sinchbot[speed]')")
        return value

    @field_validator("log_level")
    @classmethod
    def _check_log_level(cls, value: str) -> str:
        level = value.strip().upper()
        level = "WARNING" if level == "WARN" else level
        if level not in _LOG_LEVELS:
            raise ValueError(f"must be one of {', '.join(_LOG_LEVELS)}")
        return level

    @property
    def api_base_url(self) -> str:
        """Base URL of the provider API: ``base_url`` if set, else the service's (and region's)."""
        if self.base_url is not None:
            return self.base_url
        if self.service == "messagemedia":
            return _MESSAGEMEDIA_URL
        return _BASE_URLS[(self.service, self.region)]

    @property
    def forward_url_list(self) -> list[str]:
        """``forward_urls`` split on commas."""
        return [u.strip() for u in self.forward_urls.split(",") if u.strip()]

    @property
    def allowed_host_list(self) -> list[str]:
        """``allowed_hosts`` split on commas (lower case)."""
        return [name for name in self.allowed_hosts.split(",") if name]

    @property
    def gateway_url(self) -> str:
        """``public_url``, else ``http://HOST:PORT``."""
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")

    @property
    def has_credentials(self) -> bool:
        """Whether both an API key and an API secret are configured (and non-empty)."""
        return bool(
            self.api_key is not None
            and self.api_key.get_secret_value()
            and self.api_secret is not None
            and self.api_secret.get_secret_value()
        )

    @property
    def log_level_number(self) -> int:
        """``log_level`` as a :mod:`logging` level number."""
        return logging.getLevelNamesMapping()[self.log_level]


_SECRET_FIELDS: Final = frozenset(
    name for name, field in Settings.model_fields.items() if SecretStr in get_args(field.annotation)
)


def load_settings(**overrides: Any) -> Settings:
    """Build :class:`Settings` from *overrides*, the environment and ``.env``.

    *overrides* are field names (``service="engage"``) and take precedence over the
    environment; an unknown name is an error. Unknown ``SINCHBOT_*`` variables in the
    environment or ``.env`` are ignored, as is everything else in a shared ``.env``.
    pydantic-settings' own init options pass through too, e.g. ``_env_file=None`` to ignore
    ``.env``.

    Raises:
        ConfigError: one or more settings are invalid; the single-line message names each by
            its environment variable, e.g. ``invalid configuration: SINCHBOT_SERVICE: Input
            should be 'messagemedia' or 'engage' (got 'foo')``.
    """
    unknown = sorted(
        key for key in overrides if not key.startswith("_") and key not in Settings.model_fields
    )
    if unknown:
        names = ", ".join(repr(key) for key in unknown)
        raise ConfigError(f"invalid configuration: unknown setting(s) {names}")
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = "; ".join(_describe(error) for error in exc.errors())
        raise ConfigError(f"invalid configuration: {problems}") from None
    except SettingsError as exc:
        raise ConfigError(f"invalid configuration: {_one_line(str(exc))}") from None


def _describe(error: ErrorDetails) -> str:
    """One ``SINCHBOT_X: message (got 'value')`` clause for a pydantic error.

    The offending value is shown except for secrets (and for errors not tied to one setting,
    whose input would be every setting).
    """
    message = _one_line(error["msg"].removeprefix("Value error, "))
    if not error["loc"]:
        return message
    field = str(error["loc"][0])
    clause = f"{env_var(field)}: {message}"
    if field not in _SECRET_FIELDS:
        shown = repr(error["input"])
        if len(shown) > _MAX_SHOWN_INPUT:
            shown = shown[: _MAX_SHOWN_INPUT - 3] + "..."
        clause += f" (got {shown})"
    return clause


def _one_line(text: str) -> str:
    """Collapse all whitespace runs, newlines included, to single spaces."""
    return " ".join(text.split())
