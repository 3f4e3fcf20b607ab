"""The OpenAPI 3.1 document of the gateway: the management API, the webhook endpoints and,
under ``webhooks``, the events the gateway forwards to subscribers.

Request bodies and responses are described by pydantic models (the request model is the
one the API validates with; the response models match what the handlers return, which the
tests check), so the document and the code cannot drift apart silently. Served at
``GET /api/openapi.json``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field

from bot import __version__
from bot.api.models import MAX_CONVERSATIONS, MAX_TIMELINE, SendRequest
from bot.ingress.webhooks import WEBHOOK_OPENAPI_PATHS
from bot.receipts.forwarding import EVENT_ID_HEADER, EVENT_TYPE_HEADER, SIGNATURE_HEADER
from bot.sinch.models import ProviderMessage, SenderIds

__all__ = ["openapi_document"]

_REF: Final = "#/components/schemas/{model}"
_JSON: Final = "application/json"
_BEARER: Final[list[dict[str, list[str]]]] = [{"bearerAuth": []}]
_EMPTY: Final[Mapping[str, Any]] = MappingProxyType({})


# ----------------------------------------------------------------------------- responses


class Error(BaseModel):
    """Every error response."""

    model_config = ConfigDict(extra="forbid")
    error: str = Field(description="What was wrong, in a few words.")


class QueuedMessage(BaseModel):
    """One message of a send."""

    model_config = ConfigDict(extra="forbid")
    id: str = Field(description="Our id of the message (gw_id), for GET /api/messages/{id}.")
    to: str = Field(description="The recipient, in E.164.")
    conversation: str = Field(description="The conversation key (<our number>:<handset>).")
    status: Literal["queued", "deferred", "unknown"] = Field(
        description="deferred: held back by quiet hours until deferred_until."
    )
    segments: int = Field(description="SMS segments of the text (or RCS fallback text).")
    encoding: Literal["GSM-7", "UCS-2"]
    deferred_until: str | None = Field(
        default=None, description="Deferred: when quiet hours end (ISO 8601 UTC)."
    )
    deferred_reason: str | None = Field(
        default=None, description="Deferred: the window, e.g. 'quiet hours AU 20:00-09:00'."
    )


class SendResponse(BaseModel):
    """202 of ``POST /api/messages``: one entry per (distinct) recipient, in order."""

    model_config = ConfigDict(extra="forbid")
    messages: list[QueuedMessage]


class SendUnavailable(BaseModel):
    """503 of ``POST /api/messages``: Redis failed while queueing; some messages may be
    queued (look them up by id before sending again)."""

    model_config = ConfigDict(extra="forbid")
    error: str
    messages: list[QueuedMessage]


class MessageView(BaseModel):
    """``GET /api/messages/{id}``."""

    model_config = ConfigDict(extra="forbid")
    id: str
    partition: int
    record: dict[str, str] = Field(
        description="Our record: gw_id, status (queued, sent, failed, or the latest "
        "receipt status), conversation, to, channel, origin, text, segments, encoding, "
        "queued_at; once sent message_id, sent_at, attempts; from receipts status_code, "
        "status_meaning, status_at, billing_units; on failure error, failed_at."
    )
    provider: ProviderMessage | None = Field(
        default=None, description="The provider's view of the message, when asked for."
    )
    provider_error: str | None = Field(
        default=None, description="Why the provider's view is missing (throttled, failed)."
    )


class ConversationSummary(BaseModel):
    model_config = ConfigDict(extra="forbid")
    key: str = Field(description="<our number or 'default'>:<handset>")
    last_activity: float = Field(description="Unix seconds.")


class ConversationList(BaseModel):
    """``GET /api/conversations``: most recently active first."""

    model_config = ConfigDict(extra="forbid")
    conversations: list[ConversationSummary]


class TimelineEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(description="Entry id, <milliseconds>-<sequence>, unique in the timeline.")
    kind: str = Field(description="inbound, outbound, sent, receipt, failed, state...")
    at: float = Field(description="Unix seconds.")
    data: dict[str, Any]


class ConversationView(BaseModel):
    """``GET /api/conversations/{key}``."""

    model_config = ConfigDict(extra="forbid")
    key: str
    state: str | None = Field(
        description="Each plugin's current state, '<plugin>: <state>' joined by '; ' (a "
        "session stored before plugins had their own flows: its one state name)."
    )
    data: dict[str, Any] = Field(
        description="Each plugin's data by plugin name (a session stored before plugins had "
        "their own flows: its one shared data object)."
    )
    flows: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Each plugin's flow by plugin name: its state (or null) and its data.",
    )
    version: int = Field(description="Session version (bumped by every save).")
    last_activity: float | None = Field(description="Unix seconds.")
    timeline: list[TimelineEntry] = Field(description="Oldest first.")
    messages: dict[str, dict[str, str]] | None = Field(
        default=None, description="Records of the outbound messages on the timeline, by id."
    )


class Health(BaseModel):
    model_config = ConfigDict(extra="forbid")
    status: Literal["ok"]


class Unavailable(BaseModel):
    model_config = ConfigDict(extra="forbid")
    status: Literal["unavailable"]
    reason: str


class ForwardedEvent(BaseModel):
    """The body POSTed to every subscriber URL."""

    model_config = ConfigDict(extra="forbid")
    id: str = Field(description="Event id (also in X-Sinchbot-Event-Id); same on every retry.")
    type: str = Field(
        description="message.received, message.opt_out or receipt.<status> "
        "(receipt.enroute, receipt.submitted, receipt.delivered, receipt.failed...)."
    )
    created: float = Field(description="Unix seconds.")
    data: dict[str, Any] = Field(
        description="message.*: conversation, from, to, channel, content, reply_id, "
        "in_reply_to, gw_id, metadata, attachments, choice, received_at. receipt.*: "
        "conversation, gw_id, message_id, delivery_report_id, status, status_code, "
        "status_meaning, recipient, sender, billing_units, metadata, submitted_at, "
        "received_at."
    )


# ----------------------------------------------------------------------------- building


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {_JSON: {"schema": _ref("Error")}}}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF.format(model=name)}


def _ok(description: str, schema: str) -> dict[str, Any]:
    return {"description": description, "content": {_JSON: {"schema": _ref(schema)}}}


def _query(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema,
    }


def _path(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": "string"},
    }


_FLAG: Final = {"type": "string", "enum": ["1", "0", "true", "false", "yes", "no"]}
_UNAVAILABLE: Final = {
    **_error("Redis is unavailable: retry later."),
    "headers": {"Retry-After": {"schema": {"type": "integer"}}},
}
_AUTH_ERRORS: Final = {
    "401": _error("Missing or malformed Authorization header."),
    "403": _error("Wrong token."),
}


def _api_paths() -> dict[str, Any]:
    return {
        "/api/messages": {
            "post": {
                "operationId": "sendMessages",
                "tags": ["messages"],
                "summary": "Send SMS, MMS or RCS to 1 to 100 recipients through the outbox",
                "description": "Validated completely before anything is queued; each message "
                "carries our id (gw_id) in its metadata. Delivery reports are requested by "
                "default, so receipts reach the conversation timeline.",
                "security": _BEARER,
                "requestBody": {
                    "required": True,
                    "content": {_JSON: {"schema": _ref("SendRequest")}},
                },
                "responses": {
                    "202": _ok("Queued.", "SendResponse"),
                    "400": _error("Invalid JSON."),
                    **_AUTH_ERRORS,
                    "413": _error("Body too large."),
                    "415": _error("Not application/json."),
                    "422": _error("Invalid message (the field and the reason)."),
                    "503": {
                        "description": "Redis failed while queueing.",
                        "headers": {"Retry-After": {"schema": {"type": "integer"}}},
                        "content": {_JSON: {"schema": _ref("SendUnavailable")}},
                    },
                },
            }
        },
        "/api/messages/{id}": {
            "get": {
                "operationId": "getMessage",
                "tags": ["messages"],
                "summary": "A message: our record plus the provider's status",
                "security": _BEARER,
                "parameters": [
                    _path(
                        "id",
                        "Our id of the message, as returned by sendMessages, or the "
                        "provider's message_id.",
                    ),
                    _query("provider", "Ask the provider for its view (default 1).", _FLAG),
                ],
                "responses": {
                    "200": _ok("The message.", "MessageView"),
                    **_AUTH_ERRORS,
                    "404": _error("No such message."),
                    "422": _error("Invalid query parameter."),
                    "503": _UNAVAILABLE,
                },
            }
        },
        "/api/conversations": {
            "get": {
                "operationId": "listConversations",
                "tags": ["conversations"],
                "summary": "Conversations, most recently active first",
                "security": _BEARER,
                "parameters": [
                    _query(
                        "limit",
                        "How many (default 50).",
                        {"type": "integer", "minimum": 1, "maximum": MAX_CONVERSATIONS},
                    ),
                    _query(
                        "q",
                        "Only conversations whose numbers contain this fragment.",
                        {"type": "string", "pattern": r"^\+?[0-9 ().-]{1,30}$"},
                    ),
                ],
                "responses": {
                    "200": _ok("The conversations.", "ConversationList"),
                    **_AUTH_ERRORS,
                    "422": _error("Invalid query parameter."),
                    "503": _UNAVAILABLE,
                },
            }
        },
        "/api/conversations/{key}": {
            "get": {
                "operationId": "getConversation",
                "tags": ["conversations"],
                "summary": "A conversation: state, data and timeline",
                "security": _BEARER,
                "parameters": [
                    _path("key", "<our number or 'default'>:<handset>, URL-encoded."),
                    _query(
                        "limit",
                        "Newest timeline entries to return (default 200).",
                        {"type": "integer", "minimum": 1, "maximum": MAX_TIMELINE},
                    ),
                    _query("messages", "Include the message records (default 1).", _FLAG),
                ],
                "responses": {
                    "200": _ok("The conversation.", "ConversationView"),
                    **_AUTH_ERRORS,
                    "404": _error("No such conversation."),
                    "422": _error("Invalid query parameter."),
                    "503": _UNAVAILABLE,
                },
            }
        },
        "/api/senders": {
            "get": {
                "operationId": "getSenders",
                "tags": ["provider"],
                "summary": "The account's sender ids (from the provider)",
                "security": _BEARER,
                "responses": {
                    "200": _ok("Sender ids.", "SenderIds"),
                    **_AUTH_ERRORS,
                    "502": _error("The provider failed."),
                    "503": {
                        **_error("No provider configured, or the provider call limit is reached."),
                        "headers": {"Retry-After": {"schema": {"type": "integer"}}},
                    },
                },
            }
        },
        "/api/openapi.json": {
            "get": {
                "operationId": "getOpenApi",
                "tags": ["meta"],
                "summary": "This document",
                "responses": {
                    "200": {
                        "description": "The OpenAPI document.",
                        "content": {_JSON: {"schema": {"type": "object"}}},
                    }
                },
            }
        },
        "/healthz": {
            "get": {
                "operationId": "health",
                "tags": ["meta"],
                "summary": "Liveness: 200 while the process can recover by itself",
                "responses": {
                    "200": _ok("Alive.", "Health"),
                    "503": _ok("Cannot recover by itself: restart the process.", "Unavailable"),
                },
            }
        },
        "/readyz": {
            "get": {
                "operationId": "ready",
                "tags": ["meta"],
                "summary": "Readiness: Redis answers and the workers run",
                "responses": {
                    "200": _ok("Ready.", "Health"),
                    "503": _ok("Not ready.", "Unavailable"),
                },
            }
        },
    }


def _forwarded_events() -> dict[str, Any]:
    header = {"in": "header", "required": True, "schema": {"type": "string"}}
    return {
        "forwardedEvent": {
            "post": {
                "operationId": "forwardedEvent",
                "tags": ["events"],
                "summary": "An event POSTed to every SINCHBOT_FORWARD_URLS subscriber",
                "description": "Delivered at least once (dedupe on the event id), in no "
                "guaranteed order. Retried with backoff on 5xx, 408, 429, timeouts and "
                "connection errors; redelivered later on any other non-2xx; dead-lettered "
                "after SINCHBOT_MAX_DELIVERIES deliveries. A URL that answered 2xx is never "
                f"sent the event again. {SIGNATURE_HEADER} is t=<unix seconds>,v1=<hex "
                "HMAC-SHA256 keyed with SINCHBOT_FORWARD_SECRET over '<t>.<raw body>'>: "
                "recompute it over the raw bytes, compare in constant time and reject a t "
                "more than 5 minutes away from your clock.",
                "parameters": [
                    {**header, "name": EVENT_ID_HEADER, "description": "The event id."},
                    {**header, "name": EVENT_TYPE_HEADER, "description": "The event type."},
                    {
                        **header,
                        "name": SIGNATURE_HEADER,
                        "required": False,
                        "description": "t=<unix>,v1=<hex HMAC-SHA256> (absent without a "
                        "forward secret).",
                    },
                ],
                "requestBody": {
                    "required": True,
                    "content": {_JSON: {"schema": _ref("ForwardedEvent")}},
                },
                "responses": {
                    "2XX": {"description": "Received: the event is not sent to this URL again."}
                },
            }
        }
    }


_MODELS: Final[tuple[tuple[type[BaseModel], Literal["validation", "serialization"]], ...]] = (
    (SendRequest, "validation"),
    (Error, "serialization"),
    (QueuedMessage, "serialization"),
    (SendResponse, "serialization"),
    (SendUnavailable, "serialization"),
    (MessageView, "serialization"),
    (ConversationSummary, "serialization"),
    (ConversationList, "serialization"),
    (TimelineEntry, "serialization"),
    (ConversationView, "serialization"),
    (Health, "serialization"),
    (Unavailable, "serialization"),
    (ForwardedEvent, "serialization"),
    (SenderIds, "serialization"),
    (ProviderMessage, "serialization"),
)


def _schemas() -> dict[str, Any]:
    schemas: dict[str, Any] = {}
    for model, mode in _MODELS:
        schema = model.model_json_schema(by_alias=True, ref_template=_REF, mode=mode)
        for name, definition in schema.pop("$defs", {}).items():
            schemas.setdefault(name, definition)
        schemas[model.__name__] = schema
    return schemas


def openapi_document(
    extra_paths: Mapping[str, Any] = _EMPTY, *, include_webhooks: bool = True
) -> dict[str, Any]:
    """The OpenAPI 3.1 document: the management API, the webhook endpoints (from
    :mod:`bot.ingress.webhooks`, unless ``include_webhooks`` is false) and ``extra_paths``
    merged in (operations of a path already present are added to it), plus the forwarded
    events under ``webhooks``. A fresh dict on every call."""
    paths = _api_paths()
    sources = [WEBHOOK_OPENAPI_PATHS] if include_webhooks else []
    for source in (*sources, extra_paths):
        for path, operations in source.items():
            paths[path] = {**paths.get(path, {}), **dict(operations)}
    document = {
        "openapi": "3.1.0",
        "info": {
            "title": "sinchbot gateway",
            "version": __version__,
            "description": "Two-way SMS, MMS and RCS over Sinch MessageMedia / Sinch Engage: "
            "the management API (Authorization: Bearer $SINCHBOT_API_TOKEN), the webhook "
            "endpoints the provider pushes to, and the events forwarded to subscribers.",
        },
        "tags": [
            {"name": "messages", "description": "Sending and message status."},
            {"name": "conversations", "description": "Conversation state and timelines."},
            {"name": "provider", "description": "Provider account information."},
            {"name": "webhooks", "description": "Endpoints the provider pushes to."},
            {"name": "events", "description": "What sinchbot POSTs to subscribers."},
            {"name": "meta", "description": "Health and this document."},
        ],
        "paths": paths,
        "webhooks": _forwarded_events(),
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "SINCHBOT_API_TOKEN",
                }
            },
        },
    }
    return copy.deepcopy(document)
