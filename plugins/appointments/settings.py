"""The appointments plugin's settings (``[plugin.appointments]``) and durations.

Durations are written as ISO 8601 (``"PT24H"``, ``"P1D"``, ``"P1DT12H"``, ``"PT90M"``) or in
the short form ``"24h"``, ``"90m"``, ``"2d"``, ``"1h30m"``, ``"45s"``, ``"1w"``::

    [plugin.appointments]
    remind_before = "P1D"
    no_reply_after = "4h"
    timezone = "Australia/Sydney"
    business = "Acme Dental"
    slots = ["Tue 10:00", "Wed 14:30", "Fri 09:00"]
"""

from __future__ import annotations

import re
import string
from datetime import datetime, timedelta
from typing import Annotated, Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from bot.core.sms import is_e164

__all__ = [
    "DEFAULT_REMINDER_TEXT",
    "MAX_DURATION",
    "MAX_SLOTS",
    "AppointmentSettings",
    "Duration",
    "format_duration",
    "parse_duration",
]

MAX_DURATION: Final = timedelta(days=366)
"""The longest duration accepted (a reminder a year ahead at most)."""
MAX_SLOTS: Final = 9
"""Reschedule slots are chosen by one digit."""

DEFAULT_REMINDER_TEXT: Final = (
    "Hi {name}, reminder of your appointment {when}. "
    "Reply Y to confirm, N to cancel, R to reschedule."
)

_ISO: Final = re.compile(
    r"P(?:(?P<weeks>\d+)W)?(?:(?P<days>\d+)D)?"
    r"(?:T(?:(?P<hours>\d+)H)?(?:(?P<minutes>\d+)M)?(?:(?P<seconds>\d+(?:\.\d+)?)S)?)?",
    re.IGNORECASE,
)
_SHORT_PART: Final = re.compile(r"(\d+(?:\.\d+)?)\s*(w|d|h|m|s)", re.IGNORECASE)
_SHORT: Final = re.compile(r"(?:\d+(?:\.\d+)?\s*[wdhms]\s*)+", re.IGNORECASE)
_UNIT_SECONDS: Final = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}
_PLACEHOLDERS: Final = frozenset({"name", "when", "business", "slots", "slot"})


def parse_duration(value: Any) -> timedelta:
    """A positive duration from ISO 8601 (``"PT24H"``) or the short form (``"24h"``,
    ``"1h30m"``); a :class:`~datetime.timedelta` is taken as is.

    >>> parse_duration("P1DT2H")
    datetime.timedelta(days=1, seconds=7200)
    >>> parse_duration("90m")
    datetime.timedelta(seconds=5400)

    Raises:
        ValueError: not a duration, not positive or longer than :data:`MAX_DURATION`.
    """
    if isinstance(value, timedelta):
        result = value
    elif isinstance(value, str):
        result = _parse_text(value.strip())
    else:
        raise ValueError(
            f"expected a duration such as 'PT24H' or '24h', got {type(value).__name__}"
        )
    if result <= timedelta(0):
        raise ValueError("the duration must be positive")
    if result > MAX_DURATION:
        raise ValueError(f"the duration must be at most {MAX_DURATION.days} days")
    return result


def _parse_text(text: str) -> timedelta:
    found = _ISO.fullmatch(text) if text[:1] in "Pp" else None
    if found is not None and any(found.groupdict().values()) and not text.upper().endswith("T"):
        parts = {name: float(v) for name, v in found.groupdict().items() if v is not None}
        return timedelta(**parts)
    if _SHORT.fullmatch(text):
        seconds = sum(
            float(number) * _UNIT_SECONDS[unit.lower()]
            for number, unit in _SHORT_PART.findall(text)
        )
        return timedelta(seconds=seconds)
    raise ValueError(
        f"{text[:40]!r} is not a duration: write ISO 8601 ('PT24H', 'P1D') "
        "or a number with a unit ('24h', '90m', '2d')"
    )


def format_duration(value: timedelta) -> str:
    """A duration as ISO 8601, the shortest exact form: ``"P1D"``, ``"PT1H30M"``, ``"PT45S"``.

    >>> format_duration(timedelta(hours=36))
    'P1DT12H'
    """
    total = round(value.total_seconds())
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    date = f"{days}D" if days else ""
    time = "".join(f"{n}{u}" for n, u in ((hours, "H"), (minutes, "M"), (seconds, "S")) if n)
    return f"P{date}{'T' + time if time else ''}" if date or time else "PT0S"


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
"""A settings field holding a positive duration (see :func:`parse_duration`)."""


def _check_template(text: str, required: tuple[str, ...] = ()) -> str:
    """``text`` with only known ``{placeholders}`` (and every one of ``required``)."""
    try:
        names = {field for _, field, _, _ in string.Formatter().parse(text) if field is not None}
    except ValueError as exc:
        raise ValueError(f"not a valid template: {exc}") from None
    unknown = sorted(names - _PLACEHOLDERS)
    if unknown or "" in names:
        shown = ", ".join("{" + n + "}" for n in unknown) or "{}"
        known = ", ".join("{" + n + "}" for n in sorted(_PLACEHOLDERS))
        raise ValueError(f"unknown placeholder {shown} (known: {known})")
    missing = [n for n in required if n not in names]
    if missing:
        raise ValueError(f"must contain {', '.join('{' + n + '}' for n in missing)}")
    if not text.strip():
        raise ValueError("must not be empty")
    return text


class AppointmentSettings(BaseModel):
    """``[plugin.appointments]``: when reminders go, what they say and how long we wait.

    Texts are templates with ``{name}`` (the appointment's name), ``{when}`` (its start in
    :attr:`timezone`, e.g. ``on Tue 14 Jan at 10:30``), ``{business}``, and in
    :attr:`slots_text` ``{slots}`` (``1 for Tue 10:00, 2 for Wed 14:30``), in
    :attr:`rescheduled_text` ``{slot}`` (what the handset asked for). In
    :attr:`also_waiting_text` and :attr:`next_question_text`, ``{name}`` and ``{when}`` are
    those of the *other* appointment waiting for an answer. The defaults stay within 2 SMS
    segments with a name of up to 40 characters (also with those two added).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    remind_before: Duration = Field(
        default=timedelta(hours=24),
        description="How long before the start the reminder goes (an appointment may "
        "override it); a reminder already due goes at once.",
    )
    no_reply_after: Duration = Field(
        default=timedelta(hours=4),
        description="T: without an answer T after the reminder (counted from its delivery "
        "receipt when one comes), one nudge; T after the nudge, the status becomes "
        "no_response.",
    )
    timezone: str = Field(default="UTC", description="IANA time zone {when} is shown in.")
    business: str | None = Field(
        default=None,
        max_length=40,
        description="Who is writing ({business}); when set, the reminder and the nudge "
        "start with 'Business: ' unless their template places {business} itself.",
    )
    from_number: str | None = Field(
        default=None,
        description="Our number (E.164) reminders go from (default: the account's). "
        "Replies to it that are not linked to a reminder still find the appointment.",
    )
    slots: list[str] = Field(
        default_factory=list,
        description=f"Reschedule options offered by number (at most {MAX_SLOTS}); "
        "empty: the handset is asked for a preferred time in its own words.",
    )
    reminder_text: str = DEFAULT_REMINDER_TEXT
    nudge_text: str = (
        "We have not heard back. Please reply Y to confirm your appointment {when}, "
        "N to cancel, R to reschedule."
    )
    ask_again_text: str = (
        "Sorry, we did not understand. Please reply Y to confirm your appointment {when}, "
        "N to cancel or R to reschedule."
    )
    confirmed_text: str = "Thanks {name}, your appointment {when} is confirmed. See you then!"
    cancelled_text: str = "Thanks {name}, your appointment {when} is cancelled."
    reschedule_text: str = (
        "No problem. What day and time would suit you instead? Reply with your preferred time."
    )
    slots_text: str = "No problem. Which time suits you instead? Reply {slots}."
    slot_again_text: str = "Sorry, please reply with the number of a time: {slots}."
    rescheduled_text: str = (
        "Thanks {name}, we have your request to move to {slot}. We will be in touch to confirm."
    )
    also_waiting_text: str = Field(
        default="Your reply is about this one; we will ask about the one {when} next.",
        description="Added to a reminder sent while another appointment of the number waits "
        "for an answer ({name}, {when}: the other one's).",
    )
    next_question_text: str = Field(
        default="Next: {name} {when}. Reply Y to confirm, N to cancel, R to reschedule.",
        description="Added to the answer to one appointment while another of the number "
        "still waits for an answer ({name}, {when}: the other one's); the message then asks "
        "about that one.",
    )

    @field_validator("timezone")
    @classmethod
    def _check_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value.strip())
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"{value[:40]!r} is not an IANA time zone (e.g. Australia/Sydney, UTC)"
            ) from None
        return value.strip()

    @field_validator("from_number")
    @classmethod
    def _check_from(cls, value: str | None) -> str | None:
        if value is None:
            return None
        number = value.strip()
        if not is_e164(number):
            raise ValueError("must be a number in E.164 form, e.g. +61491570157")
        return number

    @field_validator("slots")
    @classmethod
    def _check_slots(cls, value: list[str]) -> list[str]:
        slots = [slot.strip() for slot in value]
        if len(slots) > MAX_SLOTS:
            raise ValueError(f"at most {MAX_SLOTS} slots (they are chosen by one digit)")
        if any(not slot or len(slot) > 40 for slot in slots):
            raise ValueError("each slot must be 1 to 40 characters")
        return slots

    @field_validator(
        "reminder_text",
        "nudge_text",
        "ask_again_text",
        "confirmed_text",
        "cancelled_text",
        "reschedule_text",
        "slot_again_text",
        "rescheduled_text",
        "also_waiting_text",
        "next_question_text",
    )
    @classmethod
    def _check_text(cls, value: str) -> str:
        return _check_template(value)

    @field_validator("slots_text")
    @classmethod
    def _check_slots_text(cls, value: str) -> str:
        return _check_template(value, ("slots",))

    @property
    def zone(self) -> ZoneInfo:
        """:attr:`timezone` as a :class:`~zoneinfo.ZoneInfo`."""
        return ZoneInfo(self.timezone)

    def when(self, starts_at: datetime) -> str:
        """How ``{when}`` shows ``starts_at``: ``on Tue 14 Jan at 10:30`` in :attr:`timezone`."""
        local = starts_at.astimezone(self.zone)
        return f"on {local:%a} {local.day} {local:%b} at {local:%H:%M}"

    def slot_list(self) -> str:
        """``{slots}``: ``1 for Tue 10:00, 2 for Wed 14:30``."""
        return ", ".join(f"{n} for {slot}" for n, slot in enumerate(self.slots, 1))

    def render(
        self,
        template: str,
        *,
        name: str,
        starts_at: datetime,
        slot: str = "",
        signed: bool = False,
    ) -> str:
        """``template`` filled in; ``signed`` prefixes ``Business: `` when a business is set
        and the template does not place ``{business}`` itself."""
        text = template.format(
            name=name,
            when=self.when(starts_at),
            business=self.business or "",
            slots=self.slot_list(),
            slot=slot,
        )
        if signed and self.business and "{business}" not in template:
            text = f"{self.business}: {text}"
        return text
