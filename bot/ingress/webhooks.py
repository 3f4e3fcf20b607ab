"""The webhook endpoints: provider pushes in, durable inbox entries out.

``POST /webhooks/messages``
    inbound SMS, MMS and RCS, and opt-out notifications (Webhooks API events
    ``RECEIVED_SMS``, ``RECEIVED_MMS``, ``OPT_OUT_SMS``, the connector's MO template or the
    provider's sample bodies).
``POST /webhooks/receipts``
    delivery reports (``*_DR`` events, the connector's DR template or the sample body).
``POST /webhooks/callback``
    per-message ``callback_url`` pushes, which carry replies and delivery reports alike.

Each request goes through the same checks, in order, and any failure writes nothing:

1. body size: ``Content-Length`` over ``max_body`` → 413 before reading; at most
   ``max_body + 1`` bytes are ever read (a chunked body over the limit → 413);
2. authentication on the raw bytes (:class:`~bot.ingress.webhook_auth.WebhookAuth`) → 401
   or 403 without detail;
3. content type: JSON, or a form (the Webhooks API's ``FORM_ENCODED`` encoding) → else 415;
4. decoding → 400 ``invalid JSON`` / ``invalid form body``;
5. shape (not an object, not a shape the provider sends, a field of the wrong type or too
   long, a number that is not E.164, a short code or an alphanumeric sender, an echoed
   ``gw_conv`` that is not a conversation key) → 422 with a short reason;
6. :meth:`Ingress.admit` → 200 ``accepted`` or ``duplicate``; Redis unavailable → 503 with
   ``Retry-After``, so the provider retries.

The answer is 2xx only once the event is durable in Redis; bad input never gets a 5xx; no
provider call happens inside a request.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final
from urllib.parse import parse_qsl

import structlog
from aiohttp import web
from redis.exceptions import RedisError

from bot.core import fastjson
from bot.core.crashpoints import crash_point
from bot.core.http import BodyTooLarge, read_bounded
from bot.core.sms import mask_phone
from bot.ingress.admission import Event, Ingress
from bot.ingress.webhook_auth import WebhookAuth, WebhookAuthError
from bot.sinch.models import (
    DeliveryReceipt,
    PayloadError,
    is_address,
    is_receipt_payload,
    parse_event,
    parse_inbound,
    parse_receipt,
)
from bot.storage.events import GW_CONVERSATION
from bot.storage.keys import handset_of

__all__ = [
    "CALLBACK_PATH",
    "MESSAGES_PATH",
    "RECEIPTS_PATH",
    "RETRY_AFTER",
    "WEBHOOK_OPENAPI_PATHS",
    "webhook_routes",
]

log = structlog.get_logger(__name__)

MESSAGES_PATH: Final = "/webhooks/messages"
RECEIPTS_PATH: Final = "/webhooks/receipts"
CALLBACK_PATH: Final = "/webhooks/callback"

RETRY_AFTER: Final = 5
"""Seconds a provider is asked to wait after a 503."""

_JSON_TYPE = "application/json"
_FORM_TYPE = "application/x-www-form-urlencoded"
_FORM_JSON_FIELDS = frozenset(
    {"metadata", "attachments", "vendor_account_id", "contact_message", "choice"}
)
"""Form fields that carry structured values (encoded as JSON by the provider); every other
field stays a string, so a text message that happens to look like JSON is not altered."""
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
"""A JSON escape of a UTF-16 surrogate: valid JSON, but a lone one is not encodable."""
_ACCEPTED: Final = b'{"status":"accepted"}'
_DUPLICATE: Final = b'{"status":"duplicate"}'
_MAX_FORM_FIELDS = 1000
_MAX_REASON = 200

Parser = Callable[[Mapping[str, Any]], Event]


def _parse_messages(payload: Mapping[str, Any]) -> Event:
    """Inbound messages; a delivery report sent here by mistake (for example when the
    receipt URL defaults to the messages URL) is stored as the receipt it is, never misread
    as a message from the handset."""
    if is_receipt_payload(payload):
        return parse_receipt(payload)
    return parse_inbound(payload)


_PARSERS: Final[dict[str, Parser]] = {
    MESSAGES_PATH: _parse_messages,
    RECEIPTS_PATH: parse_receipt,
    CALLBACK_PATH: parse_event,
}


class _Reject(Exception):
    """A finished error response, raised out of a processing step."""

    def __init__(self, response: web.Response) -> None:
        super().__init__(response.status)
        self.response = response


def _error(status: int, message: str, **headers: str) -> _Reject:
    return _Reject(web.json_response({"error": message}, status=status, headers=headers or None))


def _masked(conversation: str) -> str:
    """A conversation key for the log: our number as is, the handset masked."""
    handset = handset_of(conversation)
    return conversation[: len(conversation) - len(handset)] + mask_phone(handset)


async def _read_body(request: web.Request, max_body: int) -> bytes:
    try:
        return await read_bounded(request, max_body)
    except BodyTooLarge:
        raise _error(413, "body too large") from None


def _without_lone_surrogates(value: Any) -> Any:
    """Replace lone UTF-16 surrogates (which JSON escapes allow but UTF-8, Redis and the logs
    cannot carry) with U+FFFD, so a broken emoji in a message is kept, not refused."""
    if isinstance(value, str):
        return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    if isinstance(value, list):
        return [_without_lone_surrogates(item) for item in value]
    if isinstance(value, dict):
        return {
            _without_lone_surrogates(key): _without_lone_surrogates(item)
            for key, item in value.items()
        }
    return value


def _decode_form(body: bytes) -> dict[str, Any]:
    try:
        pairs = parse_qsl(
            body.decode("utf-8"),
            keep_blank_values=True,
            strict_parsing=False,
            max_num_fields=_MAX_FORM_FIELDS,
        )
    except (UnicodeDecodeError, ValueError):
        raise _error(400, "invalid form body") from None
    payload: dict[str, Any] = {}
    for name, value in pairs:
        if name in _FORM_JSON_FIELDS and value[:1] in ("{", "["):
            try:
                payload[name] = _without_lone_surrogates(fastjson.loads(value))
                continue
            except (ValueError, RecursionError):
                pass  # not JSON after all: keep the string, the parser decides
        payload[name] = value
    return payload


def _decode(request: web.Request, body: bytes) -> Any:
    content_type = request.content_type
    if content_type not in (_JSON_TYPE, _FORM_TYPE):
        raise _error(415, "unsupported content type")
    charset = (request.charset or "utf-8").lower()
    if charset not in ("utf-8", "utf8"):
        try:
            body = body.decode(charset).encode("utf-8")
        except LookupError:
            raise _error(415, "unsupported charset") from None
        except UnicodeDecodeError:
            raise _error(400, "invalid encoding") from None
    # A JSON body under the form type is what a FORM_ENCODED webhook with a JSON template
    # sends: the template decides the body, the encoding only the header.
    if content_type == _FORM_TYPE and not body.lstrip().startswith(b"{"):
        return _decode_form(body)
    try:
        payload = fastjson.loads(body)
        if _SURROGATE_ESCAPE.search(body) or b"\x00" in body:  # NUL: a UTF-16/32 body
            payload = _without_lone_surrogates(payload)
    except (ValueError, RecursionError):  # JSONDecodeError, UnicodeDecodeError, huge ints
        raise _error(400, "invalid JSON") from None
    return payload


def _is_conversation(key: str) -> bool:
    """Whether an echoed ``gw_conv`` is a conversation key we could have written:
    ``<our number or default>:<handset>``."""
    ours, colon, handset = key.rpartition(":")
    return bool(colon) and is_address(handset) and (ours == "default" or is_address(ours))


def _parse(parser: Parser, payload: Any) -> Event:
    if not isinstance(payload, dict):
        raise _error(422, "payload must be a JSON object")
    try:
        event = parser(payload)
    except PayloadError as exc:
        raise _error(422, str(exc)[:_MAX_REASON] or "invalid payload") from None
    except (ValueError, TypeError, RecursionError):
        # pydantic's ValidationError is a ValueError; its text is too long and too revealing.
        raise _error(422, "invalid payload") from None
    # The echoed conversation routes the event: it must be one of ours.
    echoed = event.metadata.get(GW_CONVERSATION)
    if echoed and not _is_conversation(echoed):
        raise _error(422, f"metadata: {GW_CONVERSATION} is not a conversation key")
    return event


def _handler(
    ingress: Ingress, auth: WebhookAuth, parser: Parser, max_body: int
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle(request: web.Request) -> web.StreamResponse:
        path = request.path  # never the query string: it may carry the token
        try:
            body = await _read_body(request, max_body)
            try:
                auth.verify(request.raw_path, request.method, request.headers, body, request.query)
            except WebhookAuthError as exc:
                log.warning("webhook refused", path=path, status=exc.status, reason=exc.reason)
                message = "unauthorized" if exc.status == 401 else "forbidden"
                raise _error(exc.status, message) from None
            event = _parse(parser, _decode(request, body))
        except _Reject as reject:
            if reject.response.status not in (401, 403):
                log.info("webhook rejected", path=path, status=reject.response.status)
            return reject.response
        try:
            admission = await ingress.admit(event)
        except (RedisError, OSError) as exc:
            log.warning(
                "webhook not stored: redis unavailable",
                path=path,
                event_id=event.event_id,
                error=type(exc).__name__,
            )
            return _error(
                503, "temporarily unavailable", **{"Retry-After": str(RETRY_AFTER)}
            ).response
        crash_point("after_enqueue_before_answer")
        # Every accepted webhook is counted in the metrics (sinchbot_inbound_events_total); the
        # line per event is for debugging, a redelivery stays worth a line.
        (log.debug if admission.stored else log.info)(
            "webhook accepted" if admission.stored else "webhook duplicate",
            path=path,
            kind="receipt" if isinstance(event, DeliveryReceipt) else "message",
            conversation=_masked(admission.conversation),
            partition=admission.partition,
            event_id=event.event_id,
            entry_id=admission.entry_id,
        )
        return web.Response(
            body=_ACCEPTED if admission.stored else _DUPLICATE, content_type=_JSON_TYPE
        )

    return handle


def webhook_routes(ingress: Ingress, auth: WebhookAuth, *, max_body: int) -> list[web.RouteDef]:
    """The three webhook routes, for ``app.add_routes(...)``.

    Args:
        ingress: where accepted events are stored.
        auth: the credential check (applied to the raw request before any parsing).
        max_body: the largest body accepted, in bytes (larger: 413).
    """
    if max_body < 1:
        raise ValueError("max_body must be positive")
    return [
        web.post(path, _handler(ingress, auth, parser, max_body), name=name)
        for path, parser, name in (
            (MESSAGES_PATH, _PARSERS[MESSAGES_PATH], "webhook-messages"),
            (RECEIPTS_PATH, _PARSERS[RECEIPTS_PATH], "webhook-receipts"),
            (CALLBACK_PATH, _PARSERS[CALLBACK_PATH], "webhook-callback"),
        )
    ]


# --------------------------------------------------------------------------- OpenAPI


_ERROR_SCHEMA: Final[dict[str, Any]] = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "string", "description": "A short reason."}},
}


def _error_response(description: str, example: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {
            _JSON_TYPE: {
                "schema": _ERROR_SCHEMA,
                "example": {"error": example},
            }
        },
    }


_METADATA_SCHEMA: Final[dict[str, Any]] = {
    "description": "Metadata of the outbound message (echoed by the provider): a map, or "
    "the connector's list of {metadata_key, metadata_value}.",
    "oneOf": [
        {"type": "object", "additionalProperties": {"type": ["string", "null"]}},
        {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "metadata_key": {"type": "string"},
                    "metadata_value": {"type": ["string", "null"]},
                },
            },
        },
    ],
}

_INBOUND_SCHEMA: Final[dict[str, Any]] = {
    "title": "Inbound message push",
    "description": "An inbound SMS, MMS or RCS message or an opt-out notification, in any "
    "shape the provider pushes (the connector's MO template, the Webhooks API sample body, "
    "the Reply object of a callback_url push). Needs source_number or source_address; "
    "unknown fields are ignored.",
    "type": "object",
    "properties": {
        "reply_id": {"type": "string", "description": "Deduplication id of a reply."},
        "notification_id": {"type": "string", "description": "Id of an opt-out notification."},
        "source_number": {"type": "string", "description": "The handset."},
        "source_address": {"type": "string", "description": "The handset (MO template)."},
        "destination_number": {"type": "string", "description": "Our number."},
        "destination_address": {"type": "string", "description": "Our number (MO template)."},
        "content": {"type": "string"},
        "message_id": {"type": "string", "description": "The message this replies to."},
        "type": {"type": "string", "examples": ["SMS", "MMS", "RCS"]},
        "format": {"type": "string", "examples": ["SMS", "MMS", "RCS"]},
        "date_received": {"type": "string", "format": "date-time"},
        "submitted_date": {"type": "string", "format": "date-time"},
        "metadata": _METADATA_SCHEMA,
        "attachments": {"type": "array", "items": {"type": "object"}},
        "contact_message": {"type": "object", "description": "RCS content (Conversation API)."},
    },
    "additionalProperties": True,
    "examples": [
        {
            "reply_id": "a175e797-2b54-468b-9850-41a3eab32f74",
            "message_id": "877c19ef-fa2e-4cec-827a-e1df9b5509f7",
            "source_address": "+61491570156",
            "destination_address": "+61491570157",
            "content": "Yes please",
            "type": "SMS",
            "date_received": "2024-05-01T09:30:00.000Z",
            "metadata": [{"metadata_key": "appointment", "metadata_value": "7"}],
        }
    ],
}

_RECEIPT_SCHEMA: Final[dict[str, Any]] = {
    "title": "Delivery report push",
    "description": "A delivery report in any shape the provider pushes (the connector's DR "
    "template, the Webhooks API sample body, a callback_url push). Needs message_id and "
    "status or status_code; unknown fields are ignored.",
    "type": "object",
    "properties": {
        "delivery_report_id": {"type": "string", "description": "Deduplication id."},
        "message_id": {"type": "string"},
        "status": {
            "type": "string",
            "examples": ["enroute", "submitted", "delivered", "expired", "rejected", "failed"],
        },
        "status_code": {"type": ["string", "integer"]},
        "error_code": {"type": ["string", "integer"]},
        "source_number": {"type": "string", "description": "The handset."},
        "source_address": {"type": "string", "description": "The handset (DR template)."},
        "destination_address": {"type": "string", "description": "Our number."},
        "content": {"type": "string"},
        "original_text": {"type": "string"},
        "billing_units": {"type": ["integer", "string"]},
        "date_received": {"type": "string", "format": "date-time"},
        "submitted_date": {"type": "string", "format": "date-time"},
        "metadata": _METADATA_SCHEMA,
    },
    "additionalProperties": True,
    "examples": [
        {
            "delivery_report_id": "01e1fa0a-6e27-4945-9cdb-18644b4de043",
            "message_id": "877c19ef-fa2e-4cec-827a-e1df9b5509f7",
            "source_address": "+61491570156",
            "status": "delivered",
            "status_code": "220",
            "type": "SMS",
            "content": "Reply Y to confirm",
            "metadata": [
                {"metadata_key": "gw_conv", "metadata_value": "+61491570157:+61491570156"}
            ],
        }
    ],
}


def _operation(
    operation_id: str, summary: str, description: str, schema: dict[str, Any]
) -> dict[str, Any]:
    return {
        "post": {
            "operationId": operation_id,
            "tags": ["webhooks"],
            "summary": summary,
            "description": description
            + " Authenticated by the provider's RSA signature (X-MessageMedia-Signature and "
            "companions, Date within the allowed skew) or the shared secret in "
            "X-Webhook-Secret or ?token=. Answered 200 only once the event is durable; a "
            "redelivered event is answered 200 with status duplicate.",
            "parameters": [
                {
                    "name": "token",
                    "in": "query",
                    "required": False,
                    "description": "The shared webhook secret (for callback_url pushes).",
                    "schema": {"type": "string"},
                },
                {
                    "name": "X-Webhook-Secret",
                    "in": "header",
                    "required": False,
                    "description": "The shared webhook secret.",
                    "schema": {"type": "string"},
                },
                *(
                    {
                        "name": name,
                        "in": "header",
                        "required": False,
                        "description": "RSA webhook signature (provider-signed requests).",
                        "schema": {"type": "string"},
                    }
                    for name in (
                        "X-MessageMedia-Signature",
                        "X-MessageMedia-Digest-Type",
                        "X-MessageMedia-Cipher-Type",
                        "X-MessageMedia-Key-Id",
                        "Date",
                    )
                ),
            ],
            "requestBody": {
                "required": True,
                "content": {
                    _JSON_TYPE: {"schema": schema},
                    _FORM_TYPE: {
                        "schema": {
                            "type": "object",
                            "description": "The FORM_ENCODED webhook encoding: the same "
                            "fields, structured values (metadata, attachments) as JSON text.",
                            "additionalProperties": {"type": "string"},
                        }
                    },
                },
            },
            "responses": {
                "200": {
                    "description": "Stored (or already stored: a duplicate delivery).",
                    "content": {
                        _JSON_TYPE: {
                            "schema": {
                                "type": "object",
                                "required": ["status"],
                                "properties": {
                                    "status": {"type": "string", "enum": ["accepted", "duplicate"]}
                                },
                            }
                        }
                    },
                },
                "400": _error_response(
                    "The body is not valid JSON (or form data).", "invalid JSON"
                ),
                "401": _error_response("No credentials.", "unauthorized"),
                "403": _error_response("Wrong, tampered or stale credentials.", "forbidden"),
                "413": _error_response("The body is larger than the limit.", "body too large"),
                "415": _error_response("Not JSON or form data.", "unsupported content type"),
                "422": _error_response(
                    "Not a shape the provider sends.", "payload must be a JSON object"
                ),
                "503": {
                    **_error_response(
                        "Redis is unavailable: retry later.", "temporarily unavailable"
                    ),
                    "headers": {
                        "Retry-After": {
                            "description": "Seconds to wait before retrying.",
                            "schema": {"type": "integer"},
                        }
                    },
                },
            },
        }
    }


WEBHOOK_OPENAPI_PATHS: Final[dict[str, Any]] = {
    MESSAGES_PATH: _operation(
        "webhookMessages",
        "Inbound SMS, MMS, RCS and opt-out notifications",
        "Register for RECEIVED_SMS, RECEIVED_MMS and OPT_OUT_SMS (sinchbot webhooks subscribe).",
        _INBOUND_SCHEMA,
    ),
    RECEIPTS_PATH: _operation(
        "webhookReceipts",
        "Delivery reports",
        "Register for the *_DR events (sinchbot webhooks subscribe).",
        _RECEIPT_SCHEMA,
    ),
    CALLBACK_PATH: _operation(
        "webhookCallback",
        "Per-message callback_url pushes (replies and delivery reports)",
        "Used as a message's callback_url; carries the token in the query string.",
        {"anyOf": [_INBOUND_SCHEMA, _RECEIPT_SCHEMA]},
    ),
}
"""OpenAPI 3.1 ``paths`` of the webhook endpoints, self-contained (no ``$ref``): merge into
the published document's ``paths``."""
