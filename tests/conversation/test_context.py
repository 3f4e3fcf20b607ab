"""Context: replies, state changes, timers, prompt correlation and segment budgets."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import structlog
from pydantic import ValidationError

from bot.conversation import (
    STATE_TIMEOUT_ID,
    AnswersPrompt,
    Context,
    Engine,
    Keyword,
    Reply,
    Router,
    State,
    States,
    Status,
    TimeoutEvent,
    TimerEvent,
    TimerRef,
)
from bot.conversation.testing_backend import HANDSET, OURS, MemoryBackend, inbound, receipt
from bot.core.sms import Encoding
from bot.sinch.models import RcsCard, RcsChoice
from bot.storage.events import GW_CONVERSATION, GW_ID
from bot.storage.keys import conversation_key
from tests.conversation.support import T0, FakeClock


class Visit(States, name="context.visit"):
    asked = State(timeout=timedelta(hours=2))
    rescheduling = State(timeout=600)
    noted = State()


def make(
    event: Any = None, *, budget: int | None = 3, clock: FakeClock | None = None, **backend: Any
) -> tuple[Context, MemoryBackend]:
    store = MemoryBackend(**backend)
    engine = Engine(segment_budget=budget, clock=clock or FakeClock())
    return engine.context(event if event is not None else inbound("hi"), store), store


# --------------------------------------------------------------------------- replies


def test_reply_builds_a_validated_sms_to_the_handset_from_our_number() -> None:
    ctx, backend = make()
    reply = ctx.reply("Hello", metadata={"visit": "7"})
    body = reply.request.body
    assert (body["destination_number"], body["source_number"]) == (HANDSET, OURS)
    assert body["delivery_report"] is True
    assert body["format"] == "SMS"
    assert body["metadata"] == {
        "visit": "7",
        GW_ID: reply.request.gw_id,
        GW_CONVERSATION: conversation_key(OURS, HANDSET),
    }
    assert (reply.text, reply.request.origin, reply.request.channel) == ("Hello", "reply", "sms")
    assert (reply.segments.encoding, reply.segments.segments, reply.over_budget) == (
        Encoding.GSM7,
        1,
        False,
    )
    assert ctx.replies == [reply]
    assert backend.replies == []  # queued only when the event is committed


def test_reply_with_prompt_and_fields() -> None:
    ctx, _ = make()
    reply = ctx.reply("Confirm? Y/N", prompt="confirm", metadata={"a": "1"}, delivery_report=False)
    assert reply.metadata["prompt"] == "confirm"
    assert reply.metadata["a"] == "1"
    assert reply.request.body["delivery_report"] is False
    with pytest.raises(ValueError, match="needs a name"):
        ctx.reply("x", prompt="")


def test_reply_refuses_what_the_provider_would() -> None:
    ctx, _ = make()
    too_many = {f"k{i}": "v" for i in range(8)}  # + gw_id + gw_conv + prompt > 10 pairs
    with pytest.raises(ValidationError, match="at most 10 metadata pairs"):
        ctx.reply("x", metadata=too_many, prompt="p")
    with pytest.raises(ValidationError):
        ctx.reply("")
    with pytest.raises(ValidationError, match="media entry"):
        ctx.reply("pic", media=["ftp://example.com/a.png"])
    assert ctx.replies == []


def test_mms_replies_and_their_budget() -> None:
    ctx, _ = make(budget=1)
    reply = ctx.reply("x" * 400, media=["https://example.com/a.png"], subject="Map")
    assert reply.request.body["format"] == "MMS"
    assert reply.request.body["media"] == ["https://example.com/a.png"]
    assert reply.over_budget is False  # MMS is not billed in segments
    assert ctx.reply("y", subject="Only a subject").request.body["format"] == "MMS"


def test_reply_rcs_with_choices_and_fallback() -> None:
    ctx, _ = make(budget=1)
    reply = ctx.reply_rcs(
        "Confirm Tuesday 10:00?",
        choices=["Yes", RcsChoice(text="Another day", postback_data="move")],
        fallback_text="Confirm Tue 10:00? Reply Y or N",
        prompt="confirm",
    )
    body = reply.request.body
    assert reply.request.channel == "rcs"
    assert body["rcs_message"]["choice_message"]["choices"] == [
        {"text_message": {"text": "Yes"}, "postback_data": "Yes"},
        {"text_message": {"text": "Another day"}, "postback_data": "move"},
    ]
    assert body["fallback"] == {"format": "SMS", "content": "Confirm Tue 10:00? Reply Y or N"}
    assert body["metadata"]["prompt"] == "confirm"
    assert reply.text == "Confirm Tue 10:00? Reply Y or N"
    card = ctx.reply_rcs(card=RcsCard(title="Your visit", description="Tue 10:00"))
    assert card.text == "Your visit"
    assert card.over_budget is False  # no SMS fallback, nothing billed in segments
    long = ctx.reply_rcs("Hi", fallback_text="z" * 200)
    assert long.over_budget is True
    with pytest.raises(ValidationError, match="exactly one of text, card or carousel"):
        ctx.reply_rcs()


def test_replies_outside_messages_come_from_the_conversations_number() -> None:
    ctx, _ = make(TimerEvent("remind"))
    reply = ctx.reply("Reminder")
    assert (reply.request.body["source_number"], reply.request.origin) == (OURS, "timer")
    pooled, _ = make(receipt("delivered"), conversation=conversation_key(None, HANDSET))
    reply = pooled.reply("From the pool")
    assert "source_number" not in reply.request.body
    assert reply.request.origin == "reply"
    assert pooled.our_number is None
    assert pooled.handset == HANDSET


def test_context_exposes_the_event() -> None:
    message = inbound("Hi there", metadata={"prompt": "p", GW_ID: "g"})
    ctx, _ = make(message, state=Visit.noted.name, data={"n": 1})
    assert (ctx.kind, ctx.message, ctx.receipt, ctx.payload) == ("message", message, None, None)
    assert (ctx.text, ctx.state, ctx.data) == (
        "Hi there",
        Visit.noted.name,
        {"n": 1},
    )
    assert ctx.prompt == {"prompt": "p", GW_ID: "g"}
    assert ctx.now() == T0
    assert repr(ctx) == "<Context message flow='default' state='context.visit:noted'>"
    timer, _ = make(TimerEvent("t", payload=[1, 2]))
    assert (timer.kind, timer.payload, timer.text, timer.prompt, timer.message) == (
        "timer",
        [1, 2],
        "",
        None,
        None,
    )
    with pytest.raises(TypeError, match="not an event"):
        make("a string")


# --------------------------------------------------------------------------- state


def test_goto_a_state_with_a_timeout_schedules_its_expiry() -> None:
    ctx, _ = make()
    ctx.goto(Visit.asked)
    assert ctx.state == Visit.asked
    assert ctx.scheduled == [
        TimerRef(
            f"{STATE_TIMEOUT_ID}:default",
            Visit.asked.name,
            T0 + timedelta(hours=2),
            kind="timeout",
            flow="default",
        )
    ]
    assert ctx.scheduled[0].event() == TimeoutEvent(Visit.asked.name, "default")
    assert ctx.cancelled == []


def test_leaving_a_timed_state_cancels_its_expiry_and_reentering_restarts_it() -> None:
    clock = FakeClock()
    ctx, _ = make(clock=clock, state=Visit.asked.name)  # stored before flows: its legacy id
    ctx.goto(Visit.noted)
    assert (ctx.scheduled, ctx.cancelled) == ([], [STATE_TIMEOUT_ID])
    ctx.goto("context.visit:rescheduling")
    clock.advance(60)
    ctx.goto(Visit.rescheduling)
    assert [(r.name, r.at) for r in ctx.scheduled] == [
        (Visit.rescheduling.name, T0 + timedelta(seconds=660))
    ]
    assert ctx.cancelled == [STATE_TIMEOUT_ID, f"{STATE_TIMEOUT_ID}:default"]
    with pytest.raises(ValueError, match="no States group declares"):
        ctx.goto("context.visit:nope")


def test_goto_from_an_untimed_state_cancels_nothing() -> None:
    ctx, _ = make(state=Visit.noted.name)
    ctx.goto(Visit.asked)
    assert ctx.cancelled == []
    unknown, _ = make(state="removed.plugin:state")  # a state nobody declares any more
    unknown.goto(Visit.noted)
    assert unknown.cancelled == [STATE_TIMEOUT_ID]


def test_end_clears_state_and_data_and_cancels_the_expiry() -> None:
    ctx, _ = make(state=Visit.asked.name, data={"visit": "7"})
    data = ctx.data
    ctx.end()
    assert (ctx.state, ctx.data, data, ctx.cancelled) == (None, {}, {}, [STATE_TIMEOUT_ID])
    idle, _ = make()
    idle.end()
    assert idle.cancelled == []


async def test_the_session_is_saved_only_when_it_changed() -> None:
    router = Router("r")

    @router.message(Keyword("look"))
    async def look(data: dict[str, Any]) -> None:
        assert data == {"n": 1}

    @router.message(Keyword("count"))
    async def count(data: dict[str, Any]) -> None:
        data["n"] += 1

    @router.message(Keyword("same"))
    async def same(ctx: Context) -> None:
        ctx.goto(Visit.noted)  # already there

    @router.message(Keyword("done"))
    async def done(ctx: Context) -> None:
        ctx.end()

    engine = Engine(router)
    backend = MemoryBackend(flows={"r": {"state": Visit.noted.name, "data": {"n": 1}}})
    for text in ("look", "same"):
        await engine.dispatch(inbound(text), backend)
    assert backend.saves == 0
    await engine.dispatch(inbound("count"), backend)
    assert (backend.saves, backend.flow("r").data) == (1, {"n": 2})
    await engine.dispatch(inbound("done"), backend)
    assert (backend.saves, backend.flows, backend.history) == (
        2,
        {},
        [("r", Visit.noted.name, None)],
    )


async def test_session_data_must_stay_json() -> None:
    router = Router("r")

    @router.message()
    async def store_a_datetime(ctx: Context) -> None:
        ctx.reply("noted")
        ctx.data["when"] = datetime.now(UTC)

    backend = MemoryBackend()
    with pytest.raises(TypeError, match="data of flow 'r' must be JSON-serialisable"):
        await Engine(router).dispatch(inbound("x"), backend)
    assert (backend.replies, backend.flows) == ([], {})


# --------------------------------------------------------------------------- timers


def test_schedule_records_timers_with_payloads() -> None:
    clock = FakeClock()
    ctx, _ = make(clock=clock)
    ref = ctx.schedule("nudge", delay=90, payload={"n": 1})
    at = ctx.schedule("call", at=datetime(2030, 1, 8, 10, 0, tzinfo=UTC), id="call-7")
    later = ctx.schedule("other", delay=timedelta(hours=1))
    assert (ref.name, ref.at, ref.payload, ref.kind) == (
        "nudge",
        T0 + timedelta(seconds=90),
        {"n": 1},
        "timer",
    )
    assert len(ref.id) == 32
    assert at.id == "call-7"
    assert ref.event() == TimerEvent("nudge", {"n": 1}, ref.id, "default")
    assert ctx.scheduled == [ref, at, later]
    again = ctx.schedule("call", delay=5, id="call-7")  # the same id replaces
    assert ctx.scheduled == [ref, later, again]


def test_schedule_checks_its_arguments() -> None:
    ctx, _ = make()
    with pytest.raises(ValueError, match="exactly one of"):
        ctx.schedule("x")
    with pytest.raises(ValueError, match="exactly one of"):
        ctx.schedule("x", at=T0, delay=1)
    with pytest.raises(ValueError, match="timezone-aware"):
        ctx.schedule("x", at=datetime(2030, 1, 1))  # naive
    with pytest.raises(ValueError, match="must not be negative"):
        ctx.schedule("x", delay=-1)
    with pytest.raises(ValueError, match="needs a name"):
        ctx.schedule("", delay=1)
    with pytest.raises(TypeError, match="JSON-serialisable"):
        ctx.schedule("x", delay=1, payload={"at": T0})
    assert ctx.scheduled == []


def test_cancel_drops_timers_of_this_event_and_records_the_id() -> None:
    ctx, _ = make()
    ref = ctx.schedule("a", delay=1)
    keep = ctx.schedule("b", delay=1)
    ctx.cancel(ref)
    ctx.cancel("older-timer")
    ctx.cancel("older-timer")
    assert ctx.scheduled == [keep]
    assert ctx.cancelled == [ref.key, "default/older-timer"]  # keys: "<plugin>/<id>"
    assert ref.key == f"default/{ref.id}"


async def test_timers_are_applied_cancel_first_and_fire_their_handlers() -> None:
    clock = FakeClock()
    calls: list[Any] = []
    router = Router("r")

    @router.message(Keyword("start"))
    async def start(ctx: Context) -> None:
        ctx.goto(Visit.asked)
        ctx.data["nudge"] = ctx.schedule("nudge", delay=600, payload={"n": 1}).id

    @router.message(Keyword("stop"))
    async def stop(ctx: Context) -> None:
        ctx.cancel(ctx.data.pop("nudge"))
        ctx.goto(Visit.noted)

    @router.timer("nudge")
    async def nudge(ctx: Context, payload: dict[str, int]) -> None:
        calls.append(payload)
        ctx.reply("Still there?")

    @router.timeout(Visit.asked)
    async def expired(ctx: Context) -> None:
        calls.append("expired")
        ctx.end()

    engine = Engine(router, clock=clock)
    backend = MemoryBackend()
    await engine.dispatch(inbound("start"), backend)
    assert sorted(ref.name for ref in backend.timers.values()) == ["context.visit:asked", "nudge"]
    assert backend.due(clock.advance(599)) == []
    for ref in backend.due(clock.advance(1)):
        await engine.dispatch(ref.event(), backend)
    assert (calls, backend.texts) == ([{"n": 1}], ["Still there?"])
    for ref in backend.due(clock.advance(7200)):
        await engine.dispatch(ref.event(), backend)
    assert calls == [{"n": 1}, "expired"]
    assert (backend.flow("r").state, backend.timers) == (None, {})

    await engine.dispatch(inbound("start"), backend)
    await engine.dispatch(inbound("stop"), backend)
    assert (backend.flow("r").state, backend.timers) == (Visit.noted.name, {})


def test_timer_refs_round_trip_through_json() -> None:
    ref = TimerRef("id1", "nudge", T0, {"n": [1, 2]})
    timeout = TimerRef(STATE_TIMEOUT_ID, Visit.asked.name, T0, kind="timeout")
    owned = TimerRef("t2", "nudge", T0, kind="timer", flow="reminders")
    for item in (ref, timeout, owned):
        assert TimerRef.from_json(item.to_json()) == item
    with pytest.raises(ValueError, match="unknown timer kind"):
        TimerRef.from_json({**ref.to_json(), "kind": "alarm"})


# --------------------------------------------------------------------------- receipt-aware flows


async def test_delivered_but_no_reply_within_a_time_and_failed_receipts() -> None:
    clock = FakeClock()
    router = Router("reminders")

    @router.message(Keyword("remind"))
    async def remind(ctx: Context) -> None:
        ctx.reply("Your visit is tomorrow. Reply Y to confirm.", prompt="confirm")

    @router.receipt(Status("delivered"), AnswersPrompt("confirm"))
    async def delivered(ctx: Context) -> None:
        ctx.data["waiting"] = ctx.schedule("no_reply", delay=timedelta(hours=2)).id

    @router.receipt(Status("failed", "expired"), AnswersPrompt("confirm"))
    async def undeliverable(ctx: Context, receipt: Any) -> None:
        ctx.data["undeliverable"] = str(receipt.status)

    @router.message(Keyword("Y"), AnswersPrompt("confirm"))
    async def confirmed(ctx: Context) -> None:
        ctx.cancel(ctx.data.pop("waiting"))
        ctx.data["confirmed"] = True

    @router.timer("no_reply")
    async def no_reply(ctx: Context) -> None:
        ctx.data["no_reply"] = True

    engine = Engine(router, clock=clock)
    answered, silent, failing = MemoryBackend(), MemoryBackend(), MemoryBackend()
    for backend in (answered, silent, failing):
        await engine.dispatch(inbound("remind"), backend)
    for backend in (answered, silent):
        await engine.dispatch(receipt("delivered", of=backend.replies[0]), backend)
    await engine.dispatch(receipt("expired", of=failing.replies[0]), failing)
    await engine.dispatch(inbound("y", answering=answered.replies[0]), answered)
    clock.advance(7200)
    for backend in (answered, silent, failing):
        for ref in backend.due(clock.now):
            await engine.dispatch(ref.event(), backend)
    assert answered.flow("reminders").data == {"confirmed": True}
    waiting = silent.flow("reminders").data["waiting"]
    assert silent.flow("reminders").data == {"waiting": waiting, "no_reply": True}
    assert failing.flow("reminders").data == {"undeliverable": "expired"}


# --------------------------------------------------------------------------- prompt correlation


async def test_two_pending_prompts_to_one_number_are_told_apart() -> None:
    router = Router("appointments")
    decisions: list[tuple[str, str]] = []

    @router.timer("remind")
    async def remind(ctx: Context, payload: dict[str, str]) -> None:
        ctx.reply(
            f"{payload['when']}: reply Y to confirm, N to cancel",
            prompt="confirm",
            metadata={"appointment": payload["id"]},
        )

    @router.timer("survey")
    async def survey(ctx: Context) -> None:
        ctx.reply("How was your last visit? Reply 1-5", prompt="survey")

    @router.message(Keyword("Y", "N"), AnswersPrompt("confirm"))
    async def decide(keyword: str, prompt: dict[str, str]) -> None:
        decisions.append((prompt["appointment"], keyword))

    @router.message(AnswersPrompt("survey"))
    async def rated(message: Any) -> None:
        decisions.append(("survey", message.content))

    @router.message()
    async def unclear(ctx: Context) -> None:
        decisions.append(("unclear", ctx.text))

    engine = Engine(router)
    backend = MemoryBackend()
    await engine.dispatch(TimerEvent("remind", {"id": "41", "when": "Mon 9:00"}), backend)
    await engine.dispatch(TimerEvent("remind", {"id": "42", "when": "Tue 10:00"}), backend)
    await engine.dispatch(TimerEvent("survey"), backend)
    monday, tuesday, poll = backend.replies
    await engine.dispatch(inbound("y", answering=tuesday), backend)
    await engine.dispatch(inbound("N.", answering=monday), backend)
    await engine.dispatch(inbound("Y", answering=poll), backend)  # a rating, not a confirmation
    await engine.dispatch(inbound("y"), backend)  # answers nothing we know
    assert decisions == [("42", "Y"), ("41", "N"), ("survey", "Y"), ("unclear", "y")]


# --------------------------------------------------------------------------- segment budget


def test_replies_over_the_segment_budget_are_flagged_and_logged() -> None:
    ctx, _ = make(budget=2)
    with structlog.testing.capture_logs() as logs:
        fits = ctx.reply("a" * 306)  # 2 GSM-7 segments of 153
        over = ctx.reply("a" * 307)
        unicode_fits = ctx.reply("é" * 2 + "ж" * 132)  # UCS-2: 134 units, 2 segments of 67
        unicode_over = ctx.reply("ж" * 133 + "😀")  # the emoji takes 2 units: 135
    replies = (fits, over, unicode_fits, unicode_over)
    assert [r.segments.segments for r in replies] == [2, 3, 2, 3]
    assert [r.over_budget for r in replies] == [False, True, False, True]
    assert ctx.over_budget == [over, unicode_over]
    warnings = [entry for entry in logs if entry["log_level"] == "warning"]
    assert [(w["event"], w["segments"], w["budget"], w["encoding"]) for w in warnings] == [
        ("reply over the segment budget", 3, 2, "GSM-7"),
        ("reply over the segment budget", 3, 2, "UCS-2"),
    ]
    assert warnings[0]["gw_id"] == over.request.gw_id


async def test_no_budget_means_no_warnings_and_the_backend_sees_the_flags() -> None:
    ctx, _ = make(budget=None)
    with structlog.testing.capture_logs() as logs:
        assert ctx.reply("a" * 2000).over_budget is False
    assert logs == []
    router = Router("r")
    router.message()(lambda ctx: ctx.reply("b" * 500))
    backend = MemoryBackend()
    await Engine(router, segment_budget=1).dispatch(inbound("x"), backend)
    assert [(r.segments.segments, r.over_budget) for r in backend.replies] == [(4, True)]
    assert isinstance(backend.replies[0], Reply)
