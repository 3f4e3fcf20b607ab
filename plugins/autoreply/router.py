"""The ``autoreply`` router: one handler per rule, tried in the rules' order.

Only inbound messages are answered (never the provider's opt-out notifications), in any
state of the conversation: a flow plugin that should see its answers first is enabled
before ``autoreply``. Whether the business is open is read from the engine's clock
(``ctx.now()``), so tests move it with ``BotTester.advance``.
"""

from __future__ import annotations

import re

from bot.conversation import Context, Custom, Filter, Keyword, Regex, Router
from bot.conversation.router import Handler
from plugins.autoreply.settings import AutoreplySettings, Rule

__all__ = ["build_router"]


def _is_message(ctx: Context) -> bool:
    return ctx.message is not None and ctx.message.kind == "message"


def _answer(rule: Rule, settings: AutoreplySettings) -> Handler:
    async def answer(ctx: Context, match: re.Match[str] | None = None) -> None:
        groups = match.groupdict() if match is not None else {}
        ctx.reply(rule.answer(groups, open_now=settings.is_open(ctx.now())))

    return answer


def build_router(settings: AutoreplySettings) -> Router:
    """The plugin's router for ``settings`` (its factory: rules become handlers)."""
    router = Router("autoreply", settings=settings)
    for rule in settings.all_rules:
        matcher: Filter
        if rule.pattern is not None:
            matcher = Regex(rule.pattern)
        else:
            assert rule.keyword is not None
            matcher = Keyword(*rule.keyword)
        router.message(Custom(_is_message), matcher)(_answer(rule, settings))
    return router
