"""Opt-out compliance: STOP, START and HELP, answered ahead of every plugin.

The router :func:`build_router` returns runs first in the engine
(``Engine(compliance, *plugins, keywords)``), so a handset's opt-out never reaches a
plugin's flow:

- **A stop word** (whole message, case, whitespace and surrounding punctuation ignored:
  ``"stop!"``, ``" Stop "``) suppresses the handset (:mod:`bot.outbox.suppression`, in the
  event's batch, so it commits atomically with the event). The handset gets ONE
  confirmation, from one side:

  - by default (``provider_confirms``) from the provider: MessageMedia blacklists a number
    as soon as it texts an opt-out keyword, so a confirmation we sent after that would be
    refused (rejected 302); the provider sends its own (docs/sandbox.md), and we send
    nothing and record the opt-out as confirmed by the provider;
  - with ``provider_confirms = false`` (an account that handles opt-outs itself: the
    provider blocks nothing) from us: ``stop_reply`` with origin ``compliance``, which the
    sender lets through to a suppressed handset.

  The ``optout`` timeline entry says which (``confirmed_by``: ``provider`` or
  ``gateway``). A repeated STOP suppresses again (and is audited) but is not confirmed
  twice. The session is not touched: a flow in progress stays where it is, and whatever it
  sends later is held back by the sender and recorded ``suppressed``.
- **The provider's opt-out notification** (``InboundMessage.kind == "opt_out"``) suppresses
  the handset too, and confirms nothing itself: the STOP message it comes with is
  confirmed once, whichever of the two arrives first (the entry's ``confirmed`` flag says
  whether the opt-out is confirmed already).
- **A start word** from a suppressed handset opts it back in, removes it from the
  provider's blacklist (when a provider client is given; failures are logged, the call is
  idempotent) and confirms. From a handset that is NOT suppressed, start words are not
  handled here at all: ``YES`` is also the usual answer to a plugin's question ("Reply YES
  to confirm"), so it falls through to the plugins.
- **A help word** is answered with the help text, also while suppressed, except where the
  provider blacklists opted-out numbers (``provider_confirms``, the default): there the
  answer would be refused, so none is sent and the timeline gets a ``help`` entry saying
  why (``answered: false``).

Clashes to know about: ``CANCEL`` is a stop word (carriers treat it as one, and US rules
count it as revoking consent), so a booking flow cannot use a bare "CANCEL" as an answer:
the handset is opted out instead. Ask for "CANCEL BOOKING" or "N", or remove ``CANCEL``
from ``stop_words`` knowingly. Likewise ``END``, ``QUIT`` and ``INFO``.

Suppression is per handset across all of our numbers, so whether a handset is suppressed is
read from Redis (``redis`` given to :func:`build_router`), together with the suppression
writes already in the event's batch (a STOP and a START handled in one inbox batch see each
other). The handlers reach the gateway's :class:`~bot.inbox.handling.EventContext`
(batch, partition keys, limits) through the context's backend, which in the gateway is an
:class:`~bot.inbox.engine.EventContextBackend`; the router refuses to run over any
other backend.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import structlog
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from bot.conversation import Context, Custom, Keyword, Router, normalise
from bot.inbox.engine import EventContextBackend
from bot.inbox.handling import EventContext
from bot.outbox import suppression
from bot.receipts import timeline
from bot.sinch.client import SinchClient

__all__ = [
    "DEFAULT_HELP_TEXT",
    "DEFAULT_HELP_WORDS",
    "DEFAULT_START_REPLY",
    "DEFAULT_START_WORDS",
    "DEFAULT_STOP_REPLY",
    "DEFAULT_STOP_WORDS",
    "HELP_BLOCKED",
    "ComplianceSettings",
    "RedisSource",
    "build_router",
    "event_context",
]

log = structlog.get_logger(__name__)

DEFAULT_STOP_WORDS: Final = (
    "STOP",
    "STOPALL",
    "UNSUBSCRIBE",
    "CANCEL",
    "END",
    "QUIT",
    "REVOKE",
    "OPTOUT",
)
DEFAULT_START_WORDS: Final = ("START", "UNSTOP", "YES")
DEFAULT_HELP_WORDS: Final = ("HELP", "INFO")
DEFAULT_STOP_REPLY: Final = (
    "You have been unsubscribed and will receive no more messages. Reply START to resubscribe."
)
DEFAULT_START_REPLY: Final = (
    "You have been resubscribed and will receive messages again. Reply STOP to unsubscribe."
)
HELP_BLOCKED: Final = (
    "opted out: the provider blacklists the number, so an answer would be refused; "
    "START opts it back in"
)
"""Why a help word from an opted-out handset is not answered (its timeline's ``help``
entry), when the provider confirms opt-outs (and so blacklists the number)."""
DEFAULT_HELP_TEXT: Final = (
    "Automated messaging service. Reply STOP to unsubscribe, START to resubscribe. "
    "Msg&data rates may apply."
)

RedisSource = Redis | RedisCluster | Callable[[], Redis | RedisCluster]
"""The gateway's Redis, or a function returning it (when the router is built before the
connection exists)."""


class ComplianceSettings(BaseModel):
    """The ``[compliance]`` settings. Keywords match whole messages, ignoring case,
    whitespace and surrounding punctuation; the ``extra_*`` lists extend the defaults
    (local-language words such as ``ARRET``), the plain lists replace them."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    """Off: no keyword is handled here (the sender still holds back messages to handsets
    already suppressed)."""
    stop_words: list[str] = Field(default_factory=lambda: list(DEFAULT_STOP_WORDS))
    start_words: list[str] = Field(default_factory=lambda: list(DEFAULT_START_WORDS))
    help_words: list[str] = Field(default_factory=lambda: list(DEFAULT_HELP_WORDS))
    extra_stop_words: list[str] = Field(default_factory=list)
    extra_start_words: list[str] = Field(default_factory=list)
    extra_help_words: list[str] = Field(default_factory=list)
    provider_confirms: bool = True
    """The provider confirms opt-outs itself: it blacklists a number that texts an opt-out
    keyword and sends it the confirmation (MessageMedia's automatic opt-out handling, and
    what the sandbox does by default). The gateway then sends none (the provider would
    refuse it: the number is on its blacklist) and records the opt-out as confirmed by the
    provider. ``false``: the account handles opt-outs itself and the provider blocks
    nothing; the gateway confirms with :attr:`stop_reply`."""
    stop_reply: str | None = DEFAULT_STOP_REPLY
    """Our one opt-out confirmation, sent when :attr:`provider_confirms` is false
    (``None``: none is sent). No marketing in it."""
    start_reply: str | None = DEFAULT_START_REPLY
    """The opt-in confirmation (``None``: none is sent)."""
    help_text: str = DEFAULT_HELP_TEXT
    """The answer to a help word: who you are, how to get support, how to opt out."""

    @field_validator(
        "stop_words",
        "start_words",
        "help_words",
        "extra_stop_words",
        "extra_start_words",
        "extra_help_words",
    )
    @classmethod
    def _words(cls, words: list[str]) -> list[str]:
        for word in words:
            if not normalise(word):
                raise ValueError(f"keyword {word!r} is empty once normalised")
        return words

    @field_validator("stop_reply", "start_reply", "help_text")
    @classmethod
    def _text(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must not be empty (use no value to send nothing)")
        return value

    @model_validator(mode="after")
    def _disjoint(self) -> ComplianceSettings:
        seen: dict[str, str] = {}
        for group, words in (("stop", self.stops), ("start", self.starts), ("help", self.helps)):
            for word in words:
                other = seen.setdefault(normalise(word), group)
                if other != group:
                    raise ValueError(f"keyword {word!r} is both a {other} and a {group} word")
        if not self.stops:
            raise ValueError("there must be at least one stop word")
        return self

    @property
    def stops(self) -> tuple[str, ...]:
        """Every stop word (``stop_words`` then ``extra_stop_words``)."""
        return (*self.stop_words, *self.extra_stop_words)

    @property
    def starts(self) -> tuple[str, ...]:
        """Every start word."""
        return (*self.start_words, *self.extra_start_words)

    @property
    def helps(self) -> tuple[str, ...]:
        """Every help word."""
        return (*self.help_words, *self.extra_help_words)


def event_context(ctx: Context) -> EventContext:
    """The gateway's context of the event ``ctx`` handles (its batch, partition keys and
    limits). ``TypeError`` outside the gateway."""
    backend = ctx.backend
    if isinstance(backend, EventContextBackend):
        return backend.ctx
    raise TypeError(
        "the compliance router runs in the gateway (GatewayEngineHandler), not over "
        f"{type(backend).__name__}"
    )


def _is_message(ctx: Context) -> bool:
    return ctx.message is not None and ctx.message.kind == "message"


def _is_opt_out_notice(ctx: Context) -> bool:
    return ctx.message is not None and ctx.message.kind == "opt_out"


def build_router(
    settings: ComplianceSettings,
    provider: SinchClient | None = None,
    *,
    redis: RedisSource,
) -> Router:
    """The ``compliance`` router (see the module docstring); give it to the engine first.

    Args:
        settings: Keywords and texts.
        provider: Used to take an opted-in number off the provider's blacklist.
        redis: The gateway's Redis (or a function returning it), to read the suppression
            list.
    """
    router = Router("compliance", settings=settings)
    if not settings.enabled:
        return router

    def connection() -> Redis | RedisCluster:
        return redis if isinstance(redis, Redis | RedisCluster) else redis()

    async def current(ctx: Context) -> suppression.OptOut | None:
        gw = event_context(ctx)
        return await suppression.lookup(connection(), gw.keys, gw.handset, batch=gw.batch)

    async def is_suppressed(ctx: Context) -> bool:
        return await current(ctx) is not None

    def suppress(
        ctx: Context,
        via: suppression.Via,
        word: str | None,
        confirmed_by: suppression.ConfirmedBy | None,
    ) -> None:
        gw = event_context(ctx)
        suppression.suppress(
            gw.batch,
            gw.keys,
            gw.handset,
            via=via,
            word=word,
            conversation=gw.conversation,
            confirmed=confirmed_by is not None,
            confirmed_by=confirmed_by,
            timeline_max=gw.limits.timeline_max,
            ttl_ms=gw.limits.ttl_ms,
        )

    def earlier(previous: suppression.OptOut) -> suppression.ConfirmedBy:
        # An entry confirmed before ``confirmed_by`` was recorded was confirmed by us.
        return previous.confirmed_by or "gateway"

    @router.message(Custom(_is_opt_out_notice))
    async def provider_opt_out(ctx: Context) -> None:
        previous = await current(ctx)
        word = normalise(ctx.text).upper() or None
        if previous is not None and previous.confirmed:
            suppress(ctx, "provider", word, earlier(previous))
        else:
            suppress(ctx, "provider", word, "provider" if settings.provider_confirms else None)

    @router.message(Custom(_is_message), Keyword(*settings.stops))
    async def stop(ctx: Context, keyword: str) -> None:
        previous = await current(ctx)
        if previous is not None and previous.confirmed:
            suppress(ctx, "keyword", keyword, earlier(previous))
        elif settings.provider_confirms:
            suppress(ctx, "keyword", keyword, "provider")
        elif settings.stop_reply is not None:
            suppress(ctx, "keyword", keyword, "gateway")
            ctx.reply(settings.stop_reply, origin=suppression.COMPLIANCE_ORIGIN)
        else:
            suppress(ctx, "keyword", keyword, None)

    if settings.starts:

        @router.message(Custom(_is_message), Keyword(*settings.starts), Custom(is_suppressed))
        async def start(ctx: Context, keyword: str) -> None:
            gw = event_context(ctx)
            suppression.unsuppress(
                gw.batch,
                gw.keys,
                gw.handset,
                via="keyword",
                word=keyword,
                conversation=gw.conversation,
                timeline_max=gw.limits.timeline_max,
                ttl_ms=gw.limits.ttl_ms,
            )
            if provider is not None:
                try:
                    await provider.blacklist_remove(gw.handset)
                except Exception as exc:  # the opt-in stands; the provider may refuse sends
                    log.warning(
                        "could not remove an opted-in handset from the provider's blacklist",
                        handset=gw.handset,
                        error=str(exc) or type(exc).__name__,
                    )
            if settings.start_reply is not None:
                ctx.reply(settings.start_reply, origin=suppression.COMPLIANCE_ORIGIN)

    if settings.helps:

        @router.message(Custom(_is_message), Keyword(*settings.helps))
        async def help_(ctx: Context) -> None:
            if settings.provider_confirms and await is_suppressed(ctx):
                # The provider blacklisted the number with its opt-out: an answer would be
                # refused (302). Say so on the timeline instead of recording a failed send.
                gw = event_context(ctx)
                timeline.append(
                    gw.batch,
                    gw.keys,
                    gw.conversation,
                    "help",
                    {"answered": False, "why": HELP_BLOCKED},
                    maxlen=gw.limits.timeline_max,
                    ttl_ms=gw.limits.ttl_ms,
                )
                return
            ctx.reply(settings.help_text, origin=suppression.COMPLIANCE_ORIGIN)

    return router
