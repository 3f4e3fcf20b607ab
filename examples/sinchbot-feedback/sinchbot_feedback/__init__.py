"""A customer-feedback survey by SMS: an example sinchbot plugin.

::

    bot:    Thanks for visiting Acme Dental! How did we do? Reply 1 (poor) to 5 (great).
    phone:  2
    bot:    Sorry to hear that. What could we do better?
    phone:  The wait was long.
    bot:    Thank you, we will pass it on.

A survey starts from the management API (``POST /api/feedback {"phone": "..."}``, say after
a visit) or when the handset texts FEEDBACK. The question goes out as a *prompt*, so only
answers to it count; one nudge follows if nobody answers (a timer); the question expires
after a day and the follow-up after two hours (state timeouts). Receipts drive the rest:
the nudge is timed from the question's delivery, and a question that cannot be delivered
ends the survey. Answers are stored with the event
(``ctx.on_commit``) and listed by ``GET /api/feedback``.
"""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from bot.api.routes import ApiError
from bot.conversation import (
    AnswersPrompt,
    Context,
    Keyword,
    Regex,
    Router,
    State,
    StateIs,
    States,
    Status,
)
from bot.core.sms import InvalidPhoneNumber, normalise_phone
from bot.inbox.handling import EventContext
from bot.plugins import Plugin, PluginHost
from bot.storage.keys import PREFIX, PartitionKeys

__all__ = ["Settings", "Survey", "plugin", "router"]

NUDGE = "feedback.nudge"
"""The reminder timer's name, and its id (one pending nudge per conversation)."""
START = "feedback.start"
"""The command the API posts to start a survey."""


class Settings(BaseModel):
    """The ``[plugin.feedback]`` table of the bot's config file."""

    model_config = ConfigDict(extra="forbid")  # a typo is an error, not a silent default

    business: str = Field(default="us", min_length=1)
    """Who is asking, as in "Thanks for visiting <business>!"."""
    nudge_after: timedelta = timedelta(hours=4)
    """When to remind a handset that has not answered (``"PT4H"`` or seconds)."""
    follow_up_below: int = Field(default=3, ge=1, le=6)
    """Ratings below this one are asked what went wrong."""


class Survey(States, name="feedback"):
    rating = State(timeout=timedelta(days=1))  # asked for 1-5
    comment = State(timeout=timedelta(hours=2))  # asked what we could do better


router = Router("feedback")


def ask(ctx: Context, settings: Settings, survey: str) -> None:
    """Send the question and wait for its answer."""
    question = ctx.reply(
        f"Thanks for visiting {settings.business}! How did we do? Reply 1 (poor) to 5 (great).",
        prompt="rating",
        metadata={"survey": survey},
    )
    ctx.data.update(survey=survey, question=question.metadata["gw_id"])
    ctx.goto(Survey.rating)


def responses_key(keys: PartitionKeys) -> str:
    """The hash of the answers stored in one partition (survey id → JSON record)."""
    return f"{PREFIX}:{keys.tag}:feedback"


def save(ctx: Context, survey: str, rating: int, comment: str | None = None) -> None:
    """Store an answer, atomically with the event (and only if the handler succeeds)."""
    record = {
        "survey": survey,
        "phone": ctx.handset,
        "rating": rating,
        "comment": comment,
        "at": ctx.now().isoformat(),
    }

    def write(gw: EventContext) -> None:
        gw.batch.hset(responses_key(gw.keys), {survey: json.dumps(record)})

    ctx.on_commit(write)


@router.timer(START)
async def start_from_api(ctx: Context, settings: Settings, payload: dict[str, str]) -> None:
    ask(ctx, settings, payload["survey"])


@router.message(Keyword("feedback"), state=None)
async def start_from_handset(ctx: Context, settings: Settings) -> None:
    ask(ctx, settings, uuid.uuid4().hex[:12])


@router.message(Regex(r"^\s*(?P<score>[1-5])\s*$"), AnswersPrompt("rating"), state=Survey.rating)
async def rated(ctx: Context, settings: Settings, score: str, prompt: dict[str, str]) -> None:
    ctx.cancel(NUDGE)
    survey, rating = prompt["survey"], int(score)  # the metadata of the question answered
    if rating < settings.follow_up_below:
        ctx.data["rating"] = rating
        ctx.reply("Sorry to hear that. What could we do better?")
        ctx.goto(Survey.comment)
    else:
        save(ctx, survey, rating)
        ctx.reply("Thank you! See you next time.")
        ctx.end()


@router.message(AnswersPrompt("rating"), state=Survey.rating)
async def not_a_rating(ctx: Context, prompt: dict[str, str]) -> None:
    ctx.reply(
        "Please reply with a number from 1 (poor) to 5 (great).",
        prompt="rating",
        metadata={"survey": prompt["survey"]},
    )


@router.message(state=Survey.comment)
async def commented(ctx: Context, data: dict[str, Any]) -> None:
    save(ctx, data["survey"], data["rating"], comment=ctx.text[:500])
    ctx.reply("Thank you, we will pass it on.")
    ctx.end()


@router.receipt(Status("delivered"), AnswersPrompt("rating"), state=Survey.rating)
async def delivered(
    ctx: Context, settings: Settings, prompt: dict[str, str], data: dict[str, Any]
) -> None:
    # Count from delivery, not from sending: a question held back by quiet hours is not
    # nudged the moment it arrives. Only the question's own receipt counts, not the nudge's.
    if prompt["gw_id"] == data["question"]:
        ctx.schedule(NUDGE, delay=settings.nudge_after, id=NUDGE)


@router.timer(NUDGE, StateIs(Survey.rating))
async def nudge(ctx: Context, data: dict[str, Any]) -> None:
    ctx.reply(
        "Got a second? Reply 1 to 5 to rate your visit.",
        prompt="rating",
        metadata={"survey": data["survey"]},
    )


@router.timeout(Survey.rating)
async def never_answered(ctx: Context) -> None:
    ctx.end()  # asked twice already: leave them be


@router.timeout(Survey.comment)
async def no_comment(ctx: Context, data: dict[str, Any]) -> None:
    save(ctx, data["survey"], data["rating"])
    ctx.end()


@router.receipt(Status("failed", "expired", "rejected"), AnswersPrompt("rating"))
async def undeliverable(ctx: Context) -> None:
    ctx.cancel(NUDGE)
    ctx.end()


def routes(host: PluginHost) -> list[web.RouteDef]:
    """``POST /api/feedback`` starts a survey; ``GET /api/feedback`` lists the answers."""

    async def start(request: web.Request) -> web.StreamResponse:
        body = await host.read_json(request)
        if not isinstance(body, dict) or not isinstance(body.get("phone"), str):
            raise ApiError(422, 'the body must be {"phone": "<number>"}')
        try:
            phone = normalise_phone(body["phone"], host.default_region)
        except InvalidPhoneNumber:
            raise ApiError(422, f"phone: {body['phone']!r} is not a phone number") from None
        survey = uuid.uuid4().hex[:12]
        await host.post_command(phone, START, {"survey": survey})
        return web.json_response({"survey": survey, "phone": phone}, status=202)

    async def answers(request: web.Request) -> web.StreamResponse:
        found: list[dict[str, Any]] = []
        for partition in range(host.partitions):
            stored = await host.store.redis.hgetall(responses_key(PartitionKeys(partition)))
            found += [json.loads(value) for value in stored.values()]
        return web.json_response({"responses": sorted(found, key=lambda r: r["at"])})

    return [
        web.post("/api/feedback", host.guard(start)),
        web.get("/api/feedback", host.guard(answers)),
    ]


plugin = Plugin(
    "feedback",
    router,
    settings=Settings,
    routes=routes,
    description="A 1-5 feedback survey with a follow-up question, a nudge and an API.",
)
