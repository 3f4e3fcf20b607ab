"""Keyword auto-replies and the fallback reply: the router that runs after every plugin.

``[keywords]`` maps whole-message keywords to fixed answers (``HOURS = "Open 9-5, Mon-Fri"``),
matched like every :class:`~bot.conversation.Keyword` (case, whitespace and surrounding
punctuation ignored). ``fallback`` answers any inbound message nothing else handled; in it,
``{text}`` stands for the first 100 characters of the handset's message. It is a fallback
handler (``fallback=True``), so the plugins' own fallbacks come before it: a message that
is neither an answer nor a keyword, while the appointments plugin waits for Y, N or R, gets
that plugin's "did not understand" rather than this reply::

    engine = Engine(compliance_router, *plugin_routers, keywords.build_router(settings))

Only inbound messages are answered (never the provider's opt-out notifications), and the
answers leave as ordinary replies: a handset that opted out does not get them (the sender
holds them back and records them ``suppressed``).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from bot.conversation import Context, Custom, Keyword, Router, normalise

__all__ = ["FALLBACK_TEXT_LIMIT", "KeywordSettings", "build_router"]

FALLBACK_TEXT_LIMIT = 100
"""Characters of the handset's message that ``{text}`` stands for in the fallback."""


class KeywordSettings(BaseModel):
    """The ``[keywords]`` settings: keyword → reply text, and the fallback reply."""

    model_config = ConfigDict(extra="forbid")

    keywords: dict[str, str] = Field(default_factory=dict)
    """Whole-message keyword → the reply (no two keywords may be equal once normalised)."""
    fallback: str | None = None
    """The answer to any message nothing else handled (``None``: no answer). ``{text}`` is
    the handset's message (its first 100 characters); write ``{{`` and ``}}`` for braces."""

    @field_validator("keywords")
    @classmethod
    def _keywords(cls, keywords: dict[str, str]) -> dict[str, str]:
        seen: dict[str, str] = {}
        for keyword, reply in keywords.items():
            key = normalise(keyword)
            if not key:
                raise ValueError(f"keyword {keyword!r} is empty once normalised")
            if key in seen:
                raise ValueError(f"keywords {seen[key]!r} and {keyword!r} are the same keyword")
            seen[key] = keyword
            if not reply.strip():
                raise ValueError(f"the reply to {keyword!r} is empty")
        return keywords

    @field_validator("fallback")
    @classmethod
    def _fallback(cls, fallback: str | None) -> str | None:
        if fallback is None:
            return None
        if not fallback.strip():
            raise ValueError("the fallback is empty (leave it out to send none)")
        try:
            fallback.format(text="")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(
                f"the fallback may only use {{text}} (write {{{{ and }}}} for braces): {exc}"
            ) from None
        return fallback

    def fallback_for(self, text: str) -> str | None:
        """The fallback reply to a message saying ``text``."""
        if self.fallback is None:
            return None
        return self.fallback.format(text=text[:FALLBACK_TEXT_LIMIT])


def _is_message(ctx: Context) -> bool:
    return ctx.message is not None and ctx.message.kind == "message"


def build_router(settings: KeywordSettings) -> Router:
    """The ``keywords`` router: keyword auto-replies, then the fallback. Give it to the
    engine last: the fallback takes every message that reaches it (after the other
    routers' fallback handlers)."""
    router = Router("keywords", settings=settings)
    replies = dict(settings.keywords)
    if replies:

        @router.message(Custom(_is_message), Keyword(*replies))
        async def auto_reply(ctx: Context, keyword: str) -> None:
            ctx.reply(replies[keyword])

    if settings.fallback is not None:

        @router.message(Custom(_is_message), fallback=True)
        async def fallback(ctx: Context) -> None:
            answer = settings.fallback_for(ctx.text)
            if answer is not None:
                ctx.reply(answer)

    return router
