"""The request bodies the sandbox accepts, validated into domain inputs.

Send calls (``POST /v1/messages``, the connector's ``send-message`` / ``send-mms`` and the RCS
paths) become :class:`~bot.sandbox.state.MessageRequest` lists or raise :class:`SendRejected`,
whose ``details`` are worded as the provider words them (``/messages/0/destination_number:
...``). Nothing here touches state or HTTP.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from bot.sandbox.state import MessageRequest, Outcome
from bot.sinch.models import (
    E164_PATTERN,
    MAX_CONTENT_LENGTH,
    MAX_MESSAGES_PER_CALL,
    DeliveryStatus,
    OutboundMessage,
    _validate_metadata,
    metadata_from_wire,
    validation_details,
)

__all__ = [
    "PARSE_ERROR",
    "BadRequest",
    "HandsetChoice",
    "HandsetMedia",
    "HandsetSend",
    "OutcomeRule",
    "SendRejected",
    "parse_connector_mms",
    "parse_connector_sms",
    "parse_messages",
    "parse_rcs",
    "rcs_summary",
]

PARSE_ERROR = "Request failed to parse correctly. Please ensure input is valid and try again."
"""The provider's ``message`` for every rejected send call."""

_HTTP_URL = re.compile(r"^https?://[^\s/]+")


class BadRequest(ValueError):
    """A request the provider answers with 400 ``{"message": ..., "details"?: [...]}``."""

    def __init__(self, message: str, *, details: list[str] | None = None) -> None:
        super().__init__(message)
        self.details = details


class SendRejected(BadRequest):
    """A send call rejected as a whole: 400 with the provider's message and ``details``."""

    def __init__(self, details: list[str]) -> None:
        super().__init__(PARSE_ERROR, details=details)


def _as_utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _from_outbound(message: OutboundMessage) -> MessageRequest:
    return MessageRequest(
        wire=message.to_api(),
        destination=message.destination_number,
        content=message.content,
        format=message.format.value,
        source_number=message.source_number,
        metadata=dict(message.metadata or {}),
        callback_url=message.callback_url,
        delivery_report=bool(message.delivery_report),
        scheduled=_as_utc(message.scheduled),
        expires=_as_utc(message.message_expiry_timestamp),
        media=list(message.media) if message.media else None,
        subject=message.subject,
    )


def _message_list(body: Any) -> list[Any]:
    if not isinstance(body, dict):
        raise SendRejected(["/: the body must be a JSON object with a messages array"])
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise SendRejected(["/messages: must be an array of 1 to 100 messages"])
    if len(messages) > MAX_MESSAGES_PER_CALL:
        raise SendRejected(
            [f"/messages: at most {MAX_MESSAGES_PER_CALL} messages can be sent in one request"]
        )
    return messages


def _validate_each(
    items: list[Any], build: Callable[[Any], MessageRequest], prefix: str = "/messages"
) -> list[MessageRequest]:
    """All or nothing: every item's errors are collected, then the call is rejected."""
    details: list[str] = []
    requests: list[MessageRequest] = []
    for index, item in enumerate(items):
        try:
            requests.append(build(item))
        except ValidationError as exc:
            details.extend(validation_details(exc, f"{prefix}/{index}"))
    if details:
        raise SendRejected(details)
    return requests


def parse_messages(body: Any) -> list[MessageRequest]:
    """``POST /v1/messages``: 1 to 100 messages, each validated with the provider's rules."""
    return _validate_each(
        _message_list(body), lambda item: _from_outbound(OutboundMessage.model_validate(item))
    )


# --------------------------------------------------------------------------- connector sends


class _ConnectorSend(BaseModel):
    """Body of the connector's ``send-message`` (and, with media, ``send-mms``)."""

    model_config = ConfigDict(extra="ignore")

    to: str | list[str]
    message: str
    source_number: str | None = None
    delivery_report: bool = True
    callback_url: str | None = None
    metadata: list[dict[str, Any]] | dict[str, Any] | None = None
    media: list[str] | str | None = None
    subject: str | None = None

    def recipients(self) -> list[str]:
        raw = self.to.replace(",", " ").split() if isinstance(self.to, str) else self.to
        return [number.strip() for number in raw if number.strip()]


def _parse_connector(body: Any, fmt: Literal["SMS", "MMS"]) -> list[MessageRequest]:
    try:
        send = _ConnectorSend.model_validate(body)
    except ValidationError as exc:
        raise SendRejected(validation_details(exc)) from None
    recipients = send.recipients()
    if not recipients:
        raise SendRejected(["/to: at least one recipient is required"])
    if len(recipients) > MAX_MESSAGES_PER_CALL:
        raise SendRejected([f"/to: at most {MAX_MESSAGES_PER_CALL} recipients per request"])
    metadata = metadata_from_wire(send.metadata) or None
    media = [send.media] if isinstance(send.media, str) else send.media
    base: dict[str, Any] = {"content": send.message, "format": fmt}
    for name, value in (
        ("source_number", send.source_number),
        ("delivery_report", send.delivery_report),
        ("callback_url", send.callback_url),
        ("metadata", metadata),
        ("media", media if fmt == "MMS" else None),
        ("subject", send.subject if fmt == "MMS" else None),
    ):
        if value is not None:
            base[name] = value
    items = [{**base, "destination_number": number} for number in recipients]
    return _validate_each(items, lambda item: _from_outbound(OutboundMessage.model_validate(item)))


def parse_connector_sms(body: Any) -> list[MessageRequest]:
    """``POST /v1/int-power-automate/send-message``: one text to space-separated ``to``."""
    return _parse_connector(body, "SMS")


def parse_connector_mms(body: Any) -> list[MessageRequest]:
    """``POST /v1/int-power-automate/send-mms``: one MMS to space-separated ``to``."""
    return _parse_connector(body, "MMS")


# --------------------------------------------------------------------------- RCS


class _Open(BaseModel):
    """Conversation-API objects carry more optional fields than the sandbox checks."""

    model_config = ConfigDict(extra="allow")


class _Text(_Open):
    text: str = Field(min_length=1, max_length=3072)


class _UrlMessage(_Open):
    title: str = Field(min_length=1, max_length=25)
    url: str

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not _HTTP_URL.match(value):
            raise ValueError("url must be an http(s) URL")
        return value


class _Media(_Open):
    url: str

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not _HTTP_URL.match(value):
            raise ValueError("media url must be an http(s) URL")
        return value


class _Choice(_Open):
    text_message: _Text | None = None
    url_message: _UrlMessage | None = None
    call_message: dict[str, Any] | None = None
    location_message: dict[str, Any] | None = None
    postback_data: str | None = Field(default=None, max_length=2048)

    @model_validator(mode="after")
    def _one(self) -> Self:
        kinds = (self.text_message, self.url_message, self.call_message, self.location_message)
        if sum(k is not None for k in kinds) != 1:
            raise ValueError(
                "a choice needs exactly one of text_message, url_message, call_message "
                "or location_message"
            )
        return self


class _Card(_Open):
    title: str | None = Field(default=None, min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=2000)
    media_message: _Media | None = None
    choices: list[_Choice] = Field(default_factory=list, max_length=4)

    @model_validator(mode="after")
    def _something(self) -> Self:
        if self.title is None and self.description is None and self.media_message is None:
            raise ValueError("a card needs a title, a description or media")
        return self


class _Carousel(_Open):
    cards: list[_Card] = Field(min_length=2, max_length=10)
    choices: list[_Choice] = Field(default_factory=list, max_length=11)


class _ChoiceMessage(_Open):
    text_message: _Text
    choices: list[_Choice] = Field(min_length=1, max_length=11)


class _RcsBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text_message: _Text | None = None
    card_message: _Card | None = None
    carousel_message: _Carousel | None = None
    choice_message: _ChoiceMessage | None = None
    media_message: _Media | None = None

    @model_validator(mode="after")
    def _one(self) -> Self:
        bodies = (
            self.text_message,
            self.card_message,
            self.carousel_message,
            self.choice_message,
            self.media_message,
        )
        if sum(b is not None for b in bodies) != 1:
            raise ValueError(
                "rcs_message needs exactly one of text_message, card_message, "
                "carousel_message, choice_message or media_message"
            )
        return self


class _Fallback(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: Literal["SMS"] = "SMS"
    content: str = Field(min_length=1, max_length=MAX_CONTENT_LENGTH)


class _RcsSend(BaseModel):
    """One message of an RCS send: what :meth:`bot.sinch.models.RcsMessage.to_api` makes."""

    model_config = ConfigDict(extra="forbid")

    destination_number: str
    format: Literal["RCS"] = "RCS"
    rcs_message: _RcsBody
    fallback: _Fallback | None = None
    source_number: str | None = None
    callback_url: str | None = Field(default=None, max_length=1000)
    delivery_report: bool | None = None
    metadata: dict[str, str] | None = None

    @field_validator("destination_number")
    @classmethod
    def _destination(cls, value: str) -> str:
        if not E164_PATTERN.match(value):
            raise ValueError(
                "destination_number must be in international E.164 format: '+' then 8 to 15 digits"
            )
        return value

    @field_validator("source_number")
    @classmethod
    def _source(cls, value: str | None) -> str | None:
        if value is not None and not (
            E164_PATTERN.match(value) or re.fullmatch(r"[A-Za-z0-9 _\-]{1,11}", value)
        ):
            raise ValueError("source_number must be E.164 or an alphanumeric sender")
        return value

    @field_validator("callback_url")
    @classmethod
    def _callback(cls, value: str | None) -> str | None:
        if value is not None and not _HTTP_URL.match(value):
            raise ValueError("callback_url must be an http(s) URL")
        return value

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        return _validate_metadata(value)


def rcs_summary(rcs_message: dict[str, Any]) -> str:
    """Plain text standing for an RCS message (what a log or a simple simulator shows)."""
    if "text_message" in rcs_message:
        return str(rcs_message["text_message"].get("text", ""))
    if "choice_message" in rcs_message:
        return str(rcs_message["choice_message"]["text_message"].get("text", ""))
    if "card_message" in rcs_message:
        card = rcs_message["card_message"]
        return " - ".join(str(card[k]) for k in ("title", "description") if card.get(k))
    if "carousel_message" in rcs_message:
        cards = rcs_message["carousel_message"].get("cards", [])
        return " | ".join(str(c.get("title") or c.get("description") or "") for c in cards)
    if "media_message" in rcs_message:
        return str(rcs_message["media_message"].get("url", ""))
    return ""


def _from_rcs(item: Any) -> MessageRequest:
    send = _RcsSend.model_validate(item)
    wire = send.model_dump(mode="json", exclude_none=True)
    rcs = wire["rcs_message"]
    return MessageRequest(
        wire=wire,
        destination=send.destination_number,
        content=rcs_summary(rcs),
        format="RCS",
        source_number=send.source_number,
        metadata=dict(send.metadata or {}),
        callback_url=send.callback_url,
        delivery_report=bool(send.delivery_report),
        rcs=rcs,
        fallback=wire.get("fallback"),
    )


def parse_rcs(body: Any) -> list[MessageRequest]:
    """An RCS send: ``{"messages": [...]}`` (or one bare message object)."""
    if isinstance(body, dict) and "messages" not in body and "destination_number" in body:
        body = {"messages": [body]}
    return _validate_each(_message_list(body), _from_rcs)


# --------------------------------------------------------------------------- control API


class HandsetMedia(BaseModel):
    """An MMS attachment a handset sends: base64 content."""

    model_config = ConfigDict(extra="forbid")

    content_type: str = Field(default="image/jpeg", min_length=3, max_length=100)
    content: str = Field(min_length=1)
    name: str | None = Field(default=None, max_length=255)

    @field_validator("content")
    @classmethod
    def _base64(cls, value: str) -> str:
        try:
            base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("content must be base64") from None
        return value


class HandsetChoice(BaseModel):
    """An RCS suggested reply the handset tapped."""

    model_config = ConfigDict(extra="forbid")

    message_id: str | None = None
    postback_data: str = Field(min_length=1, max_length=2048)


class HandsetSend(BaseModel):
    """Body of ``POST /_sandbox/handsets/{number}/messages``."""

    model_config = ConfigDict(extra="forbid")

    content: str = Field(default="", max_length=MAX_CONTENT_LENGTH)
    to: str | None = None
    reply_to: str | None = "latest"
    """What the message answers: a message id, ``"latest"`` (default: the last message this
    handset got from ``to``, as the provider correlates replies; none yet: unsolicited) or
    ``null`` (unsolicited)."""
    media: list[HandsetMedia] | None = Field(default=None, max_length=10)
    rcs: bool = False
    choice: HandsetChoice | None = None

    @field_validator("to")
    @classmethod
    def _to(cls, value: str | None) -> str | None:
        if value is not None and not E164_PATTERN.match(value):
            raise ValueError("to must be one of our numbers in E.164 format")
        return value

    @model_validator(mode="after")
    def _something(self) -> Self:
        if not self.content and not self.media and self.choice is None:
            raise ValueError("a handset message needs content, media or a choice")
        if self.choice is not None and self.media:
            raise ValueError("a choice tap carries no media")
        return self

    def attachments(self) -> list[dict[str, str]]:
        return [
            {"content_type": m.content_type, "content": m.content, "name": m.name or ""}
            for m in self.media or []
        ]


class OutcomeRule(BaseModel):
    """Body of ``POST /_sandbox/outcomes``."""

    model_config = ConfigDict(extra="forbid")

    number: str
    status: DeliveryStatus | None = None
    code: int | None = Field(default=None, ge=100, le=999)

    @field_validator("number")
    @classmethod
    def _number(cls, value: str) -> str:
        if not E164_PATTERN.match(value):
            raise ValueError("number must be E.164")
        return value

    @field_validator("status", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _something(self) -> Self:
        if self.status is None and self.code is None:
            raise ValueError("give a status, a code or both")
        return self

    def outcome(self) -> Outcome:
        return Outcome.of(self.status, self.code)
