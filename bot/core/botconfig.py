"""The bot's configuration file: which plugins run, in which order, and how the built-in
handlers and each plugin are configured.

``SINCHBOT_CONFIG`` names a TOML file; every table is optional::

    plugins = ["appointments", "autoreply"]   # enabled plugins, in the order they are tried
    segment_budget = 3                        # replies above this many SMS segments warn
    fallback = "Sorry, I did not get that. Reply HELP for help."

    [compliance]                 # opt-out, opt-in and HELP (handlers/compliance.py)
    help_text = "Acme Dental: reply STOP to opt out. Call 02 9999 9999."

    [keywords]                   # exact keyword → reply (handlers/keywords.py)
    HOURS = "We are open 8am-6pm, Monday to Friday."

    [quiet_hours]                # non-reply sends wait for the window to end
    default = "21:00-08:00"
    AU = "20:00-09:00"

    [plugin.appointments]        # one table per plugin, validated by the plugin's model
    remind_before = "PT24H"

``SINCHBOT_PLUGINS`` (comma-separated names) overrides ``plugins``. The tables of the
built-in handlers and of the plugins are validated by their own models when the bot is
assembled (:mod:`bot.app.assembly`); this module only reads the file and checks its shape.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bot.core.config import ConfigError

__all__ = ["BotConfig", "load_config"]


class BotConfig(BaseModel):
    """The parsed configuration file (see the module documentation)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    plugins: list[str] | None = None
    """Enabled plugins, in order; ``None``: not configured (the demo enables its own)."""
    segment_budget: int | None = Field(default=3, ge=1)
    """Replies billed above this many SMS segments are logged as warnings."""
    fallback: str | None = None
    """Reply to a message nothing else handled (``{text}``: the message's first 100
    characters); ``None``: no fallback reply."""
    compliance: dict[str, Any] = Field(default_factory=dict)
    """Settings of the opt-out/opt-in/HELP handler."""
    keywords: dict[str, str] = Field(default_factory=dict)
    """Keyword → reply text."""
    quiet_hours: dict[str, Any] = Field(default_factory=dict)
    """Quiet-hours windows per country (``default`` for the others)."""
    plugin: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """Each plugin's settings table, by plugin name."""


def load_config(path: Path | None) -> BotConfig:
    """Read ``path`` (TOML); no path: the defaults. Raises :class:`ConfigError` with one
    line naming the file and the problem."""
    if path is None:
        return BotConfig()
    try:
        with path.open("rb") as handle:
            raw = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"SINCHBOT_CONFIG: {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"SINCHBOT_CONFIG: cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"SINCHBOT_CONFIG: {path} is not valid TOML: {exc}") from None
    try:
        return BotConfig.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc']) or 'file'}: {error['msg']}"
            for error in exc.errors()
        )
        raise ConfigError(f"SINCHBOT_CONFIG: {path}: {problems}") from None
