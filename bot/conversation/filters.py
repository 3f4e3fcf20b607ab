"""Filters decide whether a handler takes an event, and can hand it extra arguments.

A filter is called with the :class:`~bot.conversation.context.Context` and answers
``True``/``False``, or a ``dict``: a match whose items become handler arguments (an empty
dict is a match too). Filters combine with ``&``, ``|`` and ``~``::

    @router.message(Keyword("Y", "YES") & AnswersPrompt("confirm"))
    async def confirmed(ctx: Context, prompt: dict[str, str]) -> None: ...

    @router.message(Regex(r"^move to (?P<day>\\w+)"), ~ChannelIs("RCS"))
    async def move(ctx: Context, day: str) -> None: ...

A filter that adds arguments lists their names in :attr:`Filter.provides`, so a handler
asking for an argument nothing provides is refused when it is registered.

Every event meets many filters (each handler's, in every router, until one matches), so the
built-in filters answer synchronously (:meth:`Filter.check`) and only a filter that really
waits (an ``async`` :class:`Custom` predicate, a subclass's ``async __call__``) costs a
coroutine.
"""

from __future__ import annotations

import inspect
import re
import unicodedata
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Final, TypeGuard, cast

from bot.conversation.context import PROMPT_KEY, Context
from bot.conversation.states import State, StateLike, States
from bot.sinch.models import Channel, DeliveryStatus

__all__ = [
    "ANY_STATE",
    "AllOf",
    "AnswersPrompt",
    "AnyOf",
    "ChannelIs",
    "Checked",
    "Choice",
    "Custom",
    "Filter",
    "FilterResult",
    "FromNumber",
    "Keyword",
    "Not",
    "Predicate",
    "Regex",
    "StateIs",
    "StateSpec",
    "Status",
    "SyncFilter",
    "ToNumber",
    "evaluate",
    "normalise",
]

FilterResult = bool | dict[str, Any]
"""What a filter answers: match or not, or a match with extra handler arguments."""

ANY_STATE: Final = "*"
"""Matches every state, and no state."""

_WHITESPACE = re.compile(r"\s+")


def _is_edge(char: str) -> bool:
    """Characters stripped from the ends of a keyword: whitespace, punctuation, separators
    and invisible controls (zero-width spaces, the BOM...)."""
    return char.isspace() or unicodedata.category(char)[0] in "PZC"


def normalise(text: str) -> str:
    """How :class:`Keyword` compares texts: Unicode NFKC, case folded, runs of whitespace
    made one space, and whitespace, punctuation and invisible characters stripped from both
    ends.

    >>> normalise("  Yes!! ")
    'yes'
    >>> normalise("\uff2f\uff2b.")  # fullwidth "OK."
    'ok'
    >>> normalise("Opt   Out")
    'opt out'
    """
    folded = unicodedata.normalize("NFKC", text).casefold()
    start, end = 0, len(folded)
    while start < end and _is_edge(folded[start]):
        start += 1
    while end > start and _is_edge(folded[end - 1]):
        end -= 1
    return _WHITESPACE.sub(" ", folded[start:end])


Checked = FilterResult | Awaitable[FilterResult]
"""What :meth:`Filter.check` answers: the result, or (for a filter that waits) an
awaitable of it."""


def _waits(result: Any) -> TypeGuard[Awaitable[FilterResult]]:
    return not isinstance(result, bool | dict) and inspect.isawaitable(result)


def _arguments(result: Any) -> dict[str, Any] | None:
    if isinstance(result, dict):
        return result
    return {} if result else None


async def evaluate(flt: Filter, ctx: Context) -> dict[str, Any] | None:
    """Run ``flt``: ``None`` if it does not match, else the arguments it adds."""
    result = flt.check(ctx)
    if _waits(result):
        result = await result
    return _arguments(result)


def _normalised_text(ctx: Context) -> str:
    """:func:`normalise` of the message text, worked out once per event (every
    :class:`Keyword` of every handler compares it)."""
    text = ctx._normalised_text
    if text is None:
        text = ctx._normalised_text = normalise(ctx.text)
    return text


class Filter(ABC):
    """Base class of filters. Subclasses implement :meth:`__call__` and, when they return a
    dict, list its keys in :attr:`provides`::

        class Weekend(Filter):
            async def __call__(self, ctx: Context) -> bool:
                return ctx.now().weekday() >= 5

    (A filter that never waits may implement :meth:`check` instead, as the built-in ones
    do: subclass :class:`SyncFilter`.)
    """

    provides: frozenset[str] = frozenset()
    """Names of the handler arguments a match always carries."""

    @abstractmethod
    async def __call__(self, ctx: Context) -> FilterResult:
        """Whether the event matches (a dict: it does, with these handler arguments)."""

    def check(self, ctx: Context) -> Checked:
        """What the engine calls: the result when the filter can tell at once, else an
        awaitable of it (by default the coroutine of :meth:`__call__`)."""
        return self(ctx)

    def __and__(self, other: Filter) -> Filter:
        return AllOf(self, other)

    def __or__(self, other: Filter) -> Filter:
        return AnyOf(self, other)

    def __invert__(self) -> Filter:
        return Not(self)


class SyncFilter(Filter):
    """A filter that answers without waiting: implement :meth:`check`, returning the
    result (``await flt(ctx)`` works as for any filter)::

        class Weekend(SyncFilter):
            def check(self, ctx: Context) -> bool:
                return ctx.now().weekday() >= 5
    """

    async def __call__(self, ctx: Context) -> FilterResult:
        result = self.check(ctx)
        if _waits(result):
            return await result
        return cast(FilterResult, result)

    @abstractmethod
    def check(self, ctx: Context) -> Checked:
        """Whether the event matches (a dict: it does, with these handler arguments)."""


def _checked(flt: Filter) -> Filter:
    if not isinstance(flt, Filter):
        raise TypeError(f"{flt!r} is not a Filter (wrap a function in Custom())")
    return flt


def _flatten(kind: type[AllOf | AnyOf], filters: tuple[Filter, ...]) -> tuple[Filter, ...]:
    flat: list[Filter] = []
    for flt in map(_checked, filters):
        flat.extend(flt.filters if isinstance(flt, kind) else (flt,))
    return tuple(flat)


class AllOf(SyncFilter):
    """``a & b``: every filter matches (evaluated in order, stopping at the first that does
    not); their arguments are merged, later ones winning."""

    def __init__(self, *filters: Filter) -> None:
        self.filters: tuple[Filter, ...] = _flatten(AllOf, filters)
        self.provides = frozenset().union(*(f.provides for f in self.filters))

    def check(self, ctx: Context) -> Checked:
        merged: dict[str, Any] = {}
        for index, flt in enumerate(self.filters):
            result = flt.check(ctx)
            if _waits(result):
                return self._rest(ctx, index, result, merged)
            extra = _arguments(result)
            if extra is None:
                return False
            merged.update(extra)
        return merged

    async def _rest(
        self, ctx: Context, index: int, waiting: Awaitable[FilterResult], merged: dict[str, Any]
    ) -> FilterResult:
        """The filters from ``index`` on, once one of them has to be waited for."""
        extra = _arguments(await waiting)
        if extra is None:
            return False
        merged.update(extra)
        for flt in self.filters[index + 1 :]:
            extra = await evaluate(flt, ctx)
            if extra is None:
                return False
            merged.update(extra)
        return merged

    def __repr__(self) -> str:
        return " & ".join(map(repr, self.filters)).join("()")


class AnyOf(SyncFilter):
    """``a | b``: the first filter that matches, with its arguments. Only the arguments
    every alternative provides count as provided."""

    def __init__(self, *filters: Filter) -> None:
        self.filters: tuple[Filter, ...] = _flatten(AnyOf, filters)
        self.provides = frozenset.intersection(*(f.provides for f in self.filters))

    def check(self, ctx: Context) -> Checked:
        for index, flt in enumerate(self.filters):
            result = flt.check(ctx)
            if _waits(result):
                return self._rest(ctx, index, result)
            extra = _arguments(result)
            if extra is not None:
                return extra
        return False

    async def _rest(
        self, ctx: Context, index: int, waiting: Awaitable[FilterResult]
    ) -> FilterResult:
        extra = _arguments(await waiting)
        if extra is not None:
            return extra
        for flt in self.filters[index + 1 :]:
            extra = await evaluate(flt, ctx)
            if extra is not None:
                return extra
        return False

    def __repr__(self) -> str:
        return " | ".join(map(repr, self.filters)).join("()")


class Not(SyncFilter):
    """``~a``: matches when ``a`` does not (and adds no arguments)."""

    def __init__(self, flt: Filter) -> None:
        self.filter = _checked(flt)

    def check(self, ctx: Context) -> Checked:
        result = self.filter.check(ctx)
        if _waits(result):
            return self._negated(result)
        return _arguments(result) is None

    @staticmethod
    async def _negated(waiting: Awaitable[FilterResult]) -> FilterResult:
        return _arguments(await waiting) is None

    def __invert__(self) -> Filter:
        return self.filter

    def __repr__(self) -> str:
        return f"~{self.filter!r}"


class Keyword(SyncFilter):
    """The whole message is one of ``keywords``, ignoring case, surrounding punctuation and
    whitespace (see :func:`normalise`): ``Keyword("Y", "YES")`` matches ``"yes!"`` and
    ``" Y. "`` but not ``"yes please"``.

    Adds ``keyword``: the keyword that matched, spelt as it was declared in the filter, not
    as the handset typed it: ``Keyword("YES", "Y")`` hands ``keyword="YES"`` to the handler
    of ``" yes! "`` (the text typed is ``ctx.text``).

    Attributes:
        keywords: The declared keywords, by their normalised form.
    """

    provides = frozenset({"keyword"})

    def __init__(self, *keywords: str) -> None:
        if not keywords:
            raise ValueError("Keyword() needs at least one keyword")
        self.keywords: dict[str, str] = {}
        for keyword in keywords:
            key = normalise(keyword)
            if not key:
                raise ValueError(f"keyword {keyword!r} is empty once normalised")
            self.keywords.setdefault(key, keyword)

    def check(self, ctx: Context) -> FilterResult:
        if ctx.message is None:
            return False
        keyword = self.keywords.get(_normalised_text(ctx))
        return False if keyword is None else {"keyword": keyword}

    def __repr__(self) -> str:
        return f"Keyword({', '.join(map(repr, self.keywords.values()))})"


class Regex(SyncFilter):
    """``pattern`` is found in the message (``re.search``; case-insensitive unless ``flags``
    say otherwise). Adds ``match`` and every named group (``None`` when a group did not
    take part in the match)::

        @router.message(Regex(r"^book (?P<day>mon|tue|wed)"))
        async def book(ctx: Context, day: str) -> None: ...

    Attributes:
        pattern: The compiled expression.
    """

    def __init__(self, pattern: str | re.Pattern[str], flags: int = re.IGNORECASE) -> None:
        self.pattern = pattern if isinstance(pattern, re.Pattern) else re.compile(pattern, flags)
        self.provides = frozenset({"match", *self.pattern.groupindex})

    def check(self, ctx: Context) -> FilterResult:
        if ctx.message is None:
            return False
        found = self.pattern.search(ctx.text)
        return False if found is None else {"match": found, **found.groupdict()}

    def __repr__(self) -> str:
        return f"Regex({self.pattern.pattern!r})"


StateSpec = StateLike | type[States] | None
"""A state, its name, a whole group, ``None`` (no state) or ``"*"`` (any)."""


class StateIs(SyncFilter):
    """The plugin's flow is in one of ``states``: a :class:`State` or its name, a whole
    :class:`States` group, ``None`` for "no state", or ``"*"`` for any state (or none)::

        StateIs(Booking.awaiting)    StateIs(Booking)    StateIs(None)

    This is what ``state=`` on the handler decorators builds
    (``@router.message(Keyword("Y"), state=Booking.awaiting)``), which is the way to say
    it; the filter itself is for expressions (``~StateIs(None)``, ``StateIs(A) | Keyword(...)``).

    Names must be declared (``ValueError`` otherwise), so a typo cannot silently never match.

    Attributes:
        names: The names of the states that match.
        states: The states that match.
        none: Whether no state (outside any flow) matches.
        any: Whether every state matches (``"*"`` was given).
    """

    def __init__(self, *states: StateSpec) -> None:
        if not states:
            raise ValueError("StateIs() needs at least one state (None for no state)")
        self.any = ANY_STATE in states
        self.none = None in states
        found: dict[int, State] = {}
        for spec in states:
            if spec is None or spec == ANY_STATE:
                continue
            if isinstance(spec, type):
                if not issubclass(spec, States):
                    raise TypeError(f"{spec.__name__} is not a States group")
                for state in spec.all():
                    found.setdefault(id(state), state)
            else:
                state = States.resolve(spec)
                found.setdefault(id(state), state)
        self.states: tuple[State, ...] = tuple(found.values())
        self.names = frozenset(state.name for state in self.states)

    def check(self, ctx: Context) -> FilterResult:
        state = ctx._flow().state
        return self.any or (self.none if state is None else state in self.names)

    def __repr__(self) -> str:
        parts = sorted(self.names) + ["None"] * self.none + [ANY_STATE] * self.any
        return f"StateIs({', '.join(parts)})"


def _number(value: str) -> str:
    cleaned = re.sub(r"[\s\-().]", "", value)
    if not cleaned:
        raise ValueError(f"{value!r} is not a number")
    return cleaned


class FromNumber(SyncFilter):
    """The conversation's handset is one of ``numbers`` (E.164; spaces, dashes, dots and
    parentheses are ignored). Works for every event kind.

    Attributes:
        numbers: The numbers, cleaned.
    """

    def __init__(self, *numbers: str) -> None:
        if not numbers:
            raise ValueError("FromNumber() needs at least one number")
        self.numbers = frozenset(map(_number, numbers))

    def check(self, ctx: Context) -> FilterResult:
        return ctx.handset in self.numbers

    def __repr__(self) -> str:
        return f"FromNumber(<{len(self.numbers)} numbers>)"


class ToNumber(SyncFilter):
    """Our number in the conversation (the one the handset wrote to) is one of ``numbers``:
    lets one gateway run different flows on different numbers.

    Attributes:
        numbers: The numbers, cleaned.
    """

    def __init__(self, *numbers: str) -> None:
        if not numbers:
            raise ValueError("ToNumber() needs at least one number")
        self.numbers = frozenset(map(_number, numbers))

    def check(self, ctx: Context) -> FilterResult:
        return ctx.our_number in self.numbers

    def __repr__(self) -> str:
        return f"ToNumber(<{len(self.numbers)} numbers>)"


class ChannelIs(SyncFilter):
    """The message arrived on one of ``channels``: ``"SMS"``, ``"MMS"`` or ``"RCS"``."""

    def __init__(self, *channels: Channel | str) -> None:
        if not channels:
            raise ValueError("ChannelIs() needs at least one channel")
        try:
            self.channels = frozenset(Channel(str(c).upper()) for c in channels)
        except ValueError as exc:
            raise ValueError(f"channels are {', '.join(Channel)}: {exc}") from None

    def check(self, ctx: Context) -> FilterResult:
        message = ctx.message
        return message is not None and message.channel in self.channels

    def __repr__(self) -> str:
        return f"ChannelIs({', '.join(sorted(self.channels))})"


class Choice(SyncFilter):
    """The handset tapped an RCS suggested reply; with ``postback``, one whose postback data
    is ``postback`` (or one of several). Adds ``postback``: the postback data::

        @router.message(Choice(postback=("yes", "no")))
        async def answered(ctx: Context, postback: str) -> None: ...

    Attributes:
        postbacks: The postback data that match (``None``: any tap).
    """

    provides = frozenset({"postback"})

    def __init__(self, postback: str | Iterable[str] | None = None) -> None:
        if isinstance(postback, str):
            postback = (postback,)
        self.postbacks = None if postback is None else frozenset(postback)

    def check(self, ctx: Context) -> FilterResult:
        message = ctx.message
        if message is None or message.choice is None:
            return False
        data = message.choice.postback_data
        if self.postbacks is not None and data not in self.postbacks:
            return False
        return {"postback": data}

    def __repr__(self) -> str:
        return f"Choice({sorted(self.postbacks) if self.postbacks is not None else ''})"


class Status(SyncFilter):
    """A delivery receipt with one of ``statuses`` (``"delivered"``, ``"failed"``,
    ``"expired"``, ``"rejected"``...; case-insensitive)::

        @router.receipt(Status("failed", "expired", "rejected"))
        async def undeliverable(ctx: Context, receipt: DeliveryReceipt) -> None: ...

    Attributes:
        statuses: The statuses that match, lower case.
    """

    def __init__(self, *statuses: DeliveryStatus | str) -> None:
        if not statuses:
            raise ValueError("Status() needs at least one status")
        self.statuses = frozenset(str(s).lower() for s in statuses)

    def check(self, ctx: Context) -> FilterResult:
        receipt = ctx.receipt
        return receipt is not None and str(receipt.status).lower() in self.statuses

    def __repr__(self) -> str:
        return f"Status({', '.join(sorted(self.statuses))})"


class AnswersPrompt(SyncFilter):
    """The message answers an outbound prompt named ``names`` (any prompt when none are
    given), sent with ``ctx.reply(..., prompt=name)``: the provider echoes the prompt's
    metadata on the handset's reply. On a receipt: the receipt reports on such a prompt.

    Adds ``prompt``: the echoed metadata (``prompt``, ``gw_id`` and whatever metadata the
    prompt was sent with), which tells two pending questions to one number apart::

        ctx.reply("Confirm Tue 10:00? Y/N", prompt="confirm", metadata={"appointment": "41"})
        ...
        @router.message(Keyword("Y"), AnswersPrompt("confirm"))
        async def yes(ctx: Context, prompt: dict[str, str]) -> None:
            confirm(prompt["appointment"])

    Attributes:
        names: The prompt names that match (empty: any prompt).
    """

    provides = frozenset({"prompt"})

    def __init__(self, *names: str) -> None:
        self.names = frozenset(names)

    def check(self, ctx: Context) -> FilterResult:
        prompt = ctx.prompt
        if prompt is None or (self.names and prompt[PROMPT_KEY] not in self.names):
            return False
        return {"prompt": prompt}

    def __repr__(self) -> str:
        return f"AnswersPrompt({', '.join(map(repr, sorted(self.names)))})"


Predicate = Callable[[Context], FilterResult | Awaitable[FilterResult]]


class Custom(SyncFilter):
    """Any function of the context, sync or async, answering like a filter. Declare the
    names of the arguments its dicts carry in ``provides``::

        Custom(lambda ctx: ctx.data.get("attempts", 0) < 3)

        async def known(ctx: Context) -> dict[str, Any] | bool:
            patient = await lookup(ctx.handset)
            return {"patient": patient} if patient else False

        Custom(known, provides=("patient",))

    Attributes:
        predicate: The function.
    """

    def __init__(self, predicate: Predicate, *, provides: Iterable[str] = ()) -> None:
        self.predicate = predicate
        self.provides = frozenset(provides)

    def check(self, ctx: Context) -> Checked:
        return self.predicate(ctx)  # an async predicate's coroutine is awaited by the caller

    def __repr__(self) -> str:
        name = getattr(self.predicate, "__qualname__", repr(self.predicate))
        return f"Custom({name})"
