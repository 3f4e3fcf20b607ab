"""Typed models of every shape the Sinch MessageMedia / Sinch Engage API sends or accepts.

Outbound requests are validated here with the provider's own rules, so a bad message is
caught before it can make the provider reject a whole batch. Inbound pushes arrive in many
shapes (the connector's Velocity templates, per-message ``callback_url`` pushes, the Webhooks
API sample template, MMS, RCS, opt-out notifications); :func:`parse_inbound`,
:func:`parse_receipt` and :func:`parse_event` normalise them to one :class:`InboundMessage`
or :class:`DeliveryReceipt`, the only inbound types the rest of sinchbot sees.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal, Self
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)

E164_PATTERN = re.compile(r"^\+[0-9]{8,15}$")
MAX_MESSAGES_PER_CALL = 100
MAX_CONTENT_LENGTH = 5000
MAX_METADATA_PAIRS = 10
MAX_METADATA_KEY = 100
MAX_METADATA_VALUE = 256
MAX_SUBJECT = 64


# --------------------------------------------------------------------------- enums


class Format(StrEnum):
    """Message format of ``POST /v1/messages``."""

    SMS = "SMS"
    MMS = "MMS"
    TTS = "TTS"


class SourceNumberType(StrEnum):
    """How the provider should treat ``source_number``."""

    INTERNATIONAL = "INTERNATIONAL"
    ALPHANUMERIC = "ALPHANUMERIC"
    SHORTCODE = "SHORTCODE"


class MessageStatus(StrEnum):
    """Every status value of a message the provider documents (``Status.yaml`` plus the
    older ``undeliverable``). Unknown values from the wire are kept as plain strings."""

    UNDEFINED = "undefined"
    QUEUED = "queued"
    PROCESSING = "processing"
    PROCESSED = "processed"
    FAILED = "failed"
    SCHEDULED = "scheduled"
    CANCELLED = "cancelled"
    DELIVERED = "delivered"
    EXPIRED = "expired"
    ENROUTE = "enroute"
    HELD = "held"
    SUBMITTED = "submitted"
    REJECTED = "rejected"
    READ = "read"
    UNDELIVERABLE = "undeliverable"


class DeliveryStatus(StrEnum):
    """Status carried by a delivery report."""

    ENROUTE = "enroute"
    SUBMITTED = "submitted"
    DELIVERED = "delivered"
    EXPIRED = "expired"
    REJECTED = "rejected"
    FAILED = "failed"

    @property
    def is_final(self) -> bool:
        """Delivered, expired, rejected and failed end a message's life."""
        return self not in (DeliveryStatus.ENROUTE, DeliveryStatus.SUBMITTED)

    @property
    def rank(self) -> int:
        """Progress order: enroute (1) < submitted (2) < any final status (3)."""
        if self is DeliveryStatus.ENROUTE:
            return 1
        if self is DeliveryStatus.SUBMITTED:
            return 2
        return 3


# Status codes of delivery reports, with the provider's meaning (spec §4).
STATUS_CODES: dict[int, str] = {
    101: "processing by gateway",
    102: "rerouting to another provider",
    151: "held for screening",
    200: "submitted downstream",
    210: "accepted by provider",
    211: "enroute by provider",
    212: "submitted, delivery pending",
    213: "scheduled by provider",
    220: "delivered",
    221: "delivered to handset",
    320: "validity expired before submission",
    401: "validity expired before delivery",
    301: "usage threshold reached",
    302: "destination blocked, discarded",
    303: "source blocked, discarded",
    304: "dropped, contact support",
    305: "duplicate detection discard",
    402: "rejected by provider",
    403: "skipped by provider",
    410: "invalid source",
    411: "invalid destination",
    412: "destination blocked",
    413: "SMS service unavailable on destination",
    414: "destination unreachable",
    330: "gateway failure",
    331: "discarded",
    332: "no route",
    333: "source unsupported for destination",
    400: "failed, undeliverable",
    405: "cancelled/deleted by provider",
}


def status_for_code(code: int) -> DeliveryStatus:
    """The delivery status a status code belongs to."""
    if code in (101, 102, 151):
        return DeliveryStatus.ENROUTE
    if code == 200 or 210 <= code <= 213:
        return DeliveryStatus.SUBMITTED
    if code in (220, 221):
        return DeliveryStatus.DELIVERED
    if code in (320, 401):
        return DeliveryStatus.EXPIRED
    if 301 <= code <= 305 or code == 412:
        return DeliveryStatus.REJECTED
    return DeliveryStatus.FAILED


def default_code_for(status: DeliveryStatus) -> int:
    """A representative status code for a status (what the sandbox sends)."""
    return {
        DeliveryStatus.ENROUTE: 101,
        DeliveryStatus.SUBMITTED: 200,
        DeliveryStatus.DELIVERED: 220,
        DeliveryStatus.EXPIRED: 401,
        DeliveryStatus.REJECTED: 302,
        DeliveryStatus.FAILED: 400,
    }[status]


class Channel(StrEnum):
    """The channel an inbound message arrived on."""

    SMS = "SMS"
    MMS = "MMS"
    RCS = "RCS"


class WebhookEvent(StrEnum):
    """Events of the Webhooks Management API."""

    RECEIVED_SMS = "RECEIVED_SMS"
    OPT_OUT_SMS = "OPT_OUT_SMS"
    RECEIVED_MMS = "RECEIVED_MMS"
    ENROUTE_DR = "ENROUTE_DR"
    EXPIRED_DR = "EXPIRED_DR"
    REJECTED_DR = "REJECTED_DR"
    FAILED_DR = "FAILED_DR"
    DELIVERED_DR = "DELIVERED_DR"
    SUBMITTED_DR = "SUBMITTED_DR"


def dr_event_for(status: DeliveryStatus) -> WebhookEvent:
    """The webhook event a delivery report of ``status`` fires."""
    return WebhookEvent(f"{status.value.upper()}_DR")


# --------------------------------------------------------------------------- helpers


def format_timestamp(value: datetime) -> str:
    """The provider's timestamp format: ISO 8601 UTC with milliseconds and ``Z``."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_timestamp(value: Any) -> datetime | None:
    """Parse a provider timestamp; ``None`` for absent or unparseable values."""
    if value in (None, ""):
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _validate_e164(value: str, what: str = "number") -> str:
    if not E164_PATTERN.match(value):
        raise ValueError(f"{what} must be in international E.164 format: '+' then 8 to 15 digits")
    return value


_URL_FORBIDDEN = re.compile(r"[\s\x00-\x1f\x7f-\x9f]")
_TEL_URL = re.compile(r"tel:(\+?[0-9][0-9().-]{1,30})", re.IGNORECASE)
MAX_URL = 2048
"""Longest URL accepted in a message (media, links, callbacks)."""


def _validate_http_url(value: str, what: str) -> str:
    """``value`` if it is an absolute http(s) URL with a host, no whitespace and no control
    characters (so no ``javascript:``, ``data:`` or relative links), at most
    :data:`MAX_URL` characters."""
    try:
        parts = urlsplit(value)
    except ValueError:  # a malformed IPv6 host
        parts = urlsplit("")
    if (
        len(value) > MAX_URL
        or _URL_FORBIDDEN.search(value)
        or parts.scheme.lower() not in ("http", "https")
        or not parts.netloc
    ):
        raise ValueError(f"{what} must be an http(s) URL")
    return value


def _validate_metadata(value: dict[str, str] | None) -> dict[str, str] | None:
    if value is None:
        return None
    if len(value) > MAX_METADATA_PAIRS:
        raise ValueError(f"at most {MAX_METADATA_PAIRS} metadata pairs are allowed")
    for key, item in value.items():
        if not 1 <= len(key) <= MAX_METADATA_KEY:
            raise ValueError(
                f"metadata key {key[:20]!r} must be 1 to {MAX_METADATA_KEY} characters"
            )
        if len(item) > MAX_METADATA_VALUE:
            raise ValueError(
                f"metadata value of {key!r} must be at most {MAX_METADATA_VALUE} characters"
            )
    return value


def metadata_from_wire(value: Any) -> dict[str, str]:
    """Metadata arrives as a map, or as the connector's ``[{metadata_key, metadata_value}]``."""
    if isinstance(value, Mapping):
        return {str(k): "" if v is None else str(v) for k, v in value.items()}
    if isinstance(value, list):
        result: dict[str, str] = {}
        for item in value:
            if isinstance(item, Mapping) and "metadata_key" in item:
                raw = item.get("metadata_value")
                result[str(item["metadata_key"])] = "" if raw is None else str(raw)
        return result
    return {}


class _Wire(BaseModel):
    """Base of models read from the wire: unknown fields are kept, never rejected."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)


# --------------------------------------------------------------------------- outbound


class OutboundMessage(BaseModel):
    """One message of ``POST /v1/messages``, validated with the provider's rules."""

    model_config = ConfigDict(extra="forbid", use_enum_values=False)

    content: str = Field(min_length=1, max_length=MAX_CONTENT_LENGTH)
    destination_number: str
    source_number: str | None = None
    source_number_type: SourceNumberType | None = None
    format: Format = Format.SMS
    media: list[str] | None = None
    subject: str | None = Field(default=None, max_length=MAX_SUBJECT)
    callback_url: str | None = Field(default=None, max_length=1000)
    delivery_report: bool | None = None
    scheduled: datetime | None = None
    message_expiry_timestamp: datetime | None = None
    metadata: dict[str, str] | None = None

    @field_validator("destination_number")
    @classmethod
    def _destination(cls, value: str) -> str:
        return _validate_e164(value, "destination_number")

    @field_validator("source_number")
    @classmethod
    def _source(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if value.startswith("+"):
            return _validate_e164(value, "source_number")
        if not re.fullmatch(r"[A-Za-z0-9 _\-]{1,11}|[0-9]{3,8}", value):
            raise ValueError(
                "source_number must be E.164, a short code or an alphanumeric sender of up to 11 characters"
            )
        return value

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        return _validate_metadata(value)

    @field_validator("media")
    @classmethod
    def _media(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        for url in value:
            _validate_http_url(url, f"media entry {url[:60]!r}")
        return value

    @field_validator("callback_url")
    @classmethod
    def _callback(cls, value: str | None) -> str | None:
        return None if value is None else _validate_http_url(value, "callback_url")

    @model_validator(mode="after")
    def _consistency(self) -> Self:
        if self.source_number_type is not None and self.source_number is None:
            raise ValueError("source_number_type needs source_number")
        if self.media and self.format is not Format.MMS:
            raise ValueError("media needs format MMS")
        if self.subject is not None and self.format is not Format.MMS:
            raise ValueError("subject is only for MMS")
        return self

    @field_serializer("scheduled", "message_expiry_timestamp")
    def _timestamps(self, value: datetime | None) -> str | None:
        return None if value is None else format_timestamp(value)

    def to_api(self) -> dict[str, Any]:
        """The JSON object the provider expects for this message."""
        return self.model_dump(mode="json", exclude_none=True)


class ProviderMessage(_Wire):
    """A message as the provider returns it: from ``POST /v1/messages`` (status ``queued``)
    and ``GET /v1/messages/{id}``."""

    message_id: str
    status: MessageStatus | str = MessageStatus.QUEUED
    content: str | None = None
    destination_number: str | None = None
    source_number: str | None = None
    source_number_type: str | None = None
    format: str | None = None
    media: list[str] | None = None
    subject: str | None = None
    callback_url: str | None = None
    delivery_report: bool | None = None
    scheduled: str | None = None
    message_expiry_timestamp: str | None = None
    metadata: dict[str, str] | None = None

    @field_validator("status", mode="before")
    @classmethod
    def _status(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                return MessageStatus(value.lower())
            except ValueError:
                return value
        return value

    @field_validator("metadata", mode="before")
    @classmethod
    def _metadata(cls, value: Any) -> Any:
        return None if value is None else metadata_from_wire(value)


class SendMessagesResponse(_Wire):
    """Response of ``POST /v1/messages``: the accepted messages with their ``message_id``."""

    messages: list[ProviderMessage]


# --------------------------------------------------------------------------- RCS (outbound)


class RcsChoice(BaseModel):
    """A suggested reply or action shown under an RCS message: a reply (``text``, its
    ``postback_data``), a link (``url``: http or https, opened in the browser) or a call
    (``url`` ``tel:+61491570157``, the dialler)."""

    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1, max_length=25)
    postback_data: str | None = Field(default=None, max_length=2048)
    url: str | None = Field(default=None, max_length=MAX_URL)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is None or _TEL_URL.fullmatch(value):
            return value
        try:
            return _validate_http_url(value, "url")
        except ValueError:
            raise ValueError("url must be an http(s) URL or a tel: number") from None

    def to_api(self) -> dict[str, Any]:
        if self.url:
            tel = _TEL_URL.fullmatch(self.url)
            if tel:
                number = re.sub(r"[^0-9+]", "", tel.group(1))
                return {"call_message": {"title": self.text, "phone_number": number}}
            return {"url_message": {"title": self.text, "url": self.url}}
        return {
            "text_message": {"text": self.text},
            "postback_data": self.postback_data or self.text,
        }


class RcsCard(BaseModel):
    """A rich card: title, description, optional media and choices."""

    model_config = ConfigDict(extra="forbid")

    title: str = Field(min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=2000)
    media_url: str | None = None
    choices: list[RcsChoice] = Field(default_factory=list, max_length=4)

    @field_validator("media_url")
    @classmethod
    def _media(cls, value: str | None) -> str | None:
        return None if value is None else _validate_http_url(value, "media_url")

    def to_api(self) -> dict[str, Any]:
        card: dict[str, Any] = {"title": self.title}
        if self.description:
            card["description"] = self.description
        if self.media_url:
            card["media_message"] = {"url": self.media_url}
        if self.choices:
            card["choices"] = [c.to_api() for c in self.choices]
        return card


class RcsMessage(BaseModel):
    """An RCS message in Sinch Conversation API shape: exactly one of ``text``, ``card`` or
    ``carousel``; ``choices`` may accompany text or a carousel. ``fallback_text`` is sent as
    SMS to handsets without RCS."""

    model_config = ConfigDict(extra="forbid")

    destination_number: str
    source_number: str | None = None
    text: str | None = Field(default=None, min_length=1, max_length=3072)
    card: RcsCard | None = None
    carousel: list[RcsCard] | None = Field(default=None, min_length=2, max_length=10)
    choices: list[RcsChoice] = Field(default_factory=list, max_length=11)
    fallback_text: str | None = Field(default=None, min_length=1, max_length=MAX_CONTENT_LENGTH)
    callback_url: str | None = Field(default=None, max_length=1000)
    delivery_report: bool | None = None
    metadata: dict[str, str] | None = None

    @field_validator("destination_number")
    @classmethod
    def _destination(cls, value: str) -> str:
        return _validate_e164(value, "destination_number")

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        return _validate_metadata(value)

    @field_validator("callback_url")
    @classmethod
    def _callback(cls, value: str | None) -> str | None:
        return None if value is None else _validate_http_url(value, "callback_url")

    @model_validator(mode="after")
    def _one_body(self) -> Self:
        bodies = [b for b in (self.text, self.card, self.carousel) if b is not None]
        if len(bodies) != 1:
            raise ValueError("an RCS message needs exactly one of text, card or carousel")
        if self.choices and self.card is not None:
            raise ValueError("put a card's choices on the card itself")
        return self

    def rcs_body(self) -> dict[str, Any]:
        """The Conversation-API-style message object."""
        if self.text is not None:
            if self.choices:
                return {
                    "choice_message": {
                        "text_message": {"text": self.text},
                        "choices": [c.to_api() for c in self.choices],
                    }
                }
            return {"text_message": {"text": self.text}}
        if self.card is not None:
            return {"card_message": self.card.to_api()}
        assert self.carousel is not None
        carousel: dict[str, Any] = {"cards": [c.to_api() for c in self.carousel]}
        if self.choices:
            carousel["choices"] = [c.to_api() for c in self.choices]
        return {"carousel_message": carousel}

    def summary_text(self) -> str:
        """Plain text standing for this message (fallback text, else the text or titles)."""
        if self.fallback_text:
            return self.fallback_text
        if self.text is not None:
            return self.text
        cards = [self.card] if self.card else list(self.carousel or [])
        return " | ".join(c.title for c in cards)

    def to_api(self) -> dict[str, Any]:
        """One entry of the RCS send call: routing fields, ``rcs_message`` and ``fallback``."""
        body: dict[str, Any] = {"destination_number": self.destination_number, "format": "RCS"}
        for name in ("source_number", "callback_url", "delivery_report", "metadata"):
            value = getattr(self, name)
            if value is not None:
                body[name] = value
        body["rcs_message"] = self.rcs_body()
        if self.fallback_text:
            body["fallback"] = {"format": "SMS", "content": self.fallback_text}
        return body


# --------------------------------------------------------------------------- sender IDs


class Pagination(_Wire):
    """MessageMedia's shared page-numbered pagination."""

    page: int = 0
    page_size: int = 0
    total_count: int = 0
    page_count: int = 0
    next_uri: str | None = None
    previous_uri: str | None = None


class DefaultSender(_Wire):
    type: str | None = None
    number: str | None = None
    source_type: str | None = None
    mms_capable: bool = False


class Sender(_Wire):
    """One sender of the connector's "Get sender IDs"."""

    display_type: str | None = None
    is_default: bool = False
    label: str | None = None
    mms_capable: bool = False
    number: str
    display_name: str | None = None
    number_id: str | None = None
    source_type: str | None = None
    type: str | None = None
    number_status: str | None = None


class SenderIds(_Wire):
    """The connector's sender-ID listing."""

    pagination: Pagination = Field(default_factory=Pagination)
    default_sender: DefaultSender | None = None
    senders: list[Sender] = Field(default_factory=list)
    account_id: str | None = None
    vendor_id: str | None = None


class TokenPagination(_Wire):
    page_size: int = 20
    next_token: str | None = None


class SenderAddress(_Wire):
    """``GET /v1/messaging/numbers/sender_address/addresses`` item."""

    id: str
    sender_address: str
    sender_address_type: str | None = None
    usage_type: str | None = None
    destination_countries: list[str] = Field(default_factory=list)
    reason: str | None = None
    label: str | None = None
    account_id: str | None = None
    created_date: str | None = None
    last_modified_date: str | None = None
    expiry: str | None = None
    display_status: str | None = None


class SenderAddressPage(_Wire):
    data: list[SenderAddress] = Field(default_factory=list)
    pagination: TokenPagination = Field(default_factory=TokenPagination)


class NumberAssignment(_Wire):
    id: str
    number_id: str
    label: str | None = None
    metadata: dict[str, str] | None = None


class DedicatedNumber(_Wire):
    id: str
    phone_number: str
    country: str | None = None
    type: str | None = None
    classification: str | None = None
    capabilities: list[str] = Field(default_factory=list)

    @property
    def mms_capable(self) -> bool:
        return "MMS" in self.capabilities


class DedicatedAssignment(_Wire):
    assignment: NumberAssignment
    number: DedicatedNumber


class DedicatedAssignmentPage(_Wire):
    data: list[DedicatedAssignment] = Field(default_factory=list)
    pagination: TokenPagination = Field(default_factory=TokenPagination)


# --------------------------------------------------------------------------- webhooks API


WebhookMethod = Literal["GET", "POST", "PATCH", "PUT", "DELETE"]
WebhookEncoding = Literal["JSON", "FORM_ENCODED", "XML"]


class WebhookSpec(BaseModel):
    """Body of ``POST /v1/webhooks/messages``."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(min_length=1, max_length=1000)
    method: WebhookMethod = "POST"
    encoding: WebhookEncoding = "JSON"
    events: list[WebhookEvent] = Field(min_length=1)
    headers: dict[str, str] | None = None
    template: str | None = None
    read_timeout: int | None = Field(default=None, ge=1, le=60000)
    retries: int | None = Field(default=None, ge=0, le=5)
    retry_delay: int | None = Field(default=None, ge=5, le=60)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _validate_http_url(value, "url")

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        for key, item in (value or {}).items():
            if key.lower() == "content-type":
                raise ValueError("headers may not set Content-Type")
            if len(key) > 200 or len(item) > 1000:
                raise ValueError("header keys are at most 200 and values 1000 characters")
        return value

    def to_api(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


class Webhook(_Wire):
    """A registered webhook, as the Webhooks API returns it."""

    id: str
    url: str
    method: str = "POST"
    encoding: str = "JSON"
    events: list[str] = Field(default_factory=list)
    headers: dict[str, str] | None = None
    template: str | None = None
    read_timeout: int | None = None
    retries: int | None = None
    retry_delay: int | None = None


class WebhookPage(_Wire):
    page: int = 0
    page_size: int = Field(default=0, alias="pageSize")
    page_data: list[Webhook] = Field(default_factory=list, alias="pageData")


# --------------------------------------------------------------------------- blacklist


class BlacklistPage(_Wire):
    uri: str | None = None
    numbers: list[str] = Field(default_factory=list)
    pagination: dict[str, Any] | None = None


class NumberAuthorisation(_Wire):
    number: str
    authorised: bool


# --------------------------------------------------------------------------- inbound


class Attachment(BaseModel):
    """MMS media of an inbound message (base64 content), or an RCS media URL."""

    model_config = ConfigDict(frozen=True)

    content_type: str | None = None
    content: str | None = None
    name: str | None = None
    url: str | None = None


class RcsChoiceResponse(BaseModel):
    """The handset tapped a suggested reply: which message and which choice."""

    model_config = ConfigDict(frozen=True)

    message_id: str | None = None
    postback_data: str


class InboundMessage(BaseModel):
    """A message from a handset (SMS, MMS or RCS), or the provider's opt-out notification,
    whatever shape it was pushed in."""

    model_config = ConfigDict(frozen=True)

    event_id: str
    """Stable id for deduplication: reply_id, notification_id, or a hash of the content."""
    kind: Literal["message", "opt_out"] = "message"
    channel: Channel = Channel.SMS
    reply_id: str | None = None
    source_number: str
    """The handset that sent the message."""
    destination_number: str | None = None
    """Our number it was sent to (absent when the original message used the shared pool)."""
    content: str = ""
    message_id: str | None = None
    """The outbound message this replies to, when it is a reply."""
    metadata: dict[str, str] = Field(default_factory=dict)
    """Metadata of the outbound message this replies to."""
    attachments: tuple[Attachment, ...] = ()
    choice: RcsChoiceResponse | None = None
    rcs: dict[str, Any] | None = None
    """The raw Conversation-API ``contact_message`` for RCS."""
    received_at: datetime | None = None
    submitted_at: datetime | None = None
    account_id: str | None = None
    vendor_id: str | None = None


class DeliveryReceipt(BaseModel):
    """A delivery report, whatever shape it was pushed or polled in."""

    model_config = ConfigDict(frozen=True)

    event_id: str
    delivery_report_id: str | None = None
    message_id: str
    status: DeliveryStatus | str
    status_code: int | None = None
    recipient: str | None = None
    """The handset the message went to."""
    sender: str | None = None
    content: str | None = None
    format: str | None = None
    billing_units: int | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    submitted_at: datetime | None = None
    received_at: datetime | None = None
    account_id: str | None = None
    vendor_id: str | None = None

    @field_validator("status", mode="before")
    @classmethod
    def _status(cls, value: Any) -> Any:
        # Known statuses become the enum whatever the source (JSON would keep a plain str).
        if isinstance(value, str) and not isinstance(value, DeliveryStatus):
            try:
                return DeliveryStatus(value.lower())
            except ValueError:
                return value.lower()
        return value

    @property
    def status_meaning(self) -> str | None:
        """The provider's meaning of ``status_code``."""
        return None if self.status_code is None else STATUS_CODES.get(self.status_code)

    @property
    def is_final(self) -> bool:
        return isinstance(self.status, DeliveryStatus) and self.status.is_final


class PayloadError(ValueError):
    """A pushed payload is not any shape the provider sends."""


MAX_ID_LENGTH = 100
"""Longest provider id accepted in a push (reply, notification, message, report ids)."""
MAX_POSTBACK_LENGTH = 2048
_MAX_SHORT = 100
"""Longest short field of a push: types, statuses, codes, account ids, content types."""
_MAX_NAME = 255
_MAX_TIMESTAMP = 64
_ALPHANUMERIC_SENDER = re.compile(r"(?=.*[A-Za-z])[A-Za-z0-9](?:[A-Za-z0-9 _-]{0,9}[A-Za-z0-9])?")
_DIGITS_SENDER = re.compile(r"[0-9]{3,15}")


def is_address(value: str) -> bool:
    """Whether ``value`` can be a number of a message: E.164 (``+`` and 8 to 15 digits), 3
    to 15 digits (a short code, or an international number without its ``+``), or an
    alphanumeric sender (1 to 11 letters, digits, spaces, ``_`` or ``-``, with a letter)."""
    return bool(
        E164_PATTERN.fullmatch(value)
        or _DIGITS_SENDER.fullmatch(value)
        or _ALPHANUMERIC_SENDER.fullmatch(value)
    )


def _content_hash(kind: str, payload: Mapping[str, Any]) -> str:
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return f"{kind}:sha256:" + hashlib.sha256(canonical.encode()).hexdigest()[:32]


def _str(
    payload: Mapping[str, Any], *names: str, limit: int = _MAX_SHORT, ints: bool = False
) -> str | None:
    """The first of ``names`` present and not empty: a string of at most ``limit``
    characters (or, with ``ints``, an integer, as text). Any other type, or a longer
    string, is a :class:`PayloadError` naming the field; ``None`` when none is present."""
    for name in names:
        value = payload.get(name)
        if value is None or value == "":
            continue
        if ints and isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str):
            kind = "a string or an integer" if ints else "a string"
            raise PayloadError(f"{name}: must be {kind}")
        if len(value) > limit:
            raise PayloadError(f"{name}: longer than {limit} characters")
        return value
    return None


def _id(payload: Mapping[str, Any], *names: str) -> str | None:
    """A provider id: a printable string of at most :data:`MAX_ID_LENGTH` characters."""
    value = _str(payload, *names, limit=MAX_ID_LENGTH)
    if value is not None and not value.isprintable():
        raise PayloadError(f"{names[0]}: must be printable text")
    return value


def _address(payload: Mapping[str, Any], *names: str) -> str | None:
    """A number: see :func:`is_address`."""
    value = _str(payload, *names, limit=_MAX_SHORT)
    if value is not None and not is_address(value):
        raise PayloadError(
            f"{next(n for n in names if payload.get(n) not in (None, ''))}: must be an E.164 "
            "number, a short code or an alphanumeric sender"
        )
    return value


def _object(payload: Mapping[str, Any], name: str) -> Mapping[str, Any] | None:
    value = payload.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, Mapping):
        raise PayloadError(f"{name}: must be an object")
    return value


def _timestamp(payload: Mapping[str, Any], name: str) -> datetime | None:
    """A timestamp field: a string (unparseable: ``None``, as the provider's own format may
    change); any other type is refused."""
    return parse_timestamp(_str(payload, name, limit=_MAX_TIMESTAMP))


def _metadata(payload: Mapping[str, Any]) -> dict[str, str]:
    """The echoed metadata, as a map or the connector's ``[{metadata_key,
    metadata_value}]``: keys of 1 to :data:`MAX_METADATA_KEY` characters, values strings
    (or null) of at most :data:`MAX_METADATA_VALUE`, at most :data:`MAX_METADATA_PAIRS`
    pairs; anything else is a :class:`PayloadError`."""
    raw = payload.get("metadata")
    if raw is None or raw == "":
        return {}
    if isinstance(raw, Mapping):
        pairs = list(raw.items())
    elif isinstance(raw, list):
        pairs = []
        for item in raw:
            if not isinstance(item, Mapping) or "metadata_key" not in item:
                raise PayloadError("metadata: items must be {metadata_key, metadata_value}")
            pairs.append((item["metadata_key"], item.get("metadata_value")))
    else:
        raise PayloadError("metadata: must be an object or a list")
    if len(pairs) > MAX_METADATA_PAIRS:
        raise PayloadError(f"metadata: at most {MAX_METADATA_PAIRS} pairs")
    result: dict[str, str] = {}
    for key, value in pairs:
        if not isinstance(key, str) or not 1 <= len(key) <= MAX_METADATA_KEY:
            raise PayloadError(f"metadata: keys must be 1 to {MAX_METADATA_KEY} characters")
        if value is not None and not isinstance(value, str):
            raise PayloadError(f"metadata: the value of {key[:20]!r} must be a string")
        if value is not None and len(value) > MAX_METADATA_VALUE:
            raise PayloadError(f"metadata: values must be at most {MAX_METADATA_VALUE} characters")
        result[key] = value or ""
    return result


def _vendor(payload: Mapping[str, Any]) -> tuple[str | None, str | None]:
    vendor = _object(payload, "vendor_account_id")
    if vendor is not None:
        return _str(vendor, "account_id"), _str(vendor, "vendor_id")
    return _str(payload, "account_id", "accountId"), _str(payload, "vendor_id", "vendorId")


def _attachments(payload: Mapping[str, Any]) -> tuple[Attachment, ...]:
    raw = payload.get("attachments")
    if raw is None or raw == "":
        return ()
    if not isinstance(raw, list):
        raise PayloadError("attachments: must be a list")
    result = []
    for item in raw:
        if not isinstance(item, Mapping):
            raise PayloadError("attachments: items must be objects")
        result.append(
            Attachment(
                content_type=_str(item, "attachment_type", "content_type", "contentType"),
                # base64 media: bounded by the body limit only
                content=_str(item, "attachment_content", "content", "base64", limit=2**31),
                name=_str(
                    item,
                    "attachment_name",
                    "original_name",
                    "originalName",
                    "name",
                    limit=_MAX_NAME,
                ),
                url=_str(item, "url", limit=MAX_URL),
            )
        )
    return tuple(result)


def _rcs_content(
    contact: Mapping[str, Any],
) -> tuple[str, RcsChoiceResponse | None, tuple[Attachment, ...]]:
    text = contact.get("text_message")
    if isinstance(text, Mapping):
        return _str(text, "text", limit=MAX_CONTENT_LENGTH) or "", None, ()
    choice = contact.get("choice_response_message")
    if isinstance(choice, Mapping) and choice.get("postback_data") is not None:
        postback = _str(choice, "postback_data", limit=MAX_POSTBACK_LENGTH)
        if postback is None:
            raise PayloadError("choice_response_message: empty postback_data")
        response = RcsChoiceResponse(message_id=_id(choice, "message_id"), postback_data=postback)
        return response.postback_data, response, ()
    media = contact.get("media_message")
    if isinstance(media, Mapping):
        return (
            "",
            None,
            (
                Attachment(
                    url=_str(media, "url", limit=MAX_URL),
                    content_type=_str(media, "mime_type"),
                ),
            ),
        )
    raise PayloadError("contact_message holds no text, choice response or media")


def parse_inbound(payload: Mapping[str, Any]) -> InboundMessage:
    """Normalise any inbound-message push to :class:`InboundMessage`.

    Accepts the connector's MO template (``source_address``, list-shaped metadata,
    ``attachment_*``, RCS ``contact_message``), the per-message ``callback_url`` reply push
    (the Reply object), the Webhooks API sample templates for SMS, MMS and opt-out
    (``notification_id``). Every field it reads is type-checked and bounded: numbers are
    E.164, short codes or alphanumeric senders (:func:`is_address`), ids are printable and
    at most :data:`MAX_ID_LENGTH` characters, the text at most
    :data:`MAX_CONTENT_LENGTH`, the metadata as the provider accepts it on a send. Raises
    :class:`PayloadError` for anything else.
    """
    if not isinstance(payload, Mapping):
        raise PayloadError("payload must be a JSON object")
    source = _address(payload, "source_address", "source_number", "sourceAddress", "from")
    if source is None:
        raise PayloadError("inbound message has no source_number / source_address")
    destination = _address(payload, "destination_address", "destination_number")
    contact = _object(payload, "contact_message")
    choice: RcsChoiceResponse | None = None
    attachments = _attachments(payload)
    rcs: dict[str, Any] | None = None
    declared = (_str(payload, "format") or _str(payload, "type") or "").upper()
    if contact is not None:
        content, choice, rcs_media = _rcs_content(contact)
        attachments = attachments + rcs_media
        channel = Channel.RCS
        rcs = dict(contact)
    else:
        content = (
            _str(payload, "content", limit=MAX_CONTENT_LENGTH)
            if payload.get("content") is not None
            else _str(payload, "reply_content", limit=MAX_CONTENT_LENGTH)
        ) or ""
        channel = Channel.MMS if attachments or declared == "MMS" else Channel.SMS
        if declared == "RCS":
            channel = Channel.RCS
    notification_id = _id(payload, "notification_id", "notificationId")
    event_type = (_str(payload, "event") or _str(payload, "event_type") or "").upper()
    kind: Literal["message", "opt_out"] = (
        "opt_out" if notification_id or event_type == WebhookEvent.OPT_OUT_SMS else "message"
    )
    reply_id = _id(payload, "reply_id", "replyId", "mo_id", "moId")
    if kind == "message" and not content and not attachments and choice is None:
        raise PayloadError("inbound message has no content")
    account_id, vendor_id = _vendor(payload)
    event_id = reply_id or notification_id or _content_hash("mo", payload)
    return InboundMessage(
        event_id=event_id,
        kind=kind,
        channel=channel,
        reply_id=reply_id,
        source_number=source,
        destination_number=destination,
        content=content,
        message_id=_id(payload, "message_id", "messageId", "mt_id"),
        metadata=_metadata(payload),
        attachments=attachments,
        choice=choice,
        rcs=rcs,
        received_at=_timestamp(payload, "date_received"),
        submitted_at=_timestamp(payload, "submitted_date"),
        account_id=account_id,
        vendor_id=vendor_id,
    )


def _status_code(payload: Mapping[str, Any]) -> int | None:
    raw = _str(payload, "status_code", "statusCode", "error_code", ints=True)
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        return None


def _billing_units(value: Any) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, str):
        return int(value) if value.isascii() and value.isdigit() and len(value) < 10 else None
    raise PayloadError("billing_units: must be an integer")


def parse_receipt(payload: Mapping[str, Any]) -> DeliveryReceipt:
    """Normalise a delivery report (the connector's DR template, the ``callback_url`` push
    or a polled report) to :class:`DeliveryReceipt`, its fields type-checked and bounded as
    :func:`parse_inbound`'s are. Raises :class:`PayloadError`."""
    if not isinstance(payload, Mapping):
        raise PayloadError("payload must be a JSON object")
    message_id = _id(payload, "message_id", "messageId", "mt_id")
    if message_id is None:
        raise PayloadError("delivery report has no message_id")
    code = _status_code(payload)
    raw_status = _str(payload, "status")
    status: DeliveryStatus | str
    if raw_status is not None:
        try:
            status = DeliveryStatus(raw_status.lower())
        except ValueError:
            status = raw_status.lower()
    elif code is not None:
        status = status_for_code(code)
    else:
        raise PayloadError("delivery report has neither status nor status_code")
    report_id = _id(payload, "delivery_report_id", "deliveryReportId", "dr_id", "drId")
    units = payload.get("billing_units")
    account_id, vendor_id = _vendor(payload)
    return DeliveryReceipt(
        event_id=report_id or _content_hash("dr", payload),
        delivery_report_id=report_id,
        message_id=message_id,
        status=status,
        status_code=code,
        recipient=_address(payload, "source_address", "source_number"),
        sender=_address(payload, "destination_address", "destination_number"),
        content=_str(payload, "content", "original_text", limit=MAX_CONTENT_LENGTH),
        format=_str(payload, "format", "type"),
        billing_units=_billing_units(units),
        metadata=_metadata(payload),
        submitted_at=_timestamp(payload, "submitted_date"),
        received_at=_timestamp(payload, "date_received"),
        account_id=account_id,
        vendor_id=vendor_id,
    )


def is_receipt_payload(payload: Mapping[str, Any]) -> bool:
    """Whether a push (for example to a ``callback_url``, which carries both) is a delivery
    report rather than an inbound message."""
    if any(k in payload for k in ("delivery_report_id", "deliveryReportId", "original_text")):
        return True
    if any(k in payload for k in ("reply_id", "notification_id", "contact_message")):
        return False
    status = str(payload.get("status") or "").lower()
    return status in {s.value for s in DeliveryStatus} or "error_code" in payload


def parse_event(payload: Mapping[str, Any]) -> InboundMessage | DeliveryReceipt:
    """Parse a push that may be either an inbound message or a delivery report."""
    if not isinstance(payload, Mapping):
        raise PayloadError("payload must be a JSON object")
    if is_receipt_payload(payload):
        return parse_receipt(payload)
    return parse_inbound(payload)


def validation_details(error: ValidationError, prefix: str = "") -> list[str]:
    """pydantic errors as the provider words them: ``/messages/0/field: reason``."""
    details = []
    for item in error.errors():
        pointer = "/".join(str(part) for part in item["loc"])
        message = item["msg"].removeprefix("Value error, ")
        details.append(f"{prefix}/{pointer}: {message}" if pointer else f"{prefix}: {message}")
    return details
