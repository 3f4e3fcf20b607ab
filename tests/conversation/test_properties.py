"""Property-based: random message sequences through a small two-state flow keep its
invariants."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from bot.conversation import (
    STATE_TIMEOUT_ID,
    AnswersPrompt,
    Context,
    Engine,
    Keyword,
    Regex,
    Router,
    State,
    States,
    TimeoutEvent,
)
from bot.conversation.testing_backend import MemoryBackend, inbound
from tests.conversation.support import FakeClock


class Quiz(States, name="properties.quiz"):
    asking = State(timeout=60)
    confirming = State()


NAMES = sorted(state.name for state in Quiz.all())
DECLARED = {None, *NAMES}
calls: list[str] = []


def counted(handler: Callable[..., Coroutine[Any, Any, None]]) -> Any:
    async def wrapper(ctx: Context, **arguments: Any) -> None:
        calls.append(handler.__name__)
        await handler(ctx)

    wrapper.__name__ = handler.__name__
    return wrapper


router = Router("quiz")


@router.message(Keyword("start", "again"))
@counted
async def start(ctx: Context) -> None:
    ctx.reply("Pick a number")
    ctx.goto(Quiz.asking)


@router.message(Keyword("stop"))
@counted
async def stop(ctx: Context) -> None:
    ctx.end()


@router.message(Regex(r"^\s*\d+\s*$"), state=Quiz.asking)
@counted
async def number(ctx: Context) -> None:
    ctx.data["n"] = int(ctx.text)
    ctx.reply(f"{ctx.data['n']}, sure? Y/N", prompt="sure")
    ctx.goto(Quiz.confirming)


@router.message(state=Quiz.asking)
@counted
async def not_a_number(ctx: Context) -> None:
    ctx.reply("A number, please")
    ctx.goto(Quiz.asking)  # restarts the clock


@router.message(Keyword("Y"), AnswersPrompt("sure"), state=Quiz.confirming)
@counted
async def yes(ctx: Context) -> None:
    ctx.reply("Done")
    ctx.end()


@router.message(Keyword("N"), state=Quiz.confirming)
@counted
async def no(ctx: Context) -> None:
    ctx.goto(Quiz.asking)


@router.timeout(Quiz.asking)
@counted
async def too_slow(ctx: Context) -> None:
    ctx.reply("Too slow")
    ctx.end()


WORDS = ["start", "again", "stop.", "1", " 42 ", "7", "Y", "y!", "N", "7x"]
Step = tuple[str, Any]
say = st.tuples(st.just("say"), st.sampled_from(WORDS))
answer = st.tuples(st.just("answer"), st.sampled_from(["Y", "N", "3"]))  # to the last reply
steps = st.one_of(
    # The flow's own words and answers twice as often as noise, timers and stale expiries.
    say,
    say,
    answer,
    answer,
    st.tuples(st.just("say"), st.text(min_size=1, max_size=6)),
    st.tuples(st.just("wait"), st.integers(min_value=1, max_value=120)),
    st.tuples(st.just("expire"), st.sampled_from(NAMES)),  # stale or not
)


EXPIRY = f"{STATE_TIMEOUT_ID}:quiz"


async def drive(sequence: list[Step]) -> None:
    clock = FakeClock()
    engine = Engine(router, clock=clock)
    backend = MemoryBackend()
    calls.clear()
    for action, value in sequence:
        events: list[Any]
        if action == "say":
            events = [inbound(value)]
        elif action == "answer":
            last = backend.replies[-1] if backend.replies else None
            events = [inbound(value, answering=last)]
        elif action == "wait":
            events = [ref.event() for ref in backend.due(clock.advance(value))]
        else:
            events = [TimeoutEvent(value)]
        for event in events:
            before, replies_before = len(calls), len(backend.replies)
            handled = await engine.dispatch(event, backend)
            assert len(calls) - before == int(handled) <= 1
            assert len(backend.replies) - replies_before <= 1
            flow = backend.flow("quiz")
            assert flow.state in DECLARED
            expiry = backend.timers.get(EXPIRY)
            if flow.state == Quiz.asking.name:
                assert expiry is not None
                assert expiry.name == Quiz.asking.name
                assert expiry.at > clock.now
            else:
                assert expiry is None
            assert set(backend.timers) <= {EXPIRY}
            assert set(backend.flows) <= {"quiz"}
            if flow.state is None:
                assert flow.data == {}


@settings(max_examples=300, deadline=None)
@given(st.lists(steps, max_size=30))
def test_random_conversations_keep_the_flows_invariants(sequence: list[Step]) -> None:
    asyncio.run(drive(sequence))
