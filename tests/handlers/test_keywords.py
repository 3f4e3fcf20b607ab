"""Keyword auto-replies and the fallback reply, run by the engine over the in-memory
backend (no Redis needed): exact keywords only, the fallback last and only for messages
nothing else handled, and settings that refuse what could never work."""

from __future__ import annotations

import pydantic
import pytest

from bot.conversation import Context, Engine, Keyword, Router
from bot.conversation.testing_backend import MemoryBackend, inbound, receipt
from handlers.keywords import KeywordSettings, build_router

SETTINGS = KeywordSettings(
    keywords={"HOURS": "Open 9-5, Mon-Fri.", "Where?": "12 High St."},
    fallback="Sorry, we did not get “{text}”. Text HOURS for our hours.",
)


def plugin() -> Router:
    router = Router("plugin")

    @router.message(Keyword("book"))
    async def book(ctx: Context) -> None:
        ctx.reply("Which day?")

    return router


async def answers(engine: Engine, text: str, **options: object) -> tuple[bool, list[str]]:
    backend = MemoryBackend()
    handled = await engine.dispatch(inbound(text, **options), backend)  # type: ignore[arg-type]
    return handled, backend.texts


@pytest.mark.parametrize(
    ("text", "reply"),
    [
        ("HOURS", "Open 9-5, Mon-Fri."),
        (" hours? ", "Open 9-5, Mon-Fri."),
        ("where", "12 High St."),
        ("WHERE!!", "12 High St."),
    ],
)
async def test_a_keyword_gets_its_reply(text: str, reply: str) -> None:
    assert await answers(Engine(plugin(), build_router(SETTINGS)), text) == (True, [reply])


async def test_the_fallback_answers_what_nothing_else_handled() -> None:
    engine = Engine(plugin(), build_router(SETTINGS))
    assert await answers(engine, "book") == (True, ["Which day?"])  # the plugin's
    handled, [reply] = await answers(engine, "what are your hours")  # not a whole keyword
    assert handled and reply.startswith("Sorry, we did not get “what are your hours”")
    long = "x" * 150
    _, [reply] = await answers(engine, long)
    assert f"“{'x' * 100}”" in reply
    # Not an inbound message: no answer.
    assert await answers(engine, "STOP", kind="opt_out") == (False, [])
    backend = MemoryBackend()
    assert not await engine.dispatch(receipt("delivered"), backend)
    assert backend.replies == []


async def test_without_a_fallback_other_messages_stay_unhandled() -> None:
    engine = Engine(build_router(KeywordSettings(keywords={"hi": "Hello!"})))
    assert await answers(engine, "Hi!") == (True, ["Hello!"])
    assert await answers(engine, "hello") == (False, [])
    assert await answers(Engine(build_router(KeywordSettings())), "hi") == (False, [])
    assert build_router(KeywordSettings()).name == "keywords"


def test_braces_in_the_fallback_are_literal_when_doubled() -> None:
    settings = KeywordSettings(fallback="{{auto}} {text}")
    assert settings.fallback_for("hey") == "{auto} hey"
    assert KeywordSettings().fallback_for("hey") is None


@pytest.mark.parametrize(
    "bad",
    [
        {"keywords": {"Hi": "one", "hi!": "two"}},
        {"keywords": {"...": "nothing to match"}},
        {"keywords": {"hi": "  "}},
        {"fallback": "Hello {name}"},
        {"fallback": "Hello {0}"},
        {"fallback": "unbalanced {"},
        {"fallback": " "},
        {"keyword": {"hi": "Hello"}},
    ],
)
def test_settings_refuse_what_could_never_work(bad: dict[str, object]) -> None:
    with pytest.raises(pydantic.ValidationError):
        KeywordSettings.model_validate(bad)
