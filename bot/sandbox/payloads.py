"""The shapes the provider sends: delivery reports and replies (polled and pushed to a
``callback_url``), the Webhooks API's template variables and its default (sample) bodies.

All functions are pure: records of :mod:`bot.sandbox.state` in, JSON-ready dicts out.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode
from xml.sax.saxutils import escape

from bot.sandbox.config import SandboxConfig
from bot.sandbox.state import Inbound, Message, Report
from bot.sinch.models import format_timestamp

__all__ = [
    "content_type",
    "dr_context",
    "dr_push",
    "dr_sample",
    "encode",
    "mo_context",
    "mo_sample",
    "reply_object",
]


def _vendor(config: SandboxConfig, message: Message | None) -> dict[str, str]:
    account = (message.account if message else None) or config.account_id
    return {"vendor_id": config.vendor_id, "account_id": account}


def dr_push(report: Report, config: SandboxConfig) -> dict[str, Any]:
    """A delivery report as pushed to a message's ``callback_url`` and returned by
    ``GET /v1/delivery_reports`` (spec §4, field for field). ``source_number`` is the
    handset the message went to."""
    message = report.message
    body: dict[str, Any] = {}
    if message.request.callback_url:
        body["callback_url"] = message.request.callback_url
    body.update(
        delivery_report_id=report.report_id,
        source_number=message.destination,
        date_received=format_timestamp(report.time),
        status=report.status.value,
        delay=0,
        billing_units=message.billing_units,
        submitted_date=format_timestamp(message.submitted),
        original_text=message.request.content,
        message_id=message.message_id,
        vendor_account_id=_vendor(config, message),
        error_code=str(report.code),
    )
    if message.request.metadata:
        body["metadata"] = dict(message.request.metadata)
    return body


def reply_object(inbound: Inbound, config: SandboxConfig) -> dict[str, Any]:
    """A reply as pushed to the original message's ``callback_url`` and returned by
    ``GET /v1/replies`` (the Reply object of spec §4). Source and destination are the
    inverse of the original message's; ``destination_number`` is absent when that message
    had no ``source_number``. MMS adds ``attachments``, RCS ``contact_message`` (our
    extension: the provider documents neither for this shape)."""
    original = inbound.original
    body: dict[str, Any] = {}
    if original is not None:
        body["metadata"] = dict(original.request.metadata)
        body["message_id"] = original.message_id
    body["reply_id"] = inbound.reply_id
    body["date_received"] = format_timestamp(inbound.time)
    if original is not None and original.request.callback_url:
        body["callback_url"] = original.request.callback_url
    if original is None or original.request.source_number is not None:
        body["destination_number"] = inbound.to
    body["source_number"] = inbound.handset
    body["vendor_account_id"] = _vendor(config, original)
    body["content"] = inbound.content
    if inbound.format != "SMS":
        body["format"] = inbound.format
    if inbound.attachments:
        body["attachments"] = [
            {"content_type": a["content_type"], "content": a["content"], "original_name": a["name"]}
            for a in inbound.attachments
        ]
    if inbound.contact_message is not None:
        body["contact_message"] = inbound.contact_message
    return body


# --------------------------------------------------------------------------- Webhooks API


def dr_context(report: Report, config: SandboxConfig, retry_count: int = 0) -> dict[str, object]:
    """The Velocity variables of a delivery-report event (spec §5)."""
    message = report.message
    fmt = message.format
    vendor = _vendor(config, message)
    return {
        "format": fmt,
        "type": fmt,
        "mtId": message.message_id,
        "messageId": message.message_id,
        "drId": report.report_id,
        "reportId": report.report_id,
        "accountId": vendor["account_id"],
        "vendorId": vendor["vendor_id"],
        "submittedTimestamp": format_timestamp(message.submitted),
        "receivedTimestamp": format_timestamp(report.time),
        "status": report.status.value,
        "statusCode": report.code,
        "billingUnits": message.billing_units,
        "metadata": dict(message.request.metadata),
        "sourceAddress": message.destination,
        "mtContent": message.request.content,
        "messageContent": message.request.content,
        "retryCount": retry_count,
        "attachments": [],
        "version": 2 if fmt == "RCS" else 1,
    }


def mo_context(
    inbound: Inbound, config: SandboxConfig, *, opt_out: bool = False, retry_count: int = 0
) -> dict[str, object]:
    """The Velocity variables of an inbound event; ``opt_out`` selects the ``OPT_OUT_SMS``
    notification (``$notificationId`` instead of ``$moId``)."""
    original = inbound.original
    vendor = _vendor(config, original)
    timestamp = format_timestamp(inbound.time)
    content = inbound.content or None
    mt_content = original.request.content if original else None
    context: dict[str, object] = {
        "format": inbound.format,
        "type": inbound.format,
        "accountId": vendor["account_id"],
        "vendorId": vendor["vendor_id"],
        "submittedTimestamp": timestamp,
        "receivedTimestamp": timestamp,
        "metadata": dict(original.request.metadata) if original else {},
        "sourceAddress": inbound.handset,
        "destinationAddress": inbound.to,
        "moContent": content,
        "replyContent": content,
        "retryCount": retry_count,
        "attachments": [
            {"contentType": a["content_type"], "base64": a["content"], "originalName": a["name"]}
            for a in inbound.attachments
        ],
        "version": 2 if inbound.format == "RCS" else 1,
        "contact_message": inbound.contact_message,
    }
    if original is not None:
        context.update(
            mtId=original.message_id,
            messageId=original.message_id,
            mtContent=mt_content,
            messageContent=mt_content,
        )
    if opt_out:
        context["notificationId"] = inbound.notification_id
    else:
        context.update(moId=inbound.reply_id, replyId=inbound.reply_id)
    return context


def mo_sample(inbound: Inbound, config: SandboxConfig, *, opt_out: bool = False) -> dict[str, Any]:
    """What a webhook without a template receives for an inbound event: the body the
    provider's sample template renders (spec §5, ``smsReceived`` / ``mmsReceived`` /
    ``optOut``)."""
    original = inbound.original
    body: dict[str, Any] = {"account_id": _vendor(config, original)["account_id"]}
    if opt_out:
        body["notification_id"] = inbound.notification_id
    else:
        body["reply_id"] = inbound.reply_id
    body.update(
        destination_number=inbound.to,
        source_number=inbound.handset,
        date_received=format_timestamp(inbound.time),
    )
    if original is not None:
        body["message_id"] = original.message_id
    if inbound.attachments and not opt_out:
        body["attachments"] = [
            {"content_type": a["content_type"], "content": a["content"], "original_name": a["name"]}
            for a in inbound.attachments
        ]
    else:
        body["content"] = inbound.content
    body["metadata"] = dict(original.request.metadata) if original else {}
    return body


def dr_sample(report: Report, config: SandboxConfig) -> dict[str, Any]:
    """What a webhook without a template receives for a delivery-report event (the
    provider's ``deliveryReport`` webhook example)."""
    message = report.message
    return {
        "delivery_report_id": report.report_id,
        "source_number": message.destination,
        "date_received": format_timestamp(report.time),
        "status": report.status.value,
        "delay": "0",
        "submitted_date": format_timestamp(message.submitted),
        "message_id": message.message_id,
        "original_text": message.request.content,
        "vendor_account_id": _vendor(config, message),
        "error_code": str(report.code),
        "metadata": dict(message.request.metadata),
    }


_CONTENT_TYPES = {
    "JSON": "application/json",
    "FORM_ENCODED": "application/x-www-form-urlencoded",
    "XML": "application/xml",
}


def content_type(encoding: str) -> str:
    return _CONTENT_TYPES.get(encoding, "application/json")


def encode(body: dict[str, Any], encoding: str) -> str:
    """A default (template-less) body in a webhook's encoding: JSON, a form (nested values as
    JSON) or a flat XML document."""
    if encoding == "FORM_ENCODED":
        return urlencode(
            {
                key: value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
                for key, value in body.items()
            }
        )
    if encoding == "XML":
        return "<payload>" + "".join(_xml(key, value) for key, value in body.items()) + "</payload>"
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"))


def _xml(key: str, value: Any) -> str:
    if isinstance(value, dict):
        inner = "".join(_xml(k, v) for k, v in value.items())
    elif isinstance(value, list):
        inner = "".join(_xml("item", v) for v in value)
    elif value is None:
        inner = ""
    else:
        inner = escape(value if isinstance(value, str) else json.dumps(value))
    return f"<{key}>{inner}</{key}>"
