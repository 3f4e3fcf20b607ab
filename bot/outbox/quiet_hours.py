"""Quiet hours: per-country windows of the handset's local time in which sends that are not
replies wait.

A reminder, a nudge or a campaign sent through the API must not wake anyone up. The policy
gives each country (ISO 3166 alpha-2, from the handset's number) a window ``HH:MM-HH:MM``
of local time (it may wrap midnight: ``21:00-08:00``); a send that falls inside it is
deferred (never dropped) until the window ends. Answers to a handset (``reply``) and
compliance messages (opt-out confirmations, HELP: ``compliance``) are never deferred.

Configuration, the ``[quiet_hours]`` table of the bot's TOML file::

    [quiet_hours]
    default = "21:00-08:00"      # every country without its own window; omit: none
    AU = "20:00-09:00"
    US = "21:00-08:00"
    [quiet_hours.timezones]      # optional: the zone used for a country's numbers
    AU = "Australia/Sydney"

Local time. The zones of a number come from ``phonenumbers``' time-zone data, unless the
number's country has an override in ``timezones``. A number can have several zones (an
Australian or a US mobile is not tied to a place): the send is then allowed only when it is
outside quiet hours in **every** candidate zone, and it is released at the earliest
instant that satisfies them all (for Australian mobiles that includes the Indian Ocean
territories: set ``timezones.AU`` for a less conservative window). A number whose region
cannot be told (invalid or unknown) gets the ``default`` window in UTC; a valid number
whose zones are unknown is treated the same way, with its country's window.

The clock is the caller's (``now``, an aware datetime). Zones come from :mod:`zoneinfo`
with the ``tzdata`` package as a fallback for systems without ``/usr/share/zoneinfo``.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta, tzinfo
from typing import Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from phonenumbers import timezone as phone_timezones
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from bot.core.clock import utc_now
from bot.core.config import ConfigError

__all__ = [
    "EXEMPT_ORIGINS",
    "Deferral",
    "QuietHours",
    "QuietHoursSettings",
    "Window",
    "utc_now",
]

EXEMPT_ORIGINS: Final = frozenset({"reply", "compliance"})
"""Origins never deferred: answers to the handset and compliance messages. Every other
origin (``timer``, ``api``, and any origin not known here) waits for quiet hours to end."""

DEFAULT_KEY: Final = "default"
TIMEZONES_KEY: Final = "timezones"

_WINDOW: Final = re.compile(r"([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-3]):([0-5]\d)")
_UNKNOWN_ZONE: Final = "Etc/Unknown"
_MAX_STEPS: Final = 16
"""Rounds of "push past the window of every zone still quiet" before giving up: a window
so long that the zones of a number share no allowed time would never converge."""


@dataclass(frozen=True)
class Window:
    """A daily window of local wall-clock time, ``start`` included, ``end`` excluded; it
    wraps midnight when ``start > end`` (``21:00-08:00``)."""

    start: time
    end: time

    @classmethod
    def parse(cls, value: str) -> Window:
        """``"HH:MM-HH:MM"`` (24-hour clock, start ≠ end); ``ValueError`` otherwise."""
        match = _WINDOW.fullmatch(value.strip())
        if match is None:
            raise ValueError("is not HH:MM-HH:MM")
        h1, m1, h2, m2 = (int(part) for part in match.groups())
        window = cls(time(h1, m1), time(h2, m2))
        if window.start == window.end:
            raise ValueError("is an empty window (start equals end)")
        return window

    @property
    def wraps(self) -> bool:
        """Whether the window crosses midnight."""
        return self.start > self.end

    def contains(self, moment: time) -> bool:
        """Whether the local wall-clock time ``moment`` is inside the window."""
        if self.wraps:
            return moment >= self.start or moment < self.end
        return self.start <= moment < self.end

    def end_after(self, local: datetime) -> datetime:
        """The local end of the window ``local`` is in (``local`` must be inside it), as an
        aware datetime in ``local``'s zone."""
        day = local.date()
        if self.wraps and local.time() >= self.start:
            day += timedelta(days=1)
        # A wall time in a DST gap maps (fold=0) to the instant just after the gap.
        return datetime.combine(day, self.end, tzinfo=local.tzinfo)

    def __str__(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M}"


@dataclass(frozen=True)
class Deferral:
    """Why and until when a send waits."""

    until: datetime
    """The UTC instant the window ends in every zone of the number."""
    region: str
    """The number's country, or ``default`` when it could not be told."""
    window: Window

    @property
    def until_ms(self) -> int:
        """``until`` in ms since the epoch (the score in the deferred set)."""
        return round(self.until.timestamp() * 1000)

    @property
    def until_iso(self) -> str:
        """``until`` as ISO 8601 UTC, e.g. ``2030-01-01T22:00:00Z``."""
        return self.until.isoformat(timespec="seconds").replace("+00:00", "Z")

    @property
    def reason(self) -> str:
        """``quiet hours <CC> HH:MM-HH:MM`` (for the timeline)."""
        return f"quiet hours {self.region} {self.window}"


# ----------------------------------------------------------------------------- settings


def _quote(value: Any) -> str:
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        return repr(value)


def _region(key: str) -> str | None:
    region = key.strip().upper()
    return region if region in phonenumbers.SUPPORTED_REGIONS else None


def _check_zone(name: str) -> bool:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


class QuietHoursSettings(BaseModel):
    """The ``[quiet_hours]`` table (see the module documentation).

    Validated from the raw TOML table: ``default``, ``timezones`` and one key per country
    (any case; moved into :attr:`countries`). Every problem is reported as one clause such
    as ``quiet_hours.AU: "25:00-08:00" is not HH:MM-HH:MM``; :meth:`QuietHours.from_config`
    joins them into one line.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    default: str | None = None
    """The window of every country without its own (``None``: no quiet hours for them)."""
    countries: dict[str, str] = Field(default_factory=dict)
    """Country (ISO 3166 alpha-2, upper case) → window ``HH:MM-HH:MM``."""
    timezones: dict[str, str] = Field(default_factory=dict)
    """Country → IANA zone that replaces the zones derived from its numbers."""

    @model_validator(mode="before")
    @classmethod
    def _from_table(cls, raw: Any) -> Any:
        if not isinstance(raw, Mapping):
            raise ValueError("quiet_hours: must be a table")
        problems: list[str] = []
        default: str | None = None
        countries: dict[str, str] = {}
        timezones: dict[str, str] = {}

        def window(where: str, value: Any) -> str | None:
            if not isinstance(value, str):
                problems.append(f"{where}: {_quote(value)} is not HH:MM-HH:MM")
                return None
            try:
                return str(Window.parse(value))
            except ValueError as exc:
                problems.append(f"{where}: {_quote(value)} {exc}")
                return None

        explicit = raw.get("countries")
        items = list(raw.items())
        if isinstance(explicit, Mapping):  # the model's own shape (countries={...})
            items = [(k, v) for k, v in items if k != "countries"] + list(explicit.items())
        for key, value in items:
            name = str(key)
            if name == DEFAULT_KEY:
                if value is not None:
                    default = window(f"quiet_hours.{name}", value)
            elif name == TIMEZONES_KEY:
                if not isinstance(value, Mapping):
                    problems.append("quiet_hours.timezones: must be a table")
                    continue
                for zone_key, zone in value.items():
                    where = f"quiet_hours.timezones.{zone_key}"
                    region = _region(str(zone_key))
                    if region is None:
                        problems.append(f"{where}: not a country code (ISO 3166 alpha-2)")
                    elif not isinstance(zone, str) or not _check_zone(zone.strip()):
                        problems.append(f"{where}: {_quote(zone)} is not a time zone")
                    else:
                        timezones[region] = zone.strip()
            else:
                region = _region(name)
                if region is None:
                    problems.append(
                        f"quiet_hours.{name}: not a country code (ISO 3166 alpha-2) "
                        f'or "default" or "timezones"'
                    )
                    continue
                checked = window(f"quiet_hours.{name}", value)
                if checked is not None:
                    countries[region] = checked
        if problems:
            raise ValueError("; ".join(problems))
        return {"default": default, "countries": countries, "timezones": timezones}


# ----------------------------------------------------------------------------- the policy


@functools.lru_cache(maxsize=8192)
def _locate(number: str) -> tuple[str | None, tuple[str, ...]]:
    """The region and the time zones of an E.164 number (``None`` and ``()`` when unknown)."""
    try:
        parsed = phonenumbers.parse(number, None)
    except phonenumbers.NumberParseException:
        return None, ()
    if not phonenumbers.is_valid_number(parsed):
        return None, ()
    region = phonenumbers.region_code_for_number(parsed)
    zones = tuple(
        z for z in phone_timezones.time_zones_for_number(parsed) if z and z != _UNKNOWN_ZONE
    )
    return region, zones


@functools.lru_cache(maxsize=512)
def _zone(name: str) -> tzinfo:
    return ZoneInfo(name)


class QuietHours:
    """The quiet-hours policy: whether a send may leave now, and if not, until when it
    waits.

    Args:
        settings: the validated ``[quiet_hours]`` table.
    """

    def __init__(self, settings: QuietHoursSettings) -> None:
        self.settings = settings
        self.default = Window.parse(settings.default) if settings.default else None
        self.windows = {cc: Window.parse(w) for cc, w in settings.countries.items()}
        self.timezones = {cc: _zone(name) for cc, name in settings.timezones.items()}

    @classmethod
    def from_config(cls, table: Mapping[str, Any] | None) -> QuietHours:
        """The policy of a raw ``[quiet_hours]`` table (``None`` or empty: no quiet hours).

        Raises:
            ConfigError: one line naming every bad entry, e.g. ``quiet_hours.AU:
                "25:00-08:00" is not HH:MM-HH:MM``.
        """
        try:
            settings = QuietHoursSettings.model_validate(table if table is not None else {})
        except ValidationError as exc:
            problems = "; ".join(
                " ".join(str(e["msg"]).removeprefix("Value error, ").split()) for e in exc.errors()
            )
            raise ConfigError(problems) from None
        return cls(settings)

    @property
    def active(self) -> bool:
        """Whether any window is configured at all."""
        return self.default is not None or bool(self.windows)

    @staticmethod
    def applies_to(origin: str) -> bool:
        """Whether quiet hours hold back a send of this origin (``timer``, ``api``... yes;
        ``reply`` and ``compliance`` no)."""
        return origin not in EXEMPT_ORIGINS

    def rule(self, number: str) -> tuple[str, Window, tuple[tzinfo, ...]] | None:
        """The region (or ``default``), window and candidate zones that govern ``number``;
        ``None`` when no window applies to it."""
        region, names = _locate(number)
        if region is None:
            return (DEFAULT_KEY, self.default, (UTC,)) if self.default is not None else None
        window = self.windows.get(region, self.default)
        if window is None:
            return None
        override = self.timezones.get(region)
        if override is not None:
            zones: tuple[tzinfo, ...] = (override,)
        else:
            zones = tuple(_zone(name) for name in names) or (UTC,)
        return region, window, zones

    def check(self, number: str, now: datetime) -> Deferral | None:
        """``None`` when a send to ``number`` may leave at ``now`` (aware); else the
        :class:`Deferral` saying until when it waits and why."""
        rule = self.rule(number)
        if rule is None:
            return None
        region, window, zones = rule
        if now.tzinfo is None:
            raise ValueError("now must be an aware datetime")
        start = now.astimezone(UTC)
        until = _release(window, zones, start)
        if until is None:
            return None
        return Deferral(until, region, window)

    def release_at(self, number: str, now: datetime) -> datetime | None:
        """``None`` when sending to ``number`` at ``now`` is fine, else the UTC instant the
        quiet window ends (in every candidate zone of the number)."""
        deferral = self.check(number, now)
        return None if deferral is None else deferral.until


def _end_utc(window: Window, local: datetime, moment: datetime) -> datetime:
    """The UTC end of the window ``local`` (= ``moment`` in some zone) is in, after
    ``moment``."""
    end = window.end_after(local)
    utc = end.astimezone(UTC)
    if utc <= moment:  # an end time repeated by a DST fold: its second occurrence
        utc = end.replace(fold=1).astimezone(UTC)
    return utc if utc > moment else moment + timedelta(minutes=1)


def _release(window: Window, zones: Iterable[tzinfo], now: datetime) -> datetime | None:
    """The earliest instant ≥ ``now`` outside ``window`` in every zone (``None``: ``now``)."""
    zones = tuple(zones)
    moment = now
    for _ in range(_MAX_STEPS):
        ends = [
            _end_utc(window, local, moment)
            for local in (moment.astimezone(z) for z in zones)
            if window.contains(local.time())
        ]
        if not ends:
            return None if moment == now else moment
        moment = max(ends)
    # The zones share no allowed time (a window of nearly a whole day): the latest end
    # reached is as good as any; the send waits at least until a window of its zones ends.
    return moment
