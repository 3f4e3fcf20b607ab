"""What flows through the gateway's streams, and how it is written to Redis.

Inbox entries carry a provider event (an :class:`InboundMessage` or a
:class:`DeliveryReceipt`) or a due timer (a
:class:`~bot.conversation.timers.TimerRef`, put there by
:class:`~bot.inbox.timers.TimerPump`) with the conversation it belongs to. Outbox entries carry an
:class:`OutboundRequest`: one message to send, already validated, with our own id
(``gw_id``) in its metadata so receipts and replies can be traced back to it.
"""

from __future__ import annotations

import base64
import os
import time
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from bot.core import fastjson
from bot.sinch.models import (
    DeliveryReceipt,
    InboundMessage,
    OutboundMessage,
    RcsMessage,
)
from bot.storage.timers import TimerRef

GW_ID = "gw_id"
"""Metadata key carrying our id of an outbound message; the provider echoes metadata on
receipts and replies."""
GW_CONVERSATION = "gw_conv"
"""Metadata key carrying the conversation an outbound message belongs to."""

Fields = dict[str, str]
_M = TypeVar("_M", OutboundMessage, RcsMessage)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


GW_ID_BYTES = 12
"""Random bytes of a new ``gw_id`` (:func:`new_id`)."""


def new_id() -> str:
    """A fresh id for an outbound message: 16 characters, the base64url of 96 random bits
    (``A-Z a-z 0-9 - _``).

    Ids are drawn independently in every process, with nothing to coordinate or carry over a
    restart; 96 bits make a repeat among 10^10 ids about as likely as 6e-10. Earlier
    versions drew 32 hex characters (128 bits): those ids stay valid wherever an id is
    looked up, an id being only ever used whole (in keys, metadata, the API). The 16
    characters fewer are saved wherever the id is stored: the record's key (a 32-byte
    allocation instead of 56), the timeline's ``outbound``, ``sent`` and ``receipt``
    entries, the provider ids' day hash (docs/operations.md, Sizing)."""
    return base64.urlsafe_b64encode(os.urandom(GW_ID_BYTES)).decode()


@dataclass(frozen=True)
class InboxEvent:
    """One event in a partition's inbox stream: a provider event or a due timer."""

    conversation: str
    event: InboundMessage | DeliveryReceipt | TimerRef
    received_at: float = field(default_factory=time.time)
    entry_id: str = ""
    """The stream entry id (set when read back)."""
    partition: int = -1

    @property
    def kind(self) -> Literal["message", "receipt", "timer"]:
        if isinstance(self.event, DeliveryReceipt):
            return "receipt"
        if isinstance(self.event, InboundMessage):
            return "message"
        return "timer"

    def to_fields(self) -> Fields:
        event = self.event
        payload = (
            event.model_dump_json(exclude_defaults=True)
            if isinstance(event, InboundMessage | DeliveryReceipt)
            else fastjson.dumps(event.to_json())
        )
        return {
            "k": self.kind,
            "c": self.conversation,
            "t": f"{self.received_at:.6f}",
            "e": payload,
        }

    @classmethod
    def from_fields(
        cls, entry_id: bytes | str, fields: dict[bytes, bytes] | dict[str, str], partition: int
    ) -> InboxEvent:
        """Decode a stream entry. Raises ``ValueError`` (pydantic's ValidationError is one)
        for an entry that is not an inbox event."""
        data = {_text(k): _text(v) for k, v in fields.items()}
        kind = data.get("k")
        payload = data.get("e", "")
        event: InboundMessage | DeliveryReceipt | TimerRef
        if kind == "receipt":
            event = DeliveryReceipt.model_validate_json(payload)
        elif kind == "message":
            event = InboundMessage.model_validate_json(payload)
        elif kind == "timer":
            try:
                value = fastjson.loads(payload)
                if not isinstance(value, dict):
                    raise ValueError("a timer entry's payload is not a JSON object")
                event = TimerRef.from_json(value)
            except (KeyError, TypeError) as exc:
                raise ValueError(f"not a timer entry: {exc}") from exc
        else:
            raise ValueError(f"unknown inbox entry kind {kind!r}")
        return cls(
            conversation=data["c"],
            event=event,
            received_at=float(data.get("t", "0")),
            entry_id=_text(entry_id),
            partition=partition,
        )


Channel = Literal["sms", "rcs"]


@dataclass(frozen=True)
class OutboundRequest:
    """One message to send, as queued in a partition's outbox.

    ``body`` is the provider's JSON for the message (``OutboundMessage.to_api()`` or
    ``RcsMessage.to_api()``), validated before it was queued and carrying ``gw_id`` and
    ``gw_conv`` in its metadata.
    """

    gw_id: str
    conversation: str
    channel: Channel
    body: dict[str, Any]
    origin: str = "api"
    """Who asked: ``api``, ``reply``, ``cli``, ``timer``... (for the timeline and metrics)."""
    text: str = ""
    """What the handset reads: the content, or for RCS the fallback or summary text."""
    created_at: float = field(default_factory=time.time)
    entry_id: str = ""
    partition: int = -1

    @property
    def destination(self) -> str:
        return str(self.body["destination_number"])

    def to_fields(self) -> Fields:
        return {
            "id": self.gw_id,
            "c": self.conversation,
            "ch": self.channel,
            "o": self.origin,
            "x": self.text,
            "t": f"{self.created_at:.6f}",
            "b": fastjson.dumps(self.body),
        }

    @classmethod
    def from_fields(
        cls, entry_id: bytes | str, fields: dict[bytes, bytes] | dict[str, str], partition: int
    ) -> OutboundRequest:
        """Decode a stream entry; ``ValueError`` for anything else."""
        data = {_text(k): _text(v) for k, v in fields.items()}
        try:
            channel = data["ch"]
            if channel not in ("sms", "rcs"):
                raise ValueError(f"unknown channel {channel!r}")
            return cls(
                gw_id=data["id"],
                conversation=data["c"],
                channel=channel,  # type: ignore[arg-type]
                body=fastjson.loads(data["b"]),
                origin=data.get("o", "api"),
                text=data.get("x", ""),
                created_at=float(data.get("t", "0")),
                entry_id=_text(entry_id),
                partition=partition,
            )
        except (KeyError, ValueError) as exc:
            raise ValueError(f"not an outbound entry: {exc}") from exc


def _identified(message: _M, gw_id: str, conversation: str) -> _M:
    """``message`` with our id and its conversation added to its metadata. Only the metadata
    changed, so only that field is validated again (the provider's 10-pair limit and
    lengths still hold), not the whole, already validated message."""
    metadata = {**(message.metadata or {}), GW_ID: gw_id, GW_CONVERSATION: conversation}
    checked = message.model_copy(update={"metadata": metadata})
    type(message).__pydantic_validator__.validate_assignment(checked, "metadata", metadata)
    return checked


def prepare_sms(
    message: OutboundMessage, conversation: str, *, gw_id: str | None = None, origin: str = "api"
) -> OutboundRequest:
    """An outbound request for an SMS/MMS: our id and the conversation go into metadata
    (validated, so the provider's 10-pair limit still holds: ``ValueError``, pydantic's
    ``ValidationError``, when they do not fit)."""
    gw_id = gw_id or new_id()
    checked = _identified(message, gw_id, conversation)
    return OutboundRequest(
        gw_id, conversation, "sms", checked.to_api(), origin, text=message.content
    )


def prepare_rcs(
    message: RcsMessage, conversation: str, *, gw_id: str | None = None, origin: str = "api"
) -> OutboundRequest:
    """An outbound request for an RCS message (see :func:`prepare_sms`)."""
    gw_id = gw_id or new_id()
    checked = _identified(message, gw_id, conversation)
    return OutboundRequest(
        gw_id, conversation, "rcs", checked.to_api(), origin, text=message.summary_text()
    )
