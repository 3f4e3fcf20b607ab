"""The management API's request models and limits: what ``POST /api/messages`` takes, and
the bounds of every list the API returns. The routes (:mod:`bot.api.routes`) validate with
them and the OpenAPI document (:mod:`bot.api.openapi`) is built from them."""

from __future__ import annotations

from datetime import datetime
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field

from bot.sinch.models import MAX_MESSAGES_PER_CALL, MAX_METADATA_PAIRS, RcsCard, RcsChoice
from bot.storage.events import GW_CONVERSATION, GW_ID

__all__ = [
    "MAX_CONVERSATIONS",
    "MAX_RECIPIENTS",
    "MAX_TIMELINE",
    "MAX_USER_METADATA",
    "RESERVED_METADATA",
    "RcsContent",
    "SendRequest",
]

MAX_RECIPIENTS: Final = MAX_MESSAGES_PER_CALL
RESERVED_METADATA: Final = (GW_ID, GW_CONVERSATION)
MAX_USER_METADATA: Final = MAX_METADATA_PAIRS - len(RESERVED_METADATA)
MAX_CONVERSATIONS: Final = 500
MAX_TIMELINE: Final = 1000


class RcsContent(BaseModel):
    """The RCS part of a send: exactly one of ``text``, ``card`` or ``carousel``."""

    model_config = ConfigDict(extra="forbid")

    text: str | None = Field(default=None, description="A text message.")
    card: RcsCard | None = Field(default=None, description="A rich card.")
    carousel: list[RcsCard] | None = Field(default=None, description="2 to 10 cards.")
    choices: list[RcsChoice] = Field(
        default_factory=list, description="Suggested replies (with text or a carousel)."
    )
    fallback_text: str | None = Field(
        default=None,
        description="SMS sent to handsets without RCS (default: the request's content).",
    )


class SendRequest(BaseModel):
    """Body of ``POST /api/messages``."""

    model_config = ConfigDict(extra="forbid")

    to: str | list[str] = Field(
        description="1 to 100 recipients: a list, or one string separated by commas "
        "(or by spaces, when it has no commas). Numbers without '+' are read in the "
        "default region."
    )
    channel: Literal["sms", "mms", "rcs"] = "sms"
    content: str | None = Field(
        default=None,
        description="The text (required for sms and mms; for rcs, the default fallback SMS).",
    )
    from_: str | None = Field(
        default=None,
        alias="from",
        description="Our number (E.164 or national), short code or alphanumeric sender; "
        "default: the account's.",
    )
    media: list[str] | None = Field(default=None, description="MMS: http(s) media URLs.")
    subject: str | None = Field(default=None, description="MMS: the subject.")
    metadata: dict[str, str] | None = Field(
        default=None,
        description=f"Up to {MAX_USER_METADATA} pairs, echoed on receipts and replies "
        f"({', '.join(RESERVED_METADATA)} are reserved).",
    )
    delivery_report: bool = Field(
        default=True, description="Ask for delivery receipts (they reach the timeline)."
    )
    callback_url: str | None = Field(
        default=None, description="Where the provider pushes this message's receipts/replies."
    )
    scheduled: datetime | None = Field(
        default=None, description="sms/mms: when to send (ISO 8601 with a time zone)."
    )
    rcs: RcsContent | None = Field(default=None, description="Required for channel rcs.")
