"""Everything the sandbox provider remembers, and the provider's rules over it. No HTTP, no
timers: :mod:`bot.sandbox.delivery` decides *when* things happen, this module *what*.

* messages by id, each with its status history; scheduled ones wait for their time;
* handsets: what each received, whether it speaks RCS, and the last message it got from each
  of our numbers (the provider correlates a reply with it);
* the unconfirmed replies and delivery reports that polling returns;
* webhooks, blacklist, signature keys, per-destination outcomes, statistics.
"""

from __future__ import annotations

import functools
import random
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import islice
from typing import Any, Literal

from bot.core.sms import segments
from bot.sandbox.config import SandboxConfig
from bot.sinch.models import (
    DeliveryStatus,
    WebhookEvent,
    default_code_for,
    format_timestamp,
    status_for_code,
)
from bot.sinch.signatures import SigningKey

__all__ = [
    "FINAL_STATUSES",
    "OPT_OUT_KEYWORDS",
    "Conflict",
    "Handset",
    "Inbound",
    "Message",
    "MessageRequest",
    "NotFound",
    "Outcome",
    "Report",
    "SandboxState",
    "SignatureKeyRecord",
    "Stats",
    "WebhookRecord",
    "billing_units",
    "is_opt_out",
    "new_id",
    "now_utc",
]

OPT_OUT_KEYWORDS: frozenset[str] = frozenset(
    {"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT"}
)
"""Whole-message keywords (case-insensitive, trimmed) that blacklist the sender."""

SEND_CALL_HISTORY = 10_000
FINAL_STATUSES: frozenset[str] = frozenset(
    str(s) for s in DeliveryStatus if DeliveryStatus(s).is_final
)
"""Delivery statuses that end a message's life (as plain strings)."""


def now_utc() -> datetime:
    return datetime.now(UTC)


@functools.lru_cache(maxsize=4096)
def billing_units(content: str, fmt: str) -> int:
    """What a message is billed: its SMS segment count; MMS and RCS count one. (Cached:
    benchmarks send the same text many times.)"""
    if fmt in ("MMS", "RCS"):
        return 1
    return segments(content).segments


_ids = random.Random()


def new_id() -> str:
    """A random (version 4) UUID string, as the provider's ids are. Faster than
    :func:`uuid.uuid4`, which matters at thousands of messages per second; not for secrets."""
    h = f"{_ids.getrandbits(128):032x}"
    variant = "89ab"[int(h[16], 16) & 3]
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{variant}{h[17:20]}-{h[20:32]}"


def is_opt_out(content: str) -> bool:
    """Whether a handset's message is an opt-out keyword."""
    return content.strip().upper() in OPT_OUT_KEYWORDS


class NotFound(LookupError):
    """No such message, webhook, key or number."""


class Conflict(ValueError):
    """The resource exists already."""


# --------------------------------------------------------------------------- records


@dataclass(slots=True)
class MessageRequest:
    """One validated message of a send call, before the provider gives it an id."""

    wire: dict[str, Any]
    """The message as accepted (echoed in the 202 and in ``GET /v1/messages/{id}``)."""
    destination: str
    content: str
    """What an SMS handset shows (for RCS: a plain-text summary)."""
    format: str = "SMS"
    source_number: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    callback_url: str | None = None
    delivery_report: bool = False
    scheduled: datetime | None = None
    expires: datetime | None = None
    media: list[str] | None = None
    subject: str | None = None
    rcs: dict[str, Any] | None = None
    """The ``rcs_message`` of an RCS send."""
    fallback: dict[str, Any] | None = None
    """``{"format": "SMS", "content": ...}`` of an RCS send."""


@dataclass(slots=True, eq=False)
class Message:
    """A message the provider accepted."""

    message_id: str
    request: MessageRequest
    source: str
    """The sender handsets see: ``source_number`` or the account's default number."""
    submitted: datetime
    api_key: str
    account: str | None
    status: str = "queued"
    status_code: int | None = None
    history: list[tuple[str, int | None, datetime]] = field(default_factory=list)
    delivered_as: str | None = None
    """``SMS``/``MMS``/``RCS``: how it reached the handset (RCS may fall back to SMS)."""
    billing_units: int = 1

    @property
    def destination(self) -> str:
        return self.request.destination

    @property
    def format(self) -> str:
        return self.delivered_as or self.request.format

    @property
    def wants_reports(self) -> bool:
        return self.request.delivery_report

    @property
    def is_final(self) -> bool:
        return self.status in _FINAL_MESSAGE_STATUSES

    def to_api(self) -> dict[str, Any]:
        """The message as ``GET /v1/messages/{id}`` returns it."""
        return {**self.request.wire, "message_id": self.message_id, "status": self.status}

    def to_debug(self) -> dict[str, Any]:
        """Everything the sandbox knows about the message (``GET /_sandbox/messages``)."""
        return {
            **self.to_api(),
            "source": self.source,
            "account": self.account,
            "submitted": format_timestamp(self.submitted),
            "status_code": self.status_code,
            "delivered_as": self.delivered_as,
            "billing_units": self.billing_units,
            "history": [
                {"status": s, "code": c, "time": format_timestamp(t)} for s, c, t in self.history
            ],
        }


_FINAL_MESSAGE_STATUSES = frozenset(
    {"delivered", "failed", "expired", "rejected", "cancelled", "undeliverable"}
)


@dataclass(slots=True, frozen=True, eq=False)
class Report:
    """One delivery report of a message."""

    report_id: str
    message: Message
    status: DeliveryStatus
    code: int
    time: datetime


@dataclass(slots=True, eq=False)
class Inbound:
    """A message a handset sent to one of our numbers (and its opt-out notification)."""

    reply_id: str
    handset: str
    to: str
    content: str
    format: Literal["SMS", "MMS", "RCS"]
    time: datetime
    original: Message | None = None
    attachments: list[dict[str, str]] = field(default_factory=list)
    """``{"content_type", "content" (base64), "name"}`` of an MMS."""
    contact_message: dict[str, Any] | None = None
    """The Conversation-API ``contact_message`` of an RCS inbound."""
    notification_id: str | None = None
    """Set when the message was an opt-out keyword (the ``OPT_OUT_SMS`` notification)."""

    @property
    def metadata(self) -> dict[str, str]:
        return dict(self.original.request.metadata) if self.original else {}

    def to_result(self) -> dict[str, Any]:
        """The control API's answer to a handset send."""
        return {
            "reply_id": self.reply_id,
            "message_id": self.original.message_id if self.original else None,
            "metadata": self.metadata if self.original else None,
            "notification_id": self.notification_id,
            "source_number": self.handset,
            "destination_number": self.to,
            "format": self.format,
        }


@dataclass(slots=True)
class Handset:
    """A phone: what it received and whether it is RCS-capable."""

    number: str
    rcs: bool = True
    received: list[dict[str, Any]] = field(default_factory=list)
    sent: list[dict[str, Any]] = field(default_factory=list)
    latest: dict[str, Message] = field(default_factory=dict)
    """Our number → the last message this handset received from it."""

    def summary(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "rcs": self.rcs,
            "received": len(self.received),
            "sent": len(self.sent),
        }


@dataclass(slots=True, frozen=True)
class Outcome:
    """How messages to one destination end."""

    status: DeliveryStatus
    code: int

    @classmethod
    def of(cls, status: str | DeliveryStatus | None = None, code: int | None = None) -> Outcome:
        """From a status, a code or both; raises :class:`ValueError` for unknown values."""
        if status is None and code is None:
            raise ValueError("an outcome needs a status or a status code")
        parsed = DeliveryStatus(str(status).lower()) if status is not None else None
        if parsed is None:
            assert code is not None
            parsed = status_for_code(code)
        return cls(parsed, code if code is not None else default_code_for(parsed))

    def to_api(self) -> dict[str, Any]:
        return {"status": self.status.value, "code": self.code}


@dataclass(slots=True)
class WebhookRecord:
    """A webhook registered through the Webhooks API."""

    id: str
    spec: dict[str, Any]
    """``url``, ``method``, ``encoding``, ``events``, optional ``headers``, ``template``,
    ``read_timeout``, ``retries``, ``retry_delay``."""

    @property
    def events(self) -> list[str]:
        return list(self.spec.get("events", []))

    def to_api(self) -> dict[str, Any]:
        return {"id": self.id, **self.spec}


@dataclass(slots=True)
class SignatureKeyRecord:
    key: SigningKey
    created: str

    def to_api(self, *, enabled: bool, public: bool = False) -> dict[str, Any]:
        body: dict[str, Any] = {"key_id": self.key.key_id}
        if public:
            body["public_key"] = self.key.public_key_b64
        body.update(cipher="RSA", digest=self.key.digest, created=self.created, enabled=enabled)
        return body


@dataclass
class Stats:
    """Counters of what happened, for tests and benchmarks (``GET /_sandbox/stats``)."""

    api_calls: Counter[str] = field(default_factory=Counter)
    messages: Counter[str] = field(default_factory=Counter)
    pushes: Counter[str] = field(default_factory=Counter)
    accounts: Counter[str] = field(default_factory=Counter)
    send_calls: deque[dict[str, Any]] = field(
        default_factory=lambda: deque(maxlen=SEND_CALL_HISTORY)
    )

    def clear(self) -> None:
        for counter in (self.api_calls, self.messages, self.pushes, self.accounts):
            counter.clear()
        self.send_calls.clear()

    def to_api(self) -> dict[str, Any]:
        return {
            "api_calls": dict(self.api_calls),
            "messages": {
                key: self.messages.get(key, 0)
                for key in (
                    "accepted",
                    "rejected_calls",
                    "scheduled",
                    "cancelled",
                    "delivered",
                    "failed",
                    "expired",
                    "rejected",
                    "rcs",
                    "rcs_fallback",
                    "billing_units",
                    "inbound",
                    "opt_outs",
                    "opt_out_confirmations",
                )
            }
            | dict(self.messages),
            "pushes": {key: self.pushes.get(key, 0) for key in ("ok", "failed", "retried")}
            | dict(self.pushes),
            "accounts": dict(self.accounts),
            "send_calls": list(self.send_calls),
        }


# --------------------------------------------------------------------------- state


class SandboxState:
    """The provider's memory. Every method is synchronous and cheap on the hot path."""

    def __init__(self, config: SandboxConfig) -> None:
        self.config = config
        self.stats = Stats()
        self.startup_key: SignatureKeyRecord | None = None
        """The key ``signing=True`` created at start; :meth:`reset` enables it again."""
        self._clear()

    def _clear(self) -> None:
        self.messages: OrderedDict[str, Message] = OrderedDict()
        self.handsets: dict[str, Handset] = {}
        self.replies: OrderedDict[str, Inbound] = OrderedDict()
        self.reports: OrderedDict[str, Report] = OrderedDict()
        self.webhooks: dict[str, WebhookRecord] = {}
        self._webhooks_by_event: dict[str, tuple[WebhookRecord, ...]] = {}
        self.blacklist: dict[str, None] = {}
        self.keys: dict[str, SignatureKeyRecord] = {}
        self.enabled_key_id: str | None = None
        self.outcomes: dict[str, Outcome] = {}
        self.stats.clear()
        self._apply_config_outcomes()

    def reset(self) -> None:
        """Forget everything except what the configuration defines (including the signature
        key created for ``signing=True``, which is enabled again)."""
        self._clear()
        if self.startup_key is not None:
            self.keys[self.startup_key.key.key_id] = self.startup_key
            self.enabled_key_id = self.startup_key.key.key_id

    def _apply_config_outcomes(self) -> None:
        for number, value in self.config.outcomes.items():
            if isinstance(value, tuple):
                self.outcomes[number] = Outcome.of(value[0], value[1])
            elif isinstance(value, int):
                self.outcomes[number] = Outcome.of(code=value)
            else:
                self.outcomes[number] = Outcome.of(value)

    # ------------------------------------------------------------------ messages

    def accept(
        self, requests: Sequence[MessageRequest], *, api_key: str, account: str | None
    ) -> list[Message]:
        """Give each request an id and keep it; the progression is the caller's business."""
        now = now_utc()
        default = self.config.default_number
        accepted = []
        for request in requests:
            message = Message(
                message_id=new_id(),
                request=request,
                source=request.source_number or default,
                submitted=now,
                api_key=api_key,
                account=account,
                billing_units=billing_units(request.content, request.format),
            )
            self.stats.messages["billing_units"] += message.billing_units
            if request.scheduled is not None and request.scheduled > now:
                message.status = "scheduled"
                self.stats.messages["scheduled"] += 1
            self.messages[message.message_id] = message
            accepted.append(message)
        self.stats.messages["accepted"] += len(accepted)
        overflow = len(self.messages) - self.config.max_messages
        for _ in range(max(0, overflow)):
            self.messages.popitem(last=False)
        return accepted

    def message(self, message_id: str) -> Message:
        try:
            return self.messages[message_id]
        except KeyError:
            raise NotFound(message_id) from None

    def cancel(self, message_id: str) -> Message:
        """Cancel a scheduled message; :class:`ValueError` if it is not scheduled."""
        message = self.message(message_id)
        if message.status != "scheduled":
            raise ValueError(f"only scheduled messages can be cancelled; it is {message.status}")
        message.status = "cancelled"
        message.history.append(("cancelled", None, now_utc()))
        self.stats.messages["cancelled"] += 1
        return message

    def outcome_for(self, message: Message) -> Outcome:
        """How a message will end: blacklisted → rejected 302 (unless the account handles
        opt-outs itself), an outcome rule, else delivered 220 (RCS without RCS handset and
        without fallback: failed 413)."""
        if message.destination in self.blacklist and self.config.opt_out_handling != "account":
            return Outcome(DeliveryStatus.REJECTED, 302)
        rule = self.outcomes.get(message.destination)
        if rule is not None:
            return rule
        if message.request.format == "RCS" and message.request.fallback is None:
            handset = self.handsets.get(message.destination)
            if handset is not None and not handset.rcs:
                return Outcome(DeliveryStatus.FAILED, 413)
        return Outcome(DeliveryStatus.DELIVERED, 220)

    def record_status(
        self, message: Message, status: DeliveryStatus, code: int, *, when: datetime | None = None
    ) -> Report:
        """Move a message to a status; returns its delivery report, which polling will
        return when the message asked for reports."""
        when = when or now_utc()
        value = str(status)  # StrEnum: its value, without the slow enum property
        message.status = value
        message.status_code = code
        message.history.append((value, code, when))
        report = Report(new_id(), message, status, code, when)
        if value in FINAL_STATUSES:
            self.stats.messages[value] += 1
        if message.wants_reports or self.config.delivery_reports_always:
            self._enqueue(self.reports, report.report_id, report)
        return report

    def deliver(self, message: Message) -> dict[str, Any]:
        """Put a message in its handset's inbox (as RCS, or as its SMS fallback)."""
        handset = self.handset(message.destination)
        request = message.request
        rcs = None
        content = request.content
        fmt = request.format
        if request.format == "RCS":
            if handset.rcs:
                rcs = request.rcs
                self.stats.messages["rcs"] += 1
            else:
                fallback = request.fallback or {}
                content = str(fallback.get("content", ""))
                fmt = str(fallback.get("format") or "SMS")
                self.stats.messages["rcs_fallback"] += 1
                message.billing_units = billing_units(content, fmt)
        message.delivered_as = fmt
        entry = {
            "message_id": message.message_id,
            "content": content,
            "format": fmt,
            "source_number": message.source,
            "metadata": dict(request.metadata),
            "media": list(request.media or []),
            "subject": request.subject,
            "rcs": rcs,
            "time": time.time(),
            "origin": "account",
        }
        handset.received.append(entry)
        handset.latest[message.source] = message
        return entry

    def confirm_opt_out(self, handset: Handset, source: str) -> dict[str, Any]:
        """The provider's own opt-out confirmation, from ``source`` (the number the keyword
        went to), straight into the handset's inbox: it is not one of the account's messages
        (no id to look up, no delivery reports), and the handset's replies still correlate
        with the account's last message."""
        entry: dict[str, Any] = {
            "message_id": new_id(),
            "content": self.config.opt_out_reply,
            "format": "SMS",
            "source_number": source,
            "metadata": {},
            "media": [],
            "subject": None,
            "rcs": None,
            "time": time.time(),
            "origin": "provider",
        }
        handset.received.append(entry)
        self.stats.messages["opt_out_confirmations"] += 1
        return entry

    # ------------------------------------------------------------------ handsets

    def handset(self, number: str) -> Handset:
        handset = self.handsets.get(number)
        if handset is None:
            handset = self.handsets[number] = Handset(number)
        return handset

    def receive(
        self,
        handset_number: str,
        content: str,
        *,
        to: str | None = None,
        reply_to: str | None = None,
        attachments: Sequence[Mapping[str, str]] = (),
        rcs: bool = False,
        choice: Mapping[str, Any] | None = None,
    ) -> Inbound:
        """A handset sends a message. ``reply_to`` is a message id, ``"latest"`` (the last
        message this handset got from ``to``) or ``None`` (unsolicited). An opt-out keyword
        adds a notification id and is handled as :attr:`SandboxConfig.opt_out_handling` says
        (by default: the handset is blacklisted and gets the provider's confirmation).

        Raises :class:`NotFound` for an unknown ``reply_to`` id."""
        handset = self.handset(handset_number)
        original: Message | None = None
        if choice is not None and reply_to is None and choice.get("message_id"):
            reply_to = str(choice["message_id"])
        if reply_to == "latest":
            original = handset.latest.get(to or self.config.default_number)
        elif reply_to is not None:
            original = self.message(reply_to)
            if original.destination != handset_number:
                raise ValueError(f"message {reply_to} was not sent to {handset_number}")
        if to is None:
            to = (
                original.source
                if original is not None and original.source.startswith("+")
                else self.config.default_number
            )
        contact: dict[str, Any] | None = None
        fmt: Literal["SMS", "MMS", "RCS"] = "MMS" if attachments else "SMS"
        if choice is not None:
            fmt = "RCS"
            contact = {
                "choice_response_message": {
                    "message_id": choice.get("message_id")
                    or (original.message_id if original else None),
                    "postback_data": str(choice["postback_data"]),
                }
            }
            content = content or str(choice["postback_data"])
        elif rcs:
            fmt = "RCS"
            contact = {"text_message": {"text": content}}
        inbound = Inbound(
            reply_id=new_id(),
            handset=handset_number,
            to=to,
            content=content,
            format=fmt,
            time=now_utc(),
            original=original,
            attachments=[dict(a) for a in attachments],
            contact_message=contact,
        )
        if choice is None and is_opt_out(content):
            inbound.notification_id = new_id()
            self.stats.messages["opt_outs"] += 1
            handling = self.config.opt_out_handling
            if handling != "account" and handset_number not in self.blacklist:
                self.blacklist[handset_number] = None
                if handling == "provider":
                    self.confirm_opt_out(handset, to)
        handset.sent.append(
            {
                "reply_id": inbound.reply_id,
                "to": to,
                "content": content,
                "format": fmt,
                "message_id": original.message_id if original else None,
                "attachments": len(inbound.attachments),
                "contact_message": contact,
                "time": time.time(),
            }
        )
        self.stats.messages["inbound"] += 1
        self._enqueue(self.replies, inbound.reply_id, inbound)
        return inbound

    # ------------------------------------------------------------------ polling

    def _enqueue(self, queue: OrderedDict[str, Any], key: str, item: Any) -> None:
        queue[key] = item
        if len(queue) > self.config.max_unconfirmed:
            queue.popitem(last=False)

    def unconfirmed_replies(self, limit: int = 100) -> list[Inbound]:
        return list(islice(self.replies.values(), limit))

    def unconfirmed_reports(self, limit: int = 100) -> list[Report]:
        return list(islice(self.reports.values(), limit))

    def confirm_replies(self, ids: Iterable[str]) -> int:
        return sum(self.replies.pop(i, None) is not None for i in ids)

    def confirm_reports(self, ids: Iterable[str]) -> int:
        return sum(self.reports.pop(i, None) is not None for i in ids)

    # ------------------------------------------------------------------ webhooks

    def _reindex_webhooks(self) -> None:
        index: dict[str, list[WebhookRecord]] = {}
        for record in self.webhooks.values():
            for event in record.events:
                index.setdefault(event, []).append(record)
        self._webhooks_by_event = {k: tuple(v) for k, v in index.items()}

    @property
    def has_webhooks(self) -> bool:
        return bool(self.webhooks)

    def webhooks_for(self, event: WebhookEvent) -> tuple[WebhookRecord, ...]:
        return self._webhooks_by_event.get(event.value, ())

    def _check_unique(self, url: str, method: str, ignore: str | None = None) -> None:
        for record in self.webhooks.values():
            if record.id != ignore and (record.spec["url"], record.spec["method"]) == (
                url,
                method,
            ):
                raise Conflict("A webhook with the given url and method already exists.")

    def add_webhook(self, spec: dict[str, Any]) -> WebhookRecord:
        self._check_unique(spec["url"], spec["method"])
        record = WebhookRecord(new_id(), spec)
        self.webhooks[record.id] = record
        self._reindex_webhooks()
        return record

    def webhook(self, webhook_id: str) -> WebhookRecord:
        try:
            return self.webhooks[webhook_id]
        except KeyError:
            raise NotFound(webhook_id) from None

    def update_webhook(self, webhook_id: str, spec: dict[str, Any]) -> WebhookRecord:
        record = self.webhook(webhook_id)
        self._check_unique(spec["url"], spec["method"], ignore=webhook_id)
        record.spec = spec
        self._reindex_webhooks()
        return record

    def delete_webhook(self, webhook_id: str) -> None:
        self.webhook(webhook_id)
        del self.webhooks[webhook_id]
        self._reindex_webhooks()

    def webhook_page(self, page: int, page_size: int) -> list[WebhookRecord]:
        records = list(self.webhooks.values())
        return records[page * page_size : (page + 1) * page_size]

    # ------------------------------------------------------------------ blacklist

    def blacklist_add(self, numbers: Iterable[str]) -> int:
        """Add numbers; returns how many were new."""
        added = 0
        for number in numbers:
            if number not in self.blacklist:
                self.blacklist[number] = None
                added += 1
        return added

    def blacklist_remove(self, number: str) -> None:
        if number not in self.blacklist:
            raise NotFound(number)
        del self.blacklist[number]

    # ------------------------------------------------------------------ signature keys

    def add_key(self, key: SigningKey) -> SignatureKeyRecord:
        record = SignatureKeyRecord(key, format_timestamp(now_utc()))
        self.keys[key.key_id] = record
        return record

    def key(self, key_id: str) -> SignatureKeyRecord:
        try:
            return self.keys[key_id]
        except KeyError:
            raise NotFound(key_id) from None

    def delete_key(self, key_id: str) -> None:
        self.key(key_id)
        del self.keys[key_id]
        if self.enabled_key_id == key_id:
            self.enabled_key_id = None

    def enable_key(self, key_id: str) -> SignatureKeyRecord:
        record = self.key(key_id)
        self.enabled_key_id = key_id
        return record

    @property
    def signing_key(self) -> SigningKey | None:
        """The enabled key, which signs every push; ``None`` when signing is off."""
        if self.enabled_key_id is None:
            return None
        record = self.keys.get(self.enabled_key_id)
        return record.key if record else None

    # ------------------------------------------------------------------ misc

    def iter_messages(self, destination: str | None = None) -> Iterator[Message]:
        for message in self.messages.values():
            if destination is None or message.destination == destination:
                yield message

    def credits(self) -> int:
        return self.config.credits - self.stats.messages.get("billing_units", 0)
