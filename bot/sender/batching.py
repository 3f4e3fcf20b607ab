"""The sender's pure logic: outbox entries as sendable items, batches, and what a provider
rejection says about a batch.

Nothing here touches Redis or the network; the send loop (:mod:`bot.sender.loop`) drives it.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Container, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from bot.sinch.models import (
    MAX_MESSAGES_PER_CALL,
    OutboundMessage,
    RcsCard,
    RcsChoice,
    RcsMessage,
    validation_details,
)
from bot.storage.events import OutboundRequest

__all__ = [
    "Item",
    "ProviderModel",
    "build_message",
    "describe_invalid",
    "halves",
    "invalid_indexes",
    "rcs_from_wire",
    "take_batch",
]

ProviderModel = OutboundMessage | RcsMessage


@dataclass(eq=False)
class Item:
    """One outbox entry the sender holds: where it came from, what it asks, and the
    validated provider model of the message."""

    partition: int
    entry_id: str
    fields: dict[str, str]
    """The raw stream entry (for the dead-letter stream)."""
    request: OutboundRequest
    message: ProviderModel
    calls: int = 0
    """Provider calls this message has been part of (this process's count)."""

    @property
    def key(self) -> tuple[int, str]:
        return (self.partition, self.entry_id)

    @property
    def gw_id(self) -> str:
        return self.request.gw_id

    @property
    def conversation(self) -> tuple[int, str]:
        """The conversation the message belongs to (its partition and key): its messages
        leave in the order they were queued."""
        return (self.partition, self.request.conversation)


# --------------------------------------------------------------------------- validation


def build_message(request: OutboundRequest) -> ProviderModel:
    """The provider model of ``request``'s body, validated with the provider's rules.

    Raises ``ValueError`` (pydantic's ``ValidationError`` is one) when the provider would
    reject it: such a message must never join a batch, as it would sink the whole call.
    """
    if request.channel == "rcs":
        return rcs_from_wire(request.body)
    return OutboundMessage.model_validate(request.body)


def describe_invalid(error: ValueError) -> str:
    """A short, provider-worded reason for a message that failed validation."""
    if isinstance(error, ValidationError):
        details = validation_details(error)
        if details:
            return "; ".join(details)
    return str(error) or type(error).__name__


def _choice(wire: Mapping[str, Any]) -> RcsChoice:
    if "url_message" in wire:
        url = wire["url_message"]
        return RcsChoice(text=url["title"], url=url["url"])
    if "call_message" in wire:
        call = wire["call_message"]
        return RcsChoice(text=call["title"], url=f"tel:{call['phone_number']}")
    return RcsChoice(text=wire["text_message"]["text"], postback_data=wire.get("postback_data"))


def _card(wire: Mapping[str, Any]) -> RcsCard:
    media = wire.get("media_message")
    return RcsCard(
        title=wire["title"],
        description=wire.get("description"),
        media_url=media["url"] if media else None,
        choices=[_choice(c) for c in wire.get("choices", [])],
    )


_RCS_ROUTING = (
    "destination_number",
    "source_number",
    "callback_url",
    "delivery_report",
    "metadata",
)


def rcs_from_wire(body: Mapping[str, Any]) -> RcsMessage:
    """The :class:`RcsMessage` whose ``to_api()`` is ``body`` (the inverse of
    :meth:`RcsMessage.to_api`), validated. ``ValueError`` for anything else."""
    if not isinstance(body, Mapping):
        raise ValueError("an RCS message must be a JSON object")
    unknown = set(body) - {*_RCS_ROUTING, "format", "rcs_message", "fallback"}
    if unknown:
        raise ValueError(f"unknown RCS message fields: {', '.join(sorted(unknown))}")
    if body.get("format", "RCS") != "RCS":
        raise ValueError("an RCS message has format RCS")
    fields: dict[str, Any] = {name: body[name] for name in _RCS_ROUTING if name in body}
    try:
        fallback = body.get("fallback")
        if fallback is not None:
            fields["fallback_text"] = fallback["content"]
        rcs = body["rcs_message"]
        if "text_message" in rcs:
            fields["text"] = rcs["text_message"]["text"]
        elif "choice_message" in rcs:
            choice = rcs["choice_message"]
            fields["text"] = choice["text_message"]["text"]
            fields["choices"] = [_choice(c) for c in choice.get("choices", [])]
        elif "card_message" in rcs:
            fields["card"] = _card(rcs["card_message"])
        elif "carousel_message" in rcs:
            carousel = rcs["carousel_message"]
            fields["carousel"] = [_card(c) for c in carousel["cards"]]
            fields["choices"] = [_choice(c) for c in carousel.get("choices", [])]
        else:
            raise ValueError("rcs_message needs text, choices, a card or a carousel")
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"malformed RCS message: {type(exc).__name__} {exc}") from exc
    return RcsMessage.model_validate(fields)


# --------------------------------------------------------------------------- batches


def take_batch(
    buffer: deque[Item],
    limit: int = MAX_MESSAGES_PER_CALL,
    busy: Container[tuple[int, str]] = (),
) -> list[Item]:
    """Take up to ``limit`` items for one provider call, oldest first, keeping every
    conversation's order.

    The batch is of the channel of the oldest item it may take (SMS/MMS and RCS go to
    different endpoints). Items stay in their place in ``buffer`` when their conversation
    (:attr:`Item.conversation`) is in ``busy`` (another call carries its messages), or when
    an earlier item of their conversation stays (it is of the other channel): a message
    never leaves before one queued earlier in its conversation.
    """
    if not buffer:
        return []
    channel: str | None = None
    taken: list[Item] = []
    kept: list[Item] = []
    held: set[tuple[int, str]] = set()
    while buffer and len(taken) < limit:
        item = buffer.popleft()
        conversation = item.conversation
        if conversation in held or conversation in busy:
            kept.append(item)
            continue
        if channel is None:
            channel = item.request.channel
        if item.request.channel == channel:
            taken.append(item)
        else:
            held.add(conversation)
            kept.append(item)
    buffer.extendleft(reversed(kept))
    return taken


_INDEX = re.compile(r"^\s*/messages/(\d+)(?:[/:\s]|$)")


def invalid_indexes(details: Sequence[str], size: int) -> dict[int, list[str]]:
    """Which messages of a call of ``size`` the provider's validation ``details`` blame
    (``/messages/3/destination_number: ...`` → ``{3: [that text]}``). Details naming no
    message, or one out of range, are left out: an empty answer means "bisect"."""
    blamed: dict[int, list[str]] = {}
    for detail in details:
        match = _INDEX.match(detail)
        if match is None:
            continue
        index = int(match.group(1))
        if 0 <= index < size:
            blamed.setdefault(index, []).append(detail)
    return blamed


def halves(group: Sequence[Item]) -> tuple[list[Item], list[Item]]:
    """``group`` cut in two (the first half is the larger one)."""
    middle = (len(group) + 1) // 2
    return list(group[:middle]), list(group[middle:])
