"""The ``autoreply`` settings: reply rules, business hours, and the rules file.

Everything is checked when the plugin is loaded, so a mistake stops the plugin with one
line (``plugin 'autoreply': invalid settings: ...``) instead of misbehaving on a message:
a regular expression that does not compile, a rule with both or neither of ``keyword`` and
``regex``, a ``{name}`` in a reply that the rule cannot fill, an ``after_hours`` variant
without business hours, an unreadable rules file.
"""

from __future__ import annotations

import re
import string
import tomllib
from datetime import datetime
from pathlib import Path
from typing import Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from bot.conversation import normalise

__all__ = ["DAYS", "AutoreplySettings", "BusinessHours", "Rule", "load_rules_file"]

DAYS: Final = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
"""Day names as written in ``business_hours`` (Monday first, as ``datetime.weekday()``)."""

_WINDOW = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")

Window = tuple[int, int]
"""Opening minutes of a day: ``[start, end)`` in minutes after midnight."""


def _fields(text: str) -> set[str]:
    """The ``{names}`` a reply text uses; ``ValueError`` for broken braces or positional
    fields."""
    names: set[str] = set()
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as exc:
        raise ValueError(f"{exc} (write {{{{ and }}}} for literal braces)") from None
    for _, field, _, _ in parsed:
        if field is None:
            continue
        if not field.isidentifier():
            raise ValueError(
                f"{{{field}}} is not a group name (use named groups such as {{item}}; "
                "write {{ and }} for literal braces)"
            )
        names.add(field)
    return names


class Rule(BaseModel):
    """One reply rule: a whole-message ``keyword`` (or several) or a ``regex``, and the
    reply ``text`` (``after_hours``: the reply outside business hours).

    A regex rule is found anywhere in the message (case-insensitive; anchor it with ``^``
    and ``$`` to match the whole message) and its named groups fill ``{name}`` in the
    replies (an empty string for a group that did not take part). Keyword rules have no
    fields: write ``{{`` and ``}}`` for braces.
    """

    model_config = ConfigDict(extra="forbid")

    keyword: list[str] | None = None
    """Whole-message keywords, compared like :class:`~bot.conversation.Keyword` (case,
    whitespace and surrounding punctuation ignored). A single string is one keyword."""
    regex: str | None = None
    text: str = Field(min_length=1)
    after_hours: str | None = Field(default=None, min_length=1)

    _pattern: re.Pattern[str] | None = PrivateAttr(default=None)

    @field_validator("keyword", mode="before")
    @classmethod
    def _one_keyword(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("keyword")
    @classmethod
    def _keywords(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        if not value:
            raise ValueError("keyword needs at least one keyword")
        for keyword in value:
            if not normalise(keyword):
                raise ValueError(f"keyword {keyword!r} is empty once normalised")
        return value

    @model_validator(mode="after")
    def _check(self) -> Rule:
        if (self.keyword is None) == (self.regex is None):
            raise ValueError("a rule needs exactly one of keyword or regex")
        groups: set[str] = set()
        if self.regex is not None:
            try:
                self._pattern = re.compile(self.regex, re.IGNORECASE)
            except re.error as exc:
                raise ValueError(f"regex {self.regex!r} does not compile: {exc}") from None
            groups = set(self._pattern.groupindex)
        for name, reply in (("text", self.text), ("after_hours", self.after_hours)):
            if reply is None:
                continue
            try:
                unknown = _fields(reply) - groups
            except ValueError as exc:
                raise ValueError(f"{name}: {exc}") from None
            if unknown:
                offered = (
                    f"the regex's named groups are {', '.join(sorted(groups))}"
                    if groups
                    else "the rule has no named groups"
                )
                raise ValueError(
                    f"{name} uses {', '.join(f'{{{n}}}' for n in sorted(unknown))}, but "
                    f"{offered} (write {{{{ and }}}} for literal braces)"
                )
        return self

    @property
    def pattern(self) -> re.Pattern[str] | None:
        """The compiled regex (``None`` for a keyword rule)."""
        return self._pattern

    def answer(self, groups: dict[str, str | None], *, open_now: bool) -> str:
        """The reply, given the regex's named groups and whether we are open."""
        template = self.text if open_now or self.after_hours is None else self.after_hours
        return template.format_map({name: value or "" for name, value in groups.items()})


class BusinessHours:
    """Opening windows per weekday, read from ``business_hours``::

        {"mon-fri": "09:00-17:00", "sat": "10:00-13:00"}
        {"mon,wed": "09:00-12:00, 13:00-17:00"}     # several windows a day

    Keys are days (``mon`` ... ``sun``), ranges of days (``mon-fri``, ``fri-mon`` wraps)
    or comma lists of both; values are ``HH:MM-HH:MM`` windows, comma-separated (``24:00``
    ends at midnight; a window cannot cross midnight: split it in two days), or
    ``closed``. Days not named are closed; naming a day twice is an error.
    """

    def __init__(self, table: dict[str, str]) -> None:
        self.windows: dict[int, list[Window]] = {}
        for key, value in table.items():
            windows = _windows(key, value)
            for day in _days(key):
                if day in self.windows:
                    raise ValueError(f"{DAYS[day]} is named twice")
                self.windows[day] = windows

    def is_open(self, at: datetime) -> bool:
        """Whether ``at`` (timezone-aware, already in the business's time zone) is within
        a window."""
        minute = at.hour * 60 + at.minute
        return any(start <= minute < end for start, end in self.windows.get(at.weekday(), ()))


_FULL_DAYS: Final = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def _day(name: str, key: str) -> int:
    word = name.strip().lower()
    for names in (DAYS, _FULL_DAYS):
        if word in names:
            return names.index(word)
    raise ValueError(f"{key!r}: {word!r} is not a day ({', '.join(DAYS)})")


def _days(key: str) -> list[int]:
    days: list[int] = []
    for part in key.split(","):
        first, dash, last = part.partition("-")
        start = _day(first, key)
        if not dash:
            days.append(start)
            continue
        end = _day(last, key)
        day = start
        days.append(day)
        while day != end:
            day = (day + 1) % 7
            days.append(day)
    return days


def _windows(key: str, value: str) -> list[Window]:
    if value.strip().lower() == "closed":
        return []
    windows: list[Window] = []
    for part in value.split(","):
        found = _WINDOW.match(part)
        if found is None:
            raise ValueError(f"{key!r}: {part.strip()!r} is not a window like 09:00-17:00")
        h1, m1, h2, m2 = map(int, found.groups())
        start, end = h1 * 60 + m1, h2 * 60 + m2
        if h1 > 23 or m1 > 59 or m2 > 59 or end > 24 * 60:
            raise ValueError(f"{key!r}: {part.strip()!r} is not a valid time")
        if end <= start:
            raise ValueError(
                f"{key!r}: {part.strip()!r} ends before it starts "
                "(a window cannot cross midnight; use 24:00 for midnight)"
            )
        windows.append((start, end))
    return windows


class _RulesFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rules: list[Rule]


def _read(path: Path) -> Any:
    suffix = path.suffix.lower()
    if suffix not in (".toml", ".yaml", ".yml"):
        raise ValueError(f"file {str(path)!r} must end in .toml, .yaml or .yml")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read file {str(path)!r}: {exc.strerror}") from None
    if suffix == ".toml":
        try:
            return tomllib.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ValueError(f"file {str(path)!r} is not valid TOML: {exc}") from None
    try:
        import yaml  # type: ignore[import-untyped]  # PyYAML is optional
    except ImportError:
        raise ValueError(
            f"file {str(path)!r} is YAML, but PyYAML is not installed "
            "(pip install pyyaml, or write the rules as TOML)"
        ) from None
    try:
        return yaml.safe_load(raw)
    except Exception as exc:  # yaml.YAMLError, or a decoding error
        message = " ".join(str(exc).split())
        raise ValueError(f"file {str(path)!r} is not valid YAML: {message}") from None


def load_rules_file(path: Path) -> list[Rule]:
    """The rules of a TOML or YAML file: ``[[rules]]`` tables (TOML) or a ``rules:`` list
    (YAML), each as a :class:`Rule`. Raises ``ValueError`` in one line naming the file."""
    raw = _read(path)
    try:
        return _RulesFile.model_validate(raw).rules
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'file'}: {e['msg']}" for e in exc.errors()
        )
        raise ValueError(f"file {str(path)!r}: {problems}") from None


class AutoreplySettings(BaseModel):
    """The ``[plugin.autoreply]`` table.

    ``rules`` (inline) are tried first, then the rules of ``file``; the first rule that
    matches answers. ``business_hours`` (see :class:`BusinessHours`) in ``timezone`` decide
    whether a rule's ``after_hours`` variant is sent instead of its ``text``.
    """

    model_config = ConfigDict(extra="forbid")

    file: Path | None = None
    """A TOML or YAML file of more rules (relative paths: from the gateway's working
    directory). Read once, when the plugin is loaded."""
    rules: list[Rule] = Field(default_factory=list)
    timezone: str = "UTC"
    """The IANA time zone of ``business_hours`` (``Australia/Sydney``)."""
    business_hours: dict[str, str] | None = None
    """Day(s) → opening windows; ``None``: always open (``after_hours`` is never used)."""

    _all: list[Rule] = PrivateAttr(default_factory=list)
    _zone: ZoneInfo = PrivateAttr(default_factory=lambda: ZoneInfo("UTC"))
    _hours: BusinessHours | None = PrivateAttr(default=None)

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (an IANA name such as UTC)") from None
        return value

    @field_validator("business_hours")
    @classmethod
    def _business_hours(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is not None:
            BusinessHours(value)
        return value

    @model_validator(mode="after")
    def _assemble(self) -> AutoreplySettings:
        self._zone = ZoneInfo(self.timezone)
        self._hours = None if self.business_hours is None else BusinessHours(self.business_hours)
        rules = list(self.rules)
        if self.file is not None:
            rules += load_rules_file(self.file)
        if self._hours is None:
            for index, rule in enumerate(rules):
                if rule.after_hours is not None:
                    inline = index < len(self.rules)
                    where = (
                        f"rules.{index}"
                        if inline
                        else f"file {str(self.file)!r}: rules.{index - len(self.rules)}"
                    )
                    raise ValueError(f"{where}: after_hours needs business_hours to be set")
        self._all = rules
        return self

    @property
    def all_rules(self) -> list[Rule]:
        """The inline rules, then the file's, in the order they are tried."""
        return list(self._all)

    def is_open(self, at: datetime) -> bool:
        """Whether the business is open at ``at`` (always, without business hours)."""
        if self._hours is None:
            return True
        return self._hours.is_open(at.astimezone(self._zone))
