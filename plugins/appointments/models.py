"""Appointments as stored: the document, its statuses, its keys, and checking new ones.

An appointment is one JSON document at :func:`appointment_key` (in the partition of its
phone number, next to the conversation that owns it), plus its entry in the index hash
:data:`INDEX` (id → partition) through which the API finds it by id::

    {"id": "ap_3f9c...", "phone": "+61491570156", "name": "Sam",
     "starts_at": "2030-01-08T10:30:00+11:00", "remind_before": "P1D",
     "remind_at": "2030-01-07T10:30:00+11:00", "status": "reminded",
     "history": [{"at": "...", "status": "scheduled", "note": "via api"},
                 {"at": "...", "status": "reminded", "note": "reminder sent"}],
     "reminder_gw_id": "...", "reschedule": null, ...}

The API writes a new document once (status ``scheduled``); every later change is made by
the conversation's handlers (:mod:`plugins.appointments.flow`), which write the whole
document again in the event's batch.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal

from bot.core.sms import InvalidPhoneNumber, normalise_phone
from bot.storage.keys import PREFIX, PartitionKeys
from plugins.appointments.settings import format_duration, parse_duration

__all__ = [
    "FINAL",
    "INDEX",
    "KEEP_AFTER_START",
    "MAX_NAME",
    "STATUSES",
    "Appointment",
    "InvalidAppointment",
    "NewAppointment",
    "Status",
    "appointment_key",
    "dumps",
    "history_entry",
    "new_document",
    "parse_start",
    "ttl_ms",
    "valid_id",
]

Status = Literal[
    "scheduled",
    "reminded",
    "confirmed",
    "cancelled",
    "reschedule_requested",
    "no_response",
    "undeliverable",
]
STATUSES: Final[tuple[str, ...]] = (
    "scheduled",
    "reminded",
    "confirmed",
    "cancelled",
    "reschedule_requested",
    "no_response",
    "undeliverable",
)
FINAL: Final = frozenset(
    {"confirmed", "cancelled", "reschedule_requested", "no_response", "undeliverable"}
)
"""Statuses forwarded as ``appointment.<status>`` events. (A late answer may still move a
``no_response`` appointment on, see :mod:`plugins.appointments.flow`.)"""

INDEX: Final = f"{PREFIX}:appointments"
"""Hash: appointment id → the partition its document is in."""
KEEP_AFTER_START: Final = timedelta(days=30)
"""How long a document is kept after the appointment's start."""
MAX_NAME: Final = 60
"""The longest name accepted (it goes into the SMS texts)."""

Appointment = dict[str, Any]
"""An appointment document (see the module documentation)."""

_ID: Final = re.compile(r"ap_[0-9a-f]{20}")


def appointment_key(keys: PartitionKeys, appointment_id: str) -> str:
    """``sb:{p<N>}:appt:<id>``: the document's key, in the partition's hash slot."""
    return f"{PREFIX}:{keys.tag}:appt:{appointment_id}"


def valid_id(value: str) -> bool:
    """Whether ``value`` looks like an appointment id (``ap_`` and 20 hex digits)."""
    return _ID.fullmatch(value) is not None


def new_id() -> str:
    return f"ap_{uuid.uuid4().hex[:20]}"


def dumps(document: Mapping[str, Any]) -> str:
    """A document as compact JSON."""
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False)


def ttl_ms(document: Mapping[str, Any], now: datetime) -> int:
    """Milliseconds the document is kept from ``now``: until :data:`KEEP_AFTER_START` after
    the start (at least a day)."""
    end = datetime.fromisoformat(str(document["starts_at"])) + KEEP_AFTER_START
    return max(round((end - now).total_seconds() * 1000), 86400 * 1000)


def history_entry(at: datetime, status: str, note: str) -> dict[str, str]:
    """One ``history`` item."""
    return {"at": at.astimezone(UTC).isoformat(), "status": status, "note": note}


class InvalidAppointment(ValueError):
    """A new appointment's field is wrong; the message names the field (``starts_at: ...``)."""


def parse_start(value: Any, now: datetime) -> datetime:
    """``starts_at``: ISO 8601 with a UTC offset, in the future."""
    if not isinstance(value, str) or not value.strip():
        raise InvalidAppointment(
            "starts_at: required, ISO 8601 with an offset, e.g. 2030-01-31T09:30:00+11:00"
        )
    try:
        starts_at = datetime.fromisoformat(value.strip())
    except ValueError:
        raise InvalidAppointment(
            f"starts_at: {value[:40]!r} is not ISO 8601, e.g. 2030-01-31T09:30:00+11:00"
        ) from None
    if starts_at.tzinfo is None or starts_at.utcoffset() is None:
        raise InvalidAppointment(
            f"starts_at: {value[:40]!r} has no UTC offset (add one: +11:00, Z...)"
        )
    if starts_at <= now:
        raise InvalidAppointment(f"starts_at: {value[:40]!r} is in the past")
    return starts_at


@dataclass(frozen=True)
class NewAppointment:
    """A checked request to create an appointment (from the API, the CLI or a CSV row)."""

    phone: str
    name: str
    starts_at: datetime
    remind_before: timedelta

    @classmethod
    def check(
        cls,
        raw: Mapping[str, Any],
        *,
        now: datetime,
        region: str,
        default_remind_before: timedelta,
    ) -> NewAppointment:
        """Validate ``raw`` (``phone``, ``name``, ``starts_at``, optional ``remind_before``).

        Raises:
            InvalidAppointment: the first problem, naming its field.
        """
        phone = raw.get("phone")
        if not isinstance(phone, str) or not phone.strip():
            raise InvalidAppointment("phone: required")
        try:
            number = normalise_phone(phone, region)
        except InvalidPhoneNumber:
            raise InvalidAppointment(f"phone: {phone[:40]!r} is not a valid phone number") from None
        name = raw.get("name")
        if not isinstance(name, str) or not name.strip():
            raise InvalidAppointment("name: required")
        name = " ".join(name.split())
        if len(name) > MAX_NAME:
            raise InvalidAppointment(f"name: at most {MAX_NAME} characters")
        starts_at = parse_start(raw.get("starts_at"), now)
        remind_before = default_remind_before
        value = raw.get("remind_before")
        if value is not None and value != "":
            try:
                remind_before = parse_duration(value)
            except ValueError as exc:
                raise InvalidAppointment(f"remind_before: {exc}") from None
        return cls(number, name, starts_at, remind_before)

    def remind_at(self, now: datetime) -> datetime:
        """When the reminder goes: ``remind_before`` ahead of the start, or now if that has
        passed."""
        return max(self.starts_at - self.remind_before, now)


def new_document(
    new: NewAppointment, *, now: datetime, via: str, appointment_id: str | None = None
) -> Appointment:
    """The document of a new appointment, status ``scheduled``."""
    return {
        "id": appointment_id or new_id(),
        "phone": new.phone,
        "name": new.name,
        "starts_at": new.starts_at.isoformat(),
        "remind_before": format_duration(new.remind_before),
        "remind_at": new.remind_at(now).isoformat(),
        "status": "scheduled",
        "created_at": now.astimezone(UTC).isoformat(),
        "history": [history_entry(now, "scheduled", f"via {via}")],
        "reminder_gw_id": None,
        "reschedule": None,
    }
