"""Built-in filters, their combinations and the arguments they add."""

from __future__ import annotations

import re
from typing import Any

import pytest

from bot.conversation import (
    AnswersPrompt,
    ChannelIs,
    Choice,
    Context,
    Custom,
    Filter,
    FromNumber,
    Keyword,
    Regex,
    State,
    StateIs,
    States,
    Status,
    TimerEvent,
    ToNumber,
    normalise,
)
from bot.conversation.filters import AllOf, AnyOf, FilterResult, Not, evaluate
from bot.conversation.testing_backend import HANDSET, OURS, inbound, receipt
from tests.conversation.support import check

TIMER = TimerEvent("tick")


class Ask(States, name="filters.ask"):
    name = State()
    day = State()


class Other(States, name="filters.other"):
    only = State()


# --------------------------------------------------------------------------- keywords


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("yes", "yes"),
        ("  YES  ", "yes"),
        ("yes!", "yes"),
        (" Y. ", "y"),
        ("¡Sí!", "sí"),
        ("«oui»", "oui"),
        ('"stop"', "stop"),
        ("(Y)", "y"),
        ("yes :)", "yes"),
        ("\u200byes\ufeff", "yes"),  # zero-width space, byte order mark
        ("\u3000\uff39\uff25\uff33\u3000", "yes"),  # ideographic spaces, fullwidth YES
        ("STRASSE", "strasse"),
        ("Straße", "strasse"),  # casefold, not lower
        ("ΣΊΣΥΦΟΣ", "σίσυφοσ"),  # final sigma folds too
        ("opt\t \n out", "opt out"),
        ("o.k.", "o.k"),
        ("!!!", ""),
        ("", ""),
        ("👍", "👍"),  # symbols are content, not punctuation
    ],
)
def test_normalise(text: str, expected: str) -> None:
    assert normalise(text) == expected


@pytest.mark.parametrize(
    "text", ["yes", "YES", "yes!", " Y. ", "Y", "y?!", "Yes.\n", "\uff59\uff45\uff53"]
)
async def test_keyword_matches_the_whole_message_ignoring_case_and_punctuation(text: str) -> None:
    assert await check(Keyword("Y", "YES"), inbound(text)) is not None


@pytest.mark.parametrize("text", ["yes please", "yess", "no", "y y", "", "ye-s"])
async def test_keyword_does_not_match_other_messages(text: str) -> None:
    assert await check(Keyword("Y", "YES"), inbound(text)) is None


async def test_keyword_adds_the_keyword_as_declared() -> None:
    assert await check(Keyword("Y", "Yes"), inbound("YES!!")) == {"keyword": "Yes"}
    assert await check(Keyword("Opt out"), inbound("OPT   OUT.")) == {"keyword": "Opt out"}
    assert await check(Keyword("straße"), inbound("STRASSE")) == {"keyword": "straße"}


async def test_keyword_ignores_other_events_and_rejects_empty_keywords() -> None:
    assert await check(Keyword("delivered"), receipt("delivered")) is None
    assert await check(Keyword("tick"), TIMER) is None
    with pytest.raises(ValueError, match="at least one"):
        Keyword()
    with pytest.raises(ValueError, match="empty once normalised"):
        Keyword("?!")


async def test_keyword_matches_an_rcs_postback() -> None:
    assert await check(Keyword("yes"), inbound(postback="YES")) == {"keyword": "yes"}


# --------------------------------------------------------------------------- regex


async def test_regex_named_groups_become_arguments() -> None:
    flt = Regex(r"move to (?P<day>mon|tue)(?: at (?P<hour>\d+))?")
    found = await check(flt, inbound("Please MOVE TO Tue"))
    assert found is not None
    assert (found["day"], found["hour"]) == ("Tue", None)
    assert isinstance(found["match"], re.Match)
    assert flt.provides == {"match", "day", "hour"}
    found = await check(flt, inbound("move to mon at 10"))
    assert found is not None
    assert (found["day"], found["hour"]) == ("mon", "10")
    assert await check(flt, inbound("move to fri")) is None
    assert await check(flt, receipt("delivered")) is None


async def test_regex_flags_default_to_ignorecase_and_compiled_patterns_keep_theirs() -> None:
    assert await check(Regex("^yes$", flags=0), inbound("YES")) is None
    assert await check(Regex(re.compile("^yes$")), inbound("YES")) is None
    assert await check(Regex(re.compile("^yes$", re.I)), inbound("YES")) is not None
    assert repr(Regex("a+")) == "Regex('a+')"


# --------------------------------------------------------------------------- combinators


async def test_and_needs_both_and_merges_their_arguments() -> None:
    flt = Keyword("Y") & AnswersPrompt("confirm")
    answer = inbound("y", metadata={"prompt": "confirm", "gw_id": "g1"})
    assert await check(flt, answer) == {
        "keyword": "Y",
        "prompt": {"prompt": "confirm", "gw_id": "g1"},
    }
    assert await check(flt, inbound("y")) is None
    assert await check(flt, inbound("n", metadata={"prompt": "confirm"})) is None
    assert flt.provides == {"keyword", "prompt"}


async def test_or_takes_the_first_match_and_provides_only_common_names() -> None:
    flt = Regex(r"^(?P<n>\d)$") | Keyword("none")
    found = await check(flt, inbound("7"))
    assert found is not None
    assert (found["n"], set(found)) == ("7", {"n", "match"})
    assert await check(flt, inbound("NONE")) == {"keyword": "none"}
    assert await check(flt, inbound("x")) is None
    assert flt.provides == frozenset()
    both = Regex(r"(?P<n>a)") | Regex(r"(?P<n>b)")
    assert both.provides == {"match", "n"}


async def test_not_inverts_and_adds_nothing() -> None:
    flt = ~Keyword("stop")
    assert await check(flt, inbound("go")) == {}
    assert await check(flt, inbound("STOP")) is None
    assert flt.provides == frozenset()
    assert isinstance(~flt, Keyword)  # double negation unwraps
    assert await check(~ChannelIs("RCS"), inbound("x")) == {}


async def test_combinations_flatten_and_short_circuit() -> None:
    calls: list[str] = []

    def probe(name: str, answer: bool) -> Custom:
        def predicate(ctx: Context) -> bool:
            calls.append(name)
            return answer

        return Custom(predicate)

    flt = probe("a", False) & probe("b", True) & probe("c", True)
    assert isinstance(flt, AllOf)
    assert len(flt.filters) == 3
    assert await check(flt, inbound("x")) is None
    assert calls == ["a"]
    calls.clear()
    either = probe("a", True) | probe("b", True) | probe("c", True)
    assert isinstance(either, AnyOf)
    assert len(either.filters) == 3
    assert await check(either, inbound("x")) == {}
    assert calls == ["a"]
    assert isinstance(~either, Not)
    assert isinstance(~flt, Not)
    assert await check(~flt, inbound("x")) == {}
    with pytest.raises(TypeError, match="is not a Filter"):
        _ = Keyword("x") & (lambda ctx: True)  # type: ignore[operator]
    with pytest.raises(TypeError, match="is not a Filter"):
        Not("x")  # type: ignore[arg-type]
    assert "&" in repr(flt)
    assert "|" in repr(either)


async def test_an_empty_dict_is_a_match() -> None:
    assert await check(Custom(lambda ctx: {}), inbound("x")) == {}
    assert await check(Custom(lambda ctx: {}) & Keyword("x"), inbound("x")) == {"keyword": "x"}


# --------------------------------------------------------------------------- custom


async def test_custom_wraps_sync_and_async_predicates() -> None:
    async def known(ctx: Context) -> FilterResult:
        return {"patient": "Ann"} if ctx.handset == HANDSET else False

    assert await check(Custom(known, provides=["patient"]), inbound("x")) == {"patient": "Ann"}
    assert await check(Custom(known), inbound("x", handset="+61491570999")) is None
    assert await check(Custom(lambda ctx: ctx.data.get("n", 0) < 3), inbound("x")) == {}
    assert Custom(known, provides=["patient"]).provides == {"patient"}
    assert "known" in repr(Custom(known))


async def test_a_filter_subclass_only_implements_call() -> None:
    class Long(Filter):
        provides = frozenset({"length"})

        async def __call__(self, ctx: Context) -> FilterResult:
            return {"length": len(ctx.text)} if len(ctx.text) > 5 else False

    assert await check(Long(), inbound("longer text")) == {"length": 11}
    assert await check(Long() & Keyword("short"), inbound("short")) is None


async def test_built_in_filters_answer_at_once_and_wait_only_for_what_waits() -> None:
    from tests.conversation.support import context

    ctx = context(inbound("Yes!"))
    sync = Keyword("yes") & ~ChannelIs("RCS") & Custom(lambda ctx: {"n": 1}, provides=["n"])
    assert sync.check(ctx) == {"keyword": "yes", "n": 1}  # no coroutine made
    assert await sync(ctx) == {"keyword": "yes", "n": 1}

    async def slow(ctx: Context) -> FilterResult:
        return {"slow": True}

    for flt, expected in [
        (
            Keyword("yes") & Custom(slow, provides=["slow"]) & Keyword("yes"),
            {"keyword": "yes", "slow": True},
        ),
        (Custom(slow) & Keyword("no"), None),
        (Keyword("no") | Custom(slow, provides=["slow"]), {"slow": True}),
        (Custom(slow) | Keyword("yes"), {"slow": True}),
        (~Custom(slow), None),
        (~(Custom(slow) & Keyword("no")), {}),
    ]:
        pending = flt.check(ctx)
        assert not isinstance(pending, bool | dict)  # an awaitable: it has to wait
        result = await pending
        assert (result if isinstance(result, dict) else {} if result else None) == expected
        assert await evaluate(flt, ctx) == expected
    assert (Keyword("no") & Custom(slow)).check(ctx) is False  # stopped before it waits


async def test_keywords_normalise_the_text_once_per_event() -> None:
    from tests.conversation.support import context

    ctx = context(inbound("  \uff39\uff45\uff53!! "))  # fullwidth "Yes"
    assert await evaluate(Keyword("no"), ctx) is None
    assert ctx._normalised_text == "yes"
    assert await evaluate(Keyword("YES"), ctx) == {"keyword": "YES"}


# --------------------------------------------------------------------------- state


async def test_state_is() -> None:
    message = inbound("x")
    assert await check(StateIs(Ask.name), message, state=Ask.name.name) == {}
    assert await check(StateIs("filters.ask:name"), message, state=Ask.name.name) == {}
    assert await check(StateIs(Ask.day), message, state=Ask.name.name) is None
    assert await check(StateIs(Ask), message, state=Ask.day.name) == {}
    assert await check(StateIs(Ask), message, state=Other.only.name) is None
    assert await check(StateIs(Ask), message) is None
    assert await check(StateIs(None), message) == {}
    assert await check(StateIs(None), message, state=Ask.day.name) is None
    assert await check(StateIs(None, Ask.day), message, state=Ask.day.name) == {}
    assert await check(StateIs("*"), message) == {}
    assert await check(StateIs("*"), message, state=Other.only.name) == {}
    assert await check(StateIs(Ask.day), TIMER, state=Ask.day.name) == {}
    assert repr(StateIs(None, Ask.day)) == "StateIs(filters.ask:day, None)"


def test_state_is_refuses_unknown_states() -> None:
    with pytest.raises(ValueError, match="no States group declares"):
        StateIs("filters.ask:nmae")
    with pytest.raises(ValueError, match="at least one"):
        StateIs()
    with pytest.raises(TypeError, match="not a States group"):
        StateIs(int)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- numbers, channels


async def test_numbers_match_the_conversation_for_every_event_kind() -> None:
    assert await check(FromNumber("+61 491 570 156"), inbound("x")) == {}
    assert await check(FromNumber("+61491570999"), inbound("x")) is None
    assert await check(FromNumber(HANDSET), receipt("delivered")) == {}
    assert await check(FromNumber(HANDSET), TIMER) == {}
    assert await check(ToNumber("+61-491-570-157"), inbound("x")) == {}
    assert await check(ToNumber(OURS), inbound("x", to="+61491570158")) is None
    assert await check(ToNumber(OURS), TIMER) == {}  # from the conversation key
    with pytest.raises(ValueError, match="at least one"):
        FromNumber()
    with pytest.raises(ValueError, match="at least one"):
        ToNumber()
    with pytest.raises(ValueError, match="not a number"):
        FromNumber(" - ")


async def test_channel_is() -> None:
    assert await check(ChannelIs("sms"), inbound("x")) == {}
    assert await check(ChannelIs("MMS", "RCS"), inbound("x")) is None
    assert await check(ChannelIs("RCS"), inbound("x", channel="RCS")) == {}
    assert await check(ChannelIs("SMS"), receipt("delivered")) is None
    assert repr(ChannelIs("sms", "MMS")) == "ChannelIs(MMS, SMS)"
    with pytest.raises(ValueError, match="channels are SMS, MMS, RCS"):
        ChannelIs("fax")
    with pytest.raises(ValueError, match="at least one"):
        ChannelIs()


async def test_choice_matches_rcs_postbacks_and_adds_the_data() -> None:
    assert await check(Choice(), inbound(postback="slot-2")) == {"postback": "slot-2"}
    assert await check(Choice(postback="yes"), inbound(postback="yes")) == {"postback": "yes"}
    assert await check(Choice(postback=["yes", "no"]), inbound(postback="no")) is not None
    assert await check(Choice(postback="yes"), inbound(postback="no")) is None
    assert await check(Choice(), inbound("yes", channel="RCS")) is None  # typed, not tapped
    assert await check(Choice(), receipt("delivered")) is None


# --------------------------------------------------------------------------- receipts, prompts


async def test_status_matches_receipts_case_insensitively() -> None:
    flt = Status("FAILED", "expired")
    assert await check(flt, receipt("failed")) == {}
    assert await check(flt, receipt("expired")) == {}
    assert await check(flt, receipt("delivered")) is None
    assert await check(flt, inbound("failed")) is None
    with pytest.raises(ValueError, match="at least one"):
        Status()


async def test_answers_prompt_exposes_the_prompts_metadata() -> None:
    metadata = {"prompt": "confirm", "appointment": "41", "gw_id": "g1"}
    answer: dict[str, Any] | None = await check(
        AnswersPrompt("confirm"), inbound("Y", metadata=metadata)
    )
    assert answer == {"prompt": metadata}
    assert await check(AnswersPrompt("reschedule"), inbound("Y", metadata=metadata)) is None
    assert await check(AnswersPrompt(), inbound("Y", metadata=metadata)) is not None
    assert await check(AnswersPrompt(), inbound("Y", metadata={"gw_id": "g1"})) is None
    assert await check(AnswersPrompt("confirm"), receipt("failed", metadata=metadata)) == {
        "prompt": metadata
    }
    assert await check(AnswersPrompt("confirm"), TIMER) is None
