"""The appointments conversation over the engine and an in-memory backend: every path of an
appointment's life, the settings and what the handlers write."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from bot.conversation import Engine, Reply, TimerEvent
from bot.conversation.testing_backend import HANDSET, OURS, MemoryBackend, inbound, receipt
from bot.core.sms import segments
from bot.inbox.handling import GatewayLimits
from bot.storage.keys import PartitionKeys, conversation_key
from bot.storage.store import Batch
from plugins.appointments import AppointmentSettings, format_duration, parse_duration, plugin
from plugins.appointments.flow import CANCEL, CREATE, build_router, timer_ids
from plugins.appointments.models import (
    InvalidAppointment,
    NewAppointment,
    appointment_key,
    new_document,
    ttl_ms,
)
from plugins.appointments.settings import DEFAULT_REMINDER_TEXT

T0 = datetime(2030, 1, 7, 9, 0, tzinfo=UTC)
SLOTS = ["Tue 10:00", "Wed 14:30"]


@dataclass
class FakeGateway:
    """What a write gets in the gateway (an EventContext's batch, keys and limits)."""

    batch: Batch = field(default_factory=Batch)
    keys: PartitionKeys = field(default_factory=lambda: PartitionKeys(3))
    limits: GatewayLimits = field(default_factory=lambda: GatewayLimits(forward=True))


class Harness:
    """One handset's conversation with the appointments router, on a clock we move."""

    def __init__(self, settings: AppointmentSettings | None = None) -> None:
        self.now = T0
        self.settings = settings or AppointmentSettings()
        self.engine = Engine(build_router(self.settings), clock=lambda: self.now)
        self.backend = MemoryBackend(conversation=conversation_key(OURS, HANDSET))

    async def create(
        self, *, name: str = "Sam", starts_in: timedelta = timedelta(days=2), **extra: Any
    ) -> str:
        new = NewAppointment.check(
            {
                "phone": HANDSET,
                "name": name,
                "starts_at": (self.now + starts_in).isoformat(),
                **extra,
            },
            now=self.now,
            region="AU",
            default_remind_before=self.settings.remind_before,
        )
        doc = new_document(new, now=self.now, via="test")
        assert await self.engine.dispatch(TimerEvent(CREATE, doc), self.backend)
        return str(doc["id"])

    async def advance(self, delta: timedelta) -> int:
        """Move the clock; dispatch the timers due; how many were handled."""
        self.now += delta
        handled = 0
        for ref in self.backend.due(self.now):
            handled += await self.engine.dispatch(ref.event(), self.backend)
        return handled

    async def send(self, text: str, answering: Reply | str | None = "latest") -> bool:
        """The handset writes ``text``, answering our latest message by default."""
        target = self.backend.replies[-1] if answering == "latest" else answering
        assert target is None or isinstance(target, Reply)
        return await self.engine.dispatch(inbound(text, answering=target), self.backend)

    def doc(self, appointment_id: str) -> dict[str, Any]:
        return dict(self.backend.flow("appointments").data["appointments"][appointment_id])

    @property
    def texts(self) -> list[str]:
        return self.backend.texts

    def run_writes(self, *, forward: bool = True) -> tuple[dict[str, Any], list[tuple[str, Any]]]:
        """Run the writes the handlers asked for: the documents set (key → document) and
        the events forwarded (type, data)."""
        gw = FakeGateway(limits=GatewayLimits(forward=forward))
        for write in self.backend.writes:
            write(gw)
        stored: dict[str, Any] = {}
        forwarded: list[tuple[str, Any]] = []
        for op in gw.batch.ops:
            key = gw.batch.keys[op[1] - 1]
            if op[0] == "set":
                assert op[3] > 0  # documents expire
                stored[key] = json.loads(op[2])
            elif op[0] == "xadd":
                assert key == gw.keys.forward
                entry = dict(zip(op[2][::2], op[2][1::2], strict=True))
                forwarded.append((entry["type"], json.loads(entry["data"])))
        return stored, forwarded


def due(h: Harness, appointment: str, purpose: str) -> datetime:
    """When the appointment's timer ``purpose`` (``remind``, ``nudge``, ``final``) is due."""
    ref = h.backend.timer("appointments", timer_ids(appointment)[purpose])
    assert ref is not None, f"no {purpose} timer pending"
    return ref.at


# --------------------------------------------------------------------------- the reminder


async def test_reminder_goes_remind_before_the_start_with_the_appointment_in_its_metadata() -> None:
    h = Harness(AppointmentSettings(remind_before="PT24H"))
    appointment = await h.create(name="Sam Lee", starts_in=timedelta(days=2, hours=1))
    assert h.doc(appointment)["status"] == "scheduled"
    assert due(h, appointment, "remind") == T0 + timedelta(days=1, hours=1)

    assert await h.advance(timedelta(days=1)) == 0
    assert h.texts == []
    assert await h.advance(timedelta(hours=1)) == 1
    assert h.texts == [
        "Hi Sam Lee, reminder of your appointment on Wed 9 Jan at 10:00. "
        "Reply Y to confirm, N to cancel, R to reschedule."
    ]
    reminder = h.backend.replies[0]
    assert reminder.metadata["prompt"] == "appointment"
    assert reminder.metadata["appointment"] == appointment
    assert reminder.request.origin == "timer"  # deferred by quiet hours
    doc = h.doc(appointment)
    assert (doc["status"], doc["step"], doc["reminder_gw_id"]) == (
        "reminded",
        "answer",
        reminder.request.gw_id,
    )
    assert [item["status"] for item in doc["history"]] == ["scheduled", "reminded"]
    assert due(h, appointment, "nudge") == h.now + timedelta(hours=4)


async def test_an_appointment_sooner_than_remind_before_is_reminded_at_once() -> None:
    h = Harness()
    appointment = await h.create(starts_in=timedelta(hours=3))
    assert due(h, appointment, "remind") == T0
    assert await h.advance(timedelta(0)) == 1
    assert "Reply Y to confirm" in h.texts[0]


async def test_the_appointments_own_remind_before_wins_and_when_shows_the_time_zone() -> None:
    h = Harness(AppointmentSettings(timezone="Australia/Sydney", business="Acme Dental"))
    appointment = await h.create(starts_in=timedelta(days=2), remind_before="90m")
    assert due(h, appointment, "remind") == T0 + timedelta(days=2, minutes=-90)
    await h.advance(timedelta(days=2, minutes=-90))
    # 09:00 UTC is 20:00 in Sydney (daylight saving time in January)
    assert h.texts[0].startswith(
        "Acme Dental: Hi Sam, reminder of your appointment on Wed 9 Jan at 20:00."
    )


async def test_creating_twice_is_harmless() -> None:
    h = Harness()
    appointment = await h.create()
    doc = h.doc(appointment)
    assert await h.engine.dispatch(TimerEvent(CREATE, {**doc, "name": "Other"}), h.backend)
    assert h.doc(appointment)["name"] == "Sam"
    assert len(h.backend.timers) == 1


@pytest.mark.parametrize(
    "payload", [None, "x", {}, {"id": "ap_1"}, {"id": "ap_1", "remind_at": "soon"}]
)
async def test_a_malformed_command_is_ignored(payload: Any) -> None:
    h = Harness()
    assert await h.engine.dispatch(TimerEvent(CREATE, payload), h.backend)
    assert await h.engine.dispatch(TimerEvent(CANCEL, payload), h.backend)
    assert (h.backend.flows, h.backend.timers, h.texts) == ({}, {}, [])


# --------------------------------------------------------------------------- answers


async def reminded(h: Harness, **options: Any) -> str:
    appointment = await h.create(**options)
    await h.advance(timedelta(days=1))
    assert len(h.texts) == 1
    h.backend.writes.clear()
    return appointment


@pytest.mark.parametrize("answer", ["Y", "yes", " Yes! "])
async def test_y_confirms(answer: str) -> None:
    h = Harness()
    appointment = await reminded(h)
    assert await h.send(answer)
    assert (
        h.texts[-1]
        == "Thanks Sam, your appointment on Wed 9 Jan at 09:00 is confirmed. See you then!"
    )
    doc = h.doc(appointment)
    assert (doc["status"], doc["step"]) == ("confirmed", None)
    assert doc["history"][-1]["note"].startswith("answered")
    assert h.backend.timers == {}  # the nudge is cancelled
    stored, forwarded = h.run_writes()
    assert stored == {appointment_key(PartitionKeys(3), appointment): doc}
    assert forwarded == [("appointment.confirmed", doc)]
    _, none = h.run_writes(forward=False)
    assert none == []


async def test_n_cancels() -> None:
    h = Harness()
    appointment = await reminded(h)
    assert await h.send("no")
    assert h.texts[-1] == "Thanks Sam, your appointment on Wed 9 Jan at 09:00 is cancelled."
    assert h.doc(appointment)["status"] == "cancelled"
    assert [t for t, _ in h.run_writes()[1]] == ["appointment.cancelled"]


async def test_r_offers_the_slots_and_takes_a_choice() -> None:
    h = Harness(AppointmentSettings(slots=SLOTS))
    appointment = await reminded(h)
    assert await h.send("R")
    assert (
        h.texts[-1]
        == "No problem. Which time suits you instead? Reply 1 for Tue 10:00, 2 for Wed 14:30."
    )
    assert h.backend.replies[-1].metadata["appointment"] == appointment
    assert h.doc(appointment)["step"] == "reschedule"
    assert h.backend.timer("appointments", timer_ids(appointment)["nudge"]) is None
    assert await h.send("2")
    assert h.texts[-1] == (
        "Thanks Sam, we have your request to move to Wed 14:30. We will be in touch to confirm."
    )
    doc = h.doc(appointment)
    assert doc["status"] == "reschedule_requested"
    assert doc["reschedule"] == {"slot": "Wed 14:30", "choice": 2, "text": "2"}
    assert h.backend.timers == {}
    assert [t for t, _ in h.run_writes()[1]] == ["appointment.reschedule_requested"]


async def test_a_slot_may_be_named_and_a_wrong_choice_is_asked_again_once() -> None:
    h = Harness(AppointmentSettings(slots=SLOTS))
    first = await reminded(h)
    await h.send("reschedule")
    assert await h.send("next year")
    assert (
        h.texts[-1]
        == "Sorry, please reply with the number of a time: 1 for Tue 10:00, 2 for Wed 14:30."
    )
    assert not await h.send("whenever")  # left to the fallback
    assert h.doc(first)["step"] == "reschedule"
    assert await h.send("tue 10:00")
    assert h.doc(first)["reschedule"]["slot"] == "Tue 10:00"


async def test_r_without_slots_takes_a_preferred_time_in_free_text() -> None:
    h = Harness()
    appointment = await reminded(h)
    assert await h.send("r")
    assert h.texts[-1] == (
        "No problem. What day and time would suit you instead? Reply with your preferred time."
    )
    assert await h.send("  Thursday   afternoon please ")
    doc = h.doc(appointment)
    assert doc["status"] == "reschedule_requested"
    assert doc["reschedule"] == {"slot": None, "text": "Thursday afternoon please"}
    assert "move to Thursday afternoon please" in h.texts[-1]


async def test_r_and_then_silence_is_a_request_without_a_preferred_time() -> None:
    h = Harness()
    appointment = await reminded(h)
    await h.send("R")
    assert await h.advance(timedelta(hours=4)) == 1
    doc = h.doc(appointment)
    assert doc["status"] == "reschedule_requested"
    assert doc["reschedule"] == {"slot": None, "text": None}
    assert len(h.texts) == 2  # no nudge in the reschedule step


async def test_an_unrecognised_answer_is_asked_again_once_then_left_to_the_fallback() -> None:
    h = Harness()
    appointment = await reminded(h)
    assert await h.send("maybe?")
    assert h.texts[-1] == (
        "Sorry, we did not understand. Please reply Y to confirm your appointment "
        "on Wed 9 Jan at 09:00, N to cancel or R to reschedule."
    )
    assert h.backend.replies[-1].metadata["appointment"] == appointment
    assert not await h.send("what?")
    assert len(h.texts) == 2
    assert h.doc(appointment)["status"] == "reminded"
    assert await h.send("Y")
    assert h.doc(appointment)["status"] == "confirmed"


# --------------------------------------------------------------------------- no answer


async def test_no_answer_gets_one_nudge_then_no_response() -> None:
    h = Harness()
    appointment = await reminded(h)
    assert await h.advance(timedelta(hours=4)) == 1
    assert h.texts[-1] == (
        "We have not heard back. Please reply Y to confirm your appointment on Wed 9 Jan at "
        "09:00, N to cancel, R to reschedule."
    )
    assert h.backend.replies[-1].metadata["appointment"] == appointment
    assert h.doc(appointment)["status"] == "reminded"
    assert await h.advance(timedelta(hours=4)) == 1
    assert len(h.texts) == 2
    doc = h.doc(appointment)
    assert doc["status"] == "no_response"
    assert [t for t, _ in h.run_writes()[1]] == ["appointment.no_response"]
    assert h.backend.timers == {}


async def test_a_late_answer_still_counts_before_the_start() -> None:
    h = Harness()
    appointment = await reminded(h)
    await h.advance(timedelta(hours=4))
    await h.advance(timedelta(hours=4))
    assert h.doc(appointment)["status"] == "no_response"
    assert await h.send("Y")
    assert h.doc(appointment)["status"] == "confirmed"


async def test_after_the_start_no_nudge_goes_and_answers_are_not_ours() -> None:
    h = Harness()
    appointment = await reminded(h)
    assert await h.advance(timedelta(days=2)) == 1  # the nudge timer, late
    assert len(h.texts) == 1
    assert h.run_writes()[0][appointment_key(PartitionKeys(3), appointment)]["status"] == (
        "no_response"
    )
    assert "appointments" not in h.backend.flows  # over: forgotten by the session
    assert not await h.send("Y")


async def test_a_reminder_whose_timer_fired_after_the_start_is_not_sent() -> None:
    h = Harness()
    appointment = await h.create(starts_in=timedelta(hours=30))
    assert await h.advance(timedelta(days=3)) == 1
    assert h.texts == []
    stored, forwarded = h.run_writes()
    doc = stored[appointment_key(PartitionKeys(3), appointment)]
    assert (doc["status"], doc["history"][-1]["note"]) == (
        "no_response",
        "not reminded: the appointment had started",
    )
    assert forwarded == [("appointment.no_response", doc)]


async def test_answering_cancels_the_nudge() -> None:
    h = Harness()
    await reminded(h)
    await h.send("Y")
    assert await h.advance(timedelta(hours=10)) == 0
    assert len(h.texts) == 2


# --------------------------------------------------------------------------- receipts


@pytest.mark.parametrize("status", ["failed", "expired", "rejected"])
async def test_a_failed_receipt_of_the_reminder_makes_it_undeliverable(status: str) -> None:
    h = Harness()
    appointment = await reminded(h)
    assert await h.engine.dispatch(receipt(status, of=h.backend.replies[0]), h.backend)
    doc = h.doc(appointment)
    assert doc["status"] == "undeliverable"
    assert doc["history"][-1]["note"] == f"receipt {status}"
    assert h.backend.timers == {}
    assert [t for t, _ in h.run_writes()[1]] == ["appointment.undeliverable"]


async def test_the_reply_window_counts_from_the_reminders_delivery() -> None:
    h = Harness()
    appointment = await reminded(h)
    queued_at = h.now
    assert due(h, appointment, "nudge") == queued_at + timedelta(hours=4)
    h.now += timedelta(hours=3)  # delivered late (held by quiet hours, a slow network...)
    assert await h.engine.dispatch(receipt("delivered", of=h.backend.replies[0]), h.backend)
    assert due(h, appointment, "nudge") == h.now + timedelta(hours=4)
    assert await h.advance(timedelta(hours=3, minutes=59)) == 0  # no nudge yet
    assert await h.advance(timedelta(minutes=1)) == 1
    assert "reply Y" in h.texts[-1] and h.doc(appointment)["nudged"]
    # once nudged, a (late, duplicate) delivery receipt changes nothing
    assert not await h.engine.dispatch(receipt("delivered", of=h.backend.replies[0]), h.backend)


async def test_other_receipts_are_not_ours() -> None:
    h = Harness()
    appointment = await reminded(h)
    assert not await h.engine.dispatch(receipt("delivered", metadata={"x": "y"}), h.backend)
    await h.send("Y")
    assert not await h.engine.dispatch(receipt("failed", of=h.backend.replies[0]), h.backend)
    assert h.doc(appointment)["status"] == "confirmed"


# --------------------------------------------------------------------------- two appointments


async def test_two_pending_appointments_are_told_apart_by_the_prompt_answered() -> None:
    h = Harness()
    first = await h.create(name="Sam", starts_in=timedelta(days=2))
    second = await h.create(name="Kim", starts_in=timedelta(days=2, hours=2))
    await h.advance(timedelta(days=1, hours=2))
    first_reminder, second_reminder = h.backend.replies
    assert "Sam" in first_reminder.text and "Kim" in second_reminder.text

    assert await h.send("N", answering=first_reminder)
    assert (h.doc(first)["status"], h.doc(second)["status"]) == ("cancelled", "reminded")
    assert await h.send("Y", answering=second_reminder)
    assert h.doc(second)["status"] == "confirmed"


async def test_with_two_waiting_the_texts_say_which_one_a_bare_answer_is_for() -> None:
    h = Harness()
    first = await h.create(name="Sam", starts_in=timedelta(days=2))
    second = await h.create(name="Kim", starts_in=timedelta(days=2, hours=2))
    await h.advance(timedelta(days=1))
    assert h.texts[-1].endswith("Reply Y to confirm, N to cancel, R to reschedule.")
    await h.advance(timedelta(hours=2))
    assert h.texts[-1] == (
        "Hi Kim, reminder of your appointment on Wed 9 Jan at 11:00. Reply Y to confirm, "
        "N to cancel, R to reschedule. Your reply is about this one; we will ask about the "
        "one on Wed 9 Jan at 09:00 next."
    )
    assert await h.send("R")  # Kim's: rescheduling
    assert h.doc(second)["step"] == "reschedule"
    assert await h.send("Thursday")
    assert h.texts[-1] == (
        "Thanks Kim, we have your request to move to Thursday. We will be in touch to "
        "confirm. Next: Sam on Wed 9 Jan at 09:00. Reply Y to confirm, "
        "N to cancel, R to reschedule."
    )
    metadata = h.backend.replies[-1].metadata  # a bare answer now is Sam's
    assert (metadata["prompt"], metadata["appointment"]) == ("appointment", first)
    assert await h.send("Y")
    assert h.texts[-1] == (
        "Thanks Sam, your appointment on Wed 9 Jan at 09:00 is confirmed. See you then!"
    )
    assert (h.doc(first)["status"], h.doc(second)["status"]) == (
        "confirmed",
        "reschedule_requested",
    )


async def test_an_unlinked_answer_goes_to_the_appointment_reminded_last() -> None:
    h = Harness()
    first = await h.create(name="Sam", starts_in=timedelta(days=2))
    second = await h.create(name="Kim", starts_in=timedelta(days=2, hours=2))
    await h.advance(timedelta(days=1))
    await h.advance(timedelta(hours=2))
    assert await h.send("Y", answering=None)
    assert (h.doc(first)["status"], h.doc(second)["status"]) == ("reminded", "confirmed")
    assert await h.send("Y", answering=None)  # now the only one pending
    assert h.doc(first)["status"] == "confirmed"
    assert not await h.send("Y", answering=None)


async def test_answers_to_another_flows_prompt_or_without_appointments_are_not_ours() -> None:
    h = Harness()
    assert not await h.send("Y", answering=None)
    await reminded(h)
    other = inbound("Y", metadata={"prompt": "survey", "gw_id": "x"})
    assert not await h.engine.dispatch(other, h.backend)


async def test_the_session_keeps_other_flows_data_and_state() -> None:
    h = Harness()
    survey = {"state": "survey:asked", "data": {"survey": {"q": 1}}}
    h.backend.flows["survey"] = dict(survey)
    await reminded(h)
    await h.send("Y")
    assert h.backend.flows["survey"] == survey


# --------------------------------------------------------------------------- the cancel command


async def test_the_cancel_command_cancels_without_a_text() -> None:
    h = Harness()
    appointment = await reminded(h)
    assert await h.engine.dispatch(TimerEvent(CANCEL, {"id": appointment, "via": "api"}), h.backend)
    doc = h.doc(appointment)
    assert (doc["status"], doc["history"][-1]["note"]) == ("cancelled", "cancelled via api")
    assert h.backend.timers == {}
    assert len(h.texts) == 1
    assert [t for t, _ in h.run_writes()[1]] == ["appointment.cancelled"]


async def test_a_cancelled_appointment_is_never_reminded() -> None:
    h = Harness()
    appointment = await h.create()
    await h.engine.dispatch(TimerEvent(CANCEL, {"id": appointment}), h.backend)
    assert await h.advance(timedelta(days=3)) == 0
    assert h.texts == []


# --------------------------------------------------------------------------- settings


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("PT24H", timedelta(hours=24)),
        ("P1D", timedelta(days=1)),
        ("P1DT2H30M", timedelta(days=1, hours=2, minutes=30)),
        ("pt90m", timedelta(minutes=90)),
        ("PT45S", timedelta(seconds=45)),
        ("P1W", timedelta(weeks=1)),
        ("24h", timedelta(hours=24)),
        ("90m", timedelta(minutes=90)),
        ("2d", timedelta(days=2)),
        ("1h30m", timedelta(minutes=90)),
        (" 1H 30M ", timedelta(minutes=90)),
        ("1.5h", timedelta(minutes=90)),
    ],
)
def test_durations(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    "text", ["", "24", "P", "PT", "P1DT", "1x", "h", "-1h", "0h", "PT0S", "400d", "P1Y"]
)
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_format_duration() -> None:
    assert format_duration(timedelta(hours=36)) == "P1DT12H"
    assert format_duration(timedelta(minutes=90)) == "PT1H30M"
    assert format_duration(timedelta(days=2)) == "P2D"
    assert parse_duration(format_duration(timedelta(seconds=3725))) == timedelta(seconds=3725)


def test_settings_accept_both_duration_forms_and_refuse_unknown_keys() -> None:
    settings = plugin.configure({"remind_before": "P2D", "no_reply_after": "90m"})
    assert settings.remind_before == timedelta(days=2)
    assert settings.no_reply_after == timedelta(minutes=90)
    with pytest.raises(Exception, match="remind_befor"):
        plugin.configure({"remind_befor": "P1D"})


@pytest.mark.parametrize(
    ("table", "problem"),
    [
        ({"remind_before": "soon"}, "not a duration"),
        ({"no_reply_after": 3600}, "expected a duration"),
        ({"timezone": "Mars/Olympus"}, "IANA time zone"),
        ({"reminder_text": "Hi {nme}"}, "unknown placeholder"),
        ({"confirmed_text": "Hi {name.__class__}"}, "unknown placeholder"),
        ({"slots_text": "Pick one"}, "must contain {slots}"),
        ({"cancelled_text": "Bad {"}, "not a valid template"),
        ({"slots": [str(n) for n in range(10)]}, "at most 9 slots"),
        ({"slots": [""]}, "1 to 40 characters"),
        ({"from_number": "0491570157"}, "E.164"),
    ],
)
def test_bad_settings_are_refused_in_one_line(table: dict[str, Any], problem: str) -> None:
    with pytest.raises(Exception, match="invalid settings") as caught:
        plugin.configure(table)
    assert problem in str(caught.value)
    assert "\n" not in str(caught.value)


def test_the_default_texts_fit_two_gsm_segments_with_a_long_name() -> None:
    settings = AppointmentSettings(slots=["Tuesday 10:00 with Dr Lee"] * 3)
    name = "Maximilian Alexander Oppenheimer-Smythe"  # 39 characters
    start = datetime(2030, 12, 31, 23, 30, tzinfo=UTC)
    long_request = "x" * 200
    for template in (
        settings.reminder_text,
        settings.nudge_text,
        settings.ask_again_text,
        settings.confirmed_text,
        settings.cancelled_text,
        settings.reschedule_text,
        settings.slots_text,
        settings.slot_again_text,
        settings.rescheduled_text,
    ):
        text = settings.render(
            template, name=name, starts_at=start, slot=long_request[:60], signed=True
        )
        info = segments(text)
        assert info.encoding.value == "GSM-7", text
        assert info.segments <= 2, text
    # With another appointment waiting: the reminder says which one a reply is about, and
    # an answer's reply asks about the other one.
    business = AppointmentSettings(business="A" * 40, slots=settings.slots)
    for first, added in (
        (business.reminder_text, business.also_waiting_text),
        (business.confirmed_text, business.next_question_text),
        (business.cancelled_text, business.next_question_text),
        (business.rescheduled_text, business.next_question_text),
    ):
        text = " ".join(
            business.render(template, name=name, starts_at=start, slot="x" * 60, signed=signed)
            for template, signed in ((first, first == business.reminder_text), (added, False))
        )
        info = segments(text)
        assert info.encoding.value == "GSM-7", text
        assert info.segments <= 2, text
    assert "Reply Y to confirm, N to cancel, R to reschedule" in DEFAULT_REMINDER_TEXT
    business = AppointmentSettings(business="A" * 40)
    signed = business.render(business.reminder_text, name=name, starts_at=start, signed=True)
    assert segments(signed).segments <= 2


def test_a_template_placing_the_business_itself_is_not_prefixed() -> None:
    settings = AppointmentSettings(business="Acme", reminder_text="{business} here, {name}.")
    text = settings.render(settings.reminder_text, name="Sam", starts_at=T0, signed=True)
    assert text == "Acme here, Sam."


# --------------------------------------------------------------------------- new appointments


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ({"name": "Sam", "starts_at": "2030-01-08T10:00:00+11:00"}, "phone: required"),
        ({"phone": "12", "name": "Sam", "starts_at": "2030-01-08T10:00:00Z"}, "phone: '12' is not"),
        ({"phone": HANDSET, "starts_at": "2030-01-08T10:00:00Z"}, "name: required"),
        ({"phone": HANDSET, "name": " ", "starts_at": "2030-01-08T10:00:00Z"}, "name: required"),
        (
            {"phone": HANDSET, "name": "x" * 61, "starts_at": "2030-01-08T10:00:00Z"},
            "name: at most",
        ),
        ({"phone": HANDSET, "name": "Sam"}, "starts_at: required"),
        ({"phone": HANDSET, "name": "Sam", "starts_at": "tomorrow"}, "not ISO 8601"),
        ({"phone": HANDSET, "name": "Sam", "starts_at": "2030-01-08T10:00:00"}, "no UTC offset"),
        ({"phone": HANDSET, "name": "Sam", "starts_at": "2030-01-07T08:00:00Z"}, "in the past"),
        (
            {
                "phone": HANDSET,
                "name": "Sam",
                "starts_at": "2030-01-08T10:00Z",
                "remind_before": "x",
            },
            "remind_before: 'x' is not a duration",
        ),
    ],
)
def test_new_appointments_are_checked_field_by_field(raw: dict[str, Any], problem: str) -> None:
    with pytest.raises(InvalidAppointment, match=problem.replace("(", r"\(")):
        NewAppointment.check(raw, now=T0, region="AU", default_remind_before=timedelta(days=1))


def test_a_new_document() -> None:
    new = NewAppointment.check(
        {"phone": "0491 570 156", "name": " Sam   Lee ", "starts_at": "2030-01-08T20:00:00+11:00"},
        now=T0,
        region="AU",
        default_remind_before=timedelta(days=1),
    )
    doc = new_document(new, now=T0, via="api")
    assert doc["phone"] == HANDSET
    assert doc["name"] == "Sam Lee"
    assert (doc["remind_before"], doc["remind_at"]) == ("P1D", "2030-01-07T20:00:00+11:00")
    assert doc["status"] == "scheduled"
    assert doc["history"] == [{"at": T0.isoformat(), "status": "scheduled", "note": "via api"}]
    assert ttl_ms(doc, T0) == round((timedelta(days=31)).total_seconds() * 1000)


def test_the_settings_model_is_strict() -> None:
    with pytest.raises(ValidationError):
        AppointmentSettings.model_validate({"unknown": 1})
