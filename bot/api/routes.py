"""The management API: send through the outbox, look at messages and conversations.

Every ``/api/*`` route except ``/api/openapi.json`` requires ``Authorization: Bearer
<token>`` when a token is configured (missing or malformed, bytes that are not UTF-8
included → 401; wrong → 403; compared as bytes in constant time). ``/healthz`` and ``/readyz`` are open, for load balancers and orchestrators.

``POST /api/messages``
    SMS, MMS or RCS to 1 to 100 recipients, validated completely before anything is queued,
    then queued through the durable outbox (one atomic batch per partition) → 202 with our
    id of each message. Body: :class:`SendRequest`.
``GET /api/messages/{id}``
    our record of a message plus, when it was sent, the provider's current view of it
    (``?provider=0`` skips the provider call; a provider failure is reported in
    ``provider_error``, never as a 5xx).
``GET /api/conversations?limit=&q=``
    conversations, most recently active first; ``q`` filters on a fragment of the numbers.
``GET /api/conversations/{key}``
    one conversation (``<our number>:<handset>``, URL-encoded): state, data, version,
    timeline and (``?messages=0`` to skip) the records of the messages on the timeline.
``GET /api/senders``
    the account's sender ids from the provider (502 when the provider fails).
``GET /api/openapi.json``
    the OpenAPI 3.1 document of this API, the webhooks and the forwarded events.
``GET /healthz``, ``GET /readyz``
    liveness (200 while the process can recover by itself; 503 with the reason once it
    cannot, e.g. its embedded Redis is dead and cannot be restarted) and readiness (503
    while Redis does not answer or the process is not ready).

Errors are short JSON objects ``{"error": "..."}``: bad input is always a 4xx and writes
nothing; Redis unavailable is a 503 with ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import re
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

import structlog
from aiohttp import web
from pydantic import ValidationError
from redis.exceptions import RedisError

from bot.api.models import (
    MAX_CONVERSATIONS,
    MAX_RECIPIENTS,
    MAX_TIMELINE,
    MAX_USER_METADATA,
    RESERVED_METADATA,
    RcsContent,
    SendRequest,
)
from bot.api.openapi import openapi_document
from bot.core.http import BodyTooLarge, read_bounded
from bot.core.sms import InvalidPhoneNumber, normalise_phone, segments
from bot.outbox.deferred import DEFERRED
from bot.outbox.queue import queue_requests
from bot.outbox.quiet_hours import Deferral, QuietHours, utc_now
from bot.receipts import records, timeline
from bot.sender.throttle import Throttle
from bot.sinch.client import SinchClient
from bot.sinch.errors import SinchError
from bot.sinch.models import (
    Format,
    OutboundMessage,
    RcsMessage,
    validation_details,
)
from bot.storage.events import (
    OutboundRequest,
    prepare_rcs,
    prepare_sms,
)
from bot.storage.keys import PartitionKeys, conversation_key, handset_of, partition_of
from bot.storage.store import Store, text, text_map

__all__ = [
    "API_PREFIX",
    "MAX_CONVERSATIONS",
    "MAX_RECIPIENTS",
    "MAX_TIMELINE",
    "MAX_USER_METADATA",
    "RESERVED_METADATA",
    "Api",
    "ApiDeps",
    "ApiError",
    "RcsContent",
    "SendRequest",
    "api_routes",
]

log = structlog.get_logger(__name__)

API_PREFIX: Final = "/api"
RETRY_AFTER: Final = 1
"""Seconds a client is asked to wait after a 503."""

_JSON_TYPES: Final = frozenset({"application/json"})
_MESSAGE_ID: Final = re.compile(r"[A-Za-z0-9_.-]{1,100}")
_NUMBER_FRAGMENT: Final = re.compile(r"\+?[0-9]{1,20}")
_SEPARATORS: Final = re.compile(r"[,;]")


# ----------------------------------------------------------------------------- dependencies


@dataclass(frozen=True)
class ApiDeps:
    """What the management API needs, given explicitly by the server.

    Attributes:
        store: the gateway's Redis.
        partitions: the partition count.
        ttl_ms: lifetime of message records and timelines (``timeline_ttl``), in ms.
        timeline_max: entries kept per conversation timeline.
        max_body: the largest request body accepted, in bytes (larger: 413).
        default_region: region for numbers written without ``+``.
        api_token: the bearer token; ``None`` disables authentication (only for the
            zero-configuration local mode).
        client: the provider client, for sender ids and message status (``None``: those
            answer 503).
        ready: extra readiness check (workers started...), besides Redis answering.
        live: liveness check: why the process cannot recover by itself, or ``None`` while
            it can (``/healthz`` answers 503 with that reason).
        throttle: the shared provider throttle; provider calls made by the API take a call
            from it when one is free, and are refused rather than queued when none is.
        provider_timeout: seconds a provider call may take before the API gives up.
        ready_timeout: seconds Redis has to answer the readiness PING.
        quiet_hours: the quiet-hours policy: a send to a handset in its quiet window is
            deferred until the window ends (status ``deferred``, ``deferred_until``);
            ``None``: never deferred.
        clock: the current time (aware) quiet hours are judged at.
        sends: counts of the messages queued through the API (shared with the metrics).
    """

    store: Store
    partitions: int
    ttl_ms: int
    timeline_max: int
    max_body: int
    default_region: str
    api_token: str | None
    client: SinchClient | None = None
    ready: Callable[[], Awaitable[bool]] | None = None
    live: Callable[[], str | None] | None = None
    throttle: Throttle | None = None
    provider_timeout: float = 10.0
    ready_timeout: float = 1.0
    quiet_hours: QuietHours | None = None
    clock: Callable[[], datetime] = utc_now
    sends: Counter[str] = field(default_factory=Counter)
    """Messages this API queued, by outcome (``queued``, ``deferred``), for metrics."""


class ApiError(Exception):
    """A finished error response (``{"error": message}`` with ``status``), raised from a
    route handler wrapped by the API's guard (plugins' routes raise it too)."""

    def __init__(
        self, status: int, message: str, *, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


def _json(data: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.json_response(data, status=status, headers=headers, dumps=_dumps)


def _dumps(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"), default=str)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Api:
    """The route handlers, bound to their dependencies."""

    def __init__(self, deps: ApiDeps) -> None:
        if deps.partitions < 1:
            raise ValueError("partitions must be at least 1")
        if deps.max_body < 1:
            raise ValueError("max_body must be positive")
        self.deps = deps
        self.redis = deps.store.redis
        self._token = (
            deps.api_token.encode("utf-8", "surrogateescape")
            if deps.api_token is not None
            else None
        )
        self._document: bytes | None = None

    # ------------------------------------------------------------------ plumbing

    def guarded(self, handler: Handler, *, auth: bool = True) -> Handler:
        """Authentication, error responses and Redis outages around ``handler``."""

        async def wrapped(request: web.Request) -> web.StreamResponse:
            try:
                if auth:
                    self._authenticate(request)
                return await handler(request)
            except ApiError as exc:
                return _json({"error": exc.message}, exc.status, exc.headers)
            except (RedisError, OSError) as exc:
                log.warning("api: redis unavailable", path=request.path, error=str(exc))
                return _json(
                    {"error": "storage unavailable, retry later"},
                    503,
                    {"Retry-After": str(RETRY_AFTER)},
                )

        return wrapped

    def _authenticate(self, request: web.Request) -> None:
        if self._token is None:
            return
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.strip().partition(" ")
        presented = _utf8_bytes(token.strip())
        if scheme.lower() != "bearer" or not presented:
            raise ApiError(401, "unauthorized", headers={"WWW-Authenticate": "Bearer"})
        if not hmac.compare_digest(presented, self._token):
            raise ApiError(403, "forbidden")

    async def read_json(self, request: web.Request) -> Any:
        """The request's JSON body, bounded by ``max_body`` (415, 413, 400 otherwise)."""
        if request.content_type not in _JSON_TYPES:
            raise ApiError(415, "Content-Type must be application/json")
        try:
            body = await read_bounded(request, self.deps.max_body)
        except BodyTooLarge:
            raise ApiError(413, "body too large") from None
        try:
            return json.loads(body)
        except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
            raise ApiError(400, "invalid JSON") from None

    # ------------------------------------------------------------------ POST /api/messages

    async def send(self, request: web.Request) -> web.StreamResponse:
        payload = await self.read_json(request)
        if not isinstance(payload, dict):
            raise ApiError(422, "body must be a JSON object")
        try:
            body = SendRequest.model_validate(payload)
        except ValidationError as exc:
            raise ApiError(422, _details(exc)) from None
        requests = self._build(body)
        try:
            deferred = await queue_requests(
                self.deps.store,
                self.deps.partitions,
                requests,
                ttl_ms=self.deps.ttl_ms,
                timeline_max=self.deps.timeline_max,
                quiet_hours=self.deps.quiet_hours,
                now=self.deps.clock(),
            )
        except (RedisError, OSError) as exc:
            # Some partitions' batches may have been committed: give the ids, so the
            # client can look them up rather than blindly sending again.
            log.warning("api: queueing failed", count=len(requests), error=str(exc))
            return _json(
                {
                    "error": "storage unavailable: some messages may be queued, check their ids",
                    "messages": _queued(requests, "unknown"),
                },
                503,
                {"Retry-After": str(RETRY_AFTER)},
            )
        self.deps.sends["queued"] += len(requests) - len(deferred)
        self.deps.sends["deferred"] += len(deferred)
        log.info(
            "api: messages queued",
            count=len(requests),
            deferred=len(deferred),
            channel=body.channel,
        )
        return _json({"messages": _queued(requests, records.QUEUED, deferred)}, 202)

    def _recipients(self, to: str | list[str]) -> list[str]:
        if isinstance(to, str):
            raw = _SEPARATORS.split(to) if _SEPARATORS.search(to) else to.split()
        else:
            raw = to
        numbers = [n.strip() for n in raw if n.strip()]
        if not numbers:
            raise ApiError(422, "to: at least one recipient is required")
        if len(numbers) > MAX_RECIPIENTS:
            raise ApiError(422, f"to: at most {MAX_RECIPIENTS} recipients per request")
        result: list[str] = []
        for number in numbers:
            try:
                normalised = normalise_phone(number, self.deps.default_region)
            except InvalidPhoneNumber:
                raise ApiError(422, f"to: {number[:40]!r} is not a valid phone number") from None
            if normalised not in result:
                result.append(normalised)
        return result

    def _source(self, value: str | None) -> str | None:
        """Our number in E.164 when it looks like a phone number; short codes (3 to 8 digits)
        and alphanumeric senders as given (the message model checks them)."""
        if value is None or not value.strip():
            return None
        value = value.strip()
        digits = sum(ch.isdigit() for ch in value)
        if value.startswith("+") or digits >= 9:
            try:
                return normalise_phone(value, self.deps.default_region)
            except InvalidPhoneNumber:
                raise ApiError(422, f"from: {value[:40]!r} is not a valid phone number") from None
        return value

    def _build(self, body: SendRequest) -> list[OutboundRequest]:
        """Every outbound request of a send, or a 422 naming the first problem."""
        recipients = self._recipients(body.to)
        source = self._source(body.from_)
        metadata = dict(body.metadata or {})
        reserved = sorted(set(metadata) & set(RESERVED_METADATA))
        if reserved:
            raise ApiError(422, f"metadata: {', '.join(reserved)} is reserved")
        if len(metadata) > MAX_USER_METADATA:
            raise ApiError(422, f"metadata: at most {MAX_USER_METADATA} pairs")
        if body.channel == "rcs":
            return self._build_rcs(body, recipients, source, metadata or None)
        if body.rcs is not None:
            raise ApiError(422, "rcs: only for channel rcs")
        if body.content is None:
            raise ApiError(422, f"content: required for channel {body.channel}")
        result = []
        for number in recipients:
            try:
                message = OutboundMessage(
                    content=body.content,
                    destination_number=number,
                    source_number=source,
                    format=Format.MMS if body.channel == "mms" else Format.SMS,
                    media=body.media,
                    subject=body.subject,
                    callback_url=body.callback_url,
                    delivery_report=body.delivery_report,
                    scheduled=body.scheduled,
                    metadata=metadata or None,
                )
                result.append(prepare_sms(message, conversation_key(source, number)))
            except ValidationError as exc:
                raise ApiError(422, _details(exc)) from None
        return result

    def _build_rcs(
        self,
        body: SendRequest,
        recipients: Sequence[str],
        source: str | None,
        metadata: dict[str, str] | None,
    ) -> list[OutboundRequest]:
        rcs = body.rcs
        if rcs is None:
            raise ApiError(422, "rcs: required for channel rcs")
        for name in ("media", "subject", "scheduled"):
            if getattr(body, name) is not None:
                raise ApiError(422, f"{name}: not supported for channel rcs")
        result = []
        for number in recipients:
            try:
                message = RcsMessage(
                    destination_number=number,
                    source_number=source,
                    text=rcs.text,
                    card=rcs.card,
                    carousel=rcs.carousel,
                    choices=rcs.choices,
                    fallback_text=rcs.fallback_text or body.content,
                    callback_url=body.callback_url,
                    delivery_report=body.delivery_report,
                    metadata=metadata,
                )
                result.append(prepare_rcs(message, conversation_key(source, number)))
            except ValidationError as exc:
                raise ApiError(422, _details(exc, "/rcs")) from None
        return result

    # ------------------------------------------------------------------ GET /api/messages/{id}

    async def message(self, request: web.Request) -> web.StreamResponse:
        gw_id = request.match_info["id"]
        want_provider = _flag(request, "provider", default=True)
        if not _MESSAGE_ID.fullmatch(gw_id):
            raise ApiError(404, "no such message")
        partitions = [PartitionKeys(p) for p in range(self.deps.partitions)]
        rows = await records.read_many(self.redis, [(keys, gw_id) for keys in partitions])
        found = [(p, record) for p, record in enumerate(rows) if record]
        if not found:
            # The provider's message_id: mapped to our id in its partition.
            mapped = await records.find_gw_ids(
                self.redis, partitions, gw_id, ttl_ms=self.deps.ttl_ms
            )
            hits = [(partitions[p], ours) for p, ours in enumerate(mapped) if ours]
            rows = await records.read_many(self.redis, hits)
            found = [(keys.partition, r) for (keys, _), r in zip(hits, rows, strict=True) if r]
        if not found:
            raise ApiError(404, "no such message")
        partition, record = found[0]
        gw_id = record.get("gw_id", gw_id)
        result: dict[str, Any] = {"id": gw_id, "partition": partition, "record": record}
        message_id = record.get("message_id")
        if want_provider and message_id:
            try:
                status = await self._provider(lambda c: c.message_status(message_id))
                result["provider"] = status.model_dump(mode="json", exclude_none=True)
            except _ProviderUnavailable as exc:
                result["provider_error"] = str(exc)
        return _json(result)

    async def _provider(self, call: Callable[[SinchClient], Awaitable[Any]]) -> Any:
        """One provider call within the shared throttle and the API's time limit."""
        client = self.deps.client
        if client is None:
            raise _ProviderUnavailable("no provider configured")
        if self.deps.throttle is not None:
            wait = await self.deps.throttle.try_acquire()
            if wait > 0:
                raise _ProviderUnavailable(
                    f"provider call limit reached, retry in {wait:.0f} s", retry_after=wait
                )
        try:
            async with asyncio.timeout(self.deps.provider_timeout):
                return await call(client)
        except TimeoutError:
            raise _ProviderUnavailable("provider: timeout") from None
        except SinchError as exc:
            raise _ProviderUnavailable(f"provider: {str(exc)[:300]}", failed=True) from None
        finally:
            if self.deps.throttle is not None:
                with contextlib.suppress(RedisError, OSError):
                    await self.deps.throttle.release()

    # ------------------------------------------------------------------ conversations

    async def conversations(self, request: web.Request) -> web.StreamResponse:
        limit = _int_param(request, "limit", default=50, low=1, high=MAX_CONVERSATIONS)
        q = request.query.get("q", "")
        fragment = re.sub(r"[\s().-]", "", q)
        if q and not _NUMBER_FRAGMENT.fullmatch(fragment):
            raise ApiError(422, "q: must be part of a phone number (digits, optional '+')")
        if len(fragment) >= 9:  # a whole number in national form finds its E.164 keys
            with contextlib.suppress(InvalidPhoneNumber):
                fragment = normalise_phone(fragment, self.deps.default_region)
        found: list[tuple[float, str]] = []
        if fragment:
            for p in range(self.deps.partitions):
                key = PartitionKeys(p).conversations
                async for member, score in self.redis.zscan_iter(
                    key, match=f"*{fragment}*", count=1000
                ):
                    found.append((float(score), text(member)))
        else:
            pipe = self.redis.pipeline(transaction=False)
            for p in range(self.deps.partitions):
                pipe.zrevrange(PartitionKeys(p).conversations, 0, limit - 1, withscores=True)
            for rows in await pipe.execute():
                found.extend((float(score), text(member)) for member, score in rows)
        found.sort(key=lambda item: (-item[0], item[1]))
        return _json(
            {
                "conversations": [
                    {"key": key, "last_activity": score / 1000} for score, key in found[:limit]
                ]
            }
        )

    async def conversation(self, request: web.Request) -> web.StreamResponse:
        key = request.match_info["key"]
        limit = _int_param(request, "limit", default=200, low=1, high=MAX_TIMELINE)
        with_messages = _flag(request, "messages", default=True)
        if ":" not in key or len(key) > 300:
            raise ApiError(404, "no such conversation")
        keys = PartitionKeys(partition_of(handset_of(key), self.deps.partitions))
        pipe = self.redis.pipeline(transaction=False)
        pipe.hgetall(keys.session(key))
        pipe.zscore(keys.conversations, key)
        raw_session, score = await pipe.execute()
        entries = await timeline.read(self.redis, keys, key, limit=limit)
        session = text_map(raw_session)
        if not session and score is None and not entries:
            raise ApiError(404, "no such conversation")
        try:
            data = json.loads(session.get("data") or "{}")
            stored = json.loads(session.get("flows") or "{}")
        except ValueError:
            data, stored = {}, {}
        flows = {
            name: {"state": record.get("state"), "data": record.get("data") or {}}
            for name, record in stored.items()
        }
        state = session.get("state") or None  # a session stored before flows
        if state is None and any(flow["state"] for flow in flows.values()):
            state = "; ".join(f"{n}: {f['state']}" for n, f in flows.items() if f["state"])
        if not data:
            data = {name: flow["data"] for name, flow in flows.items() if flow["data"]}
        result: dict[str, Any] = {
            "key": key,
            "state": state,
            "data": data,
            "flows": flows,
            "version": int(session.get("v") or 0),
            "last_activity": None if score is None else float(score) / 1000,
            "timeline": entries,
        }
        if with_messages:
            ids = list(
                dict.fromkeys(
                    str(e["data"]["gw_id"])
                    for e in entries
                    if e["kind"] == "outbound"
                    and isinstance(e["data"], dict)
                    and e["data"].get("gw_id")
                )
            )
            rows = await records.read_many(self.redis, [(keys, gw_id) for gw_id in ids])
            result["messages"] = {
                gw_id: record for gw_id, record in zip(ids, rows, strict=True) if record
            }
        return _json(result)

    # ------------------------------------------------------------------ senders, health

    async def senders(self, request: web.Request) -> web.StreamResponse:
        try:
            senders = await self._provider(lambda c: c.sender_ids())
        except _ProviderUnavailable as exc:
            if exc.failed:
                raise ApiError(502, str(exc)) from None
            headers = {"Retry-After": str(max(1, round(exc.retry_after or RETRY_AFTER)))}
            raise ApiError(503, str(exc), headers=headers) from None
        return _json(senders.model_dump(mode="json", by_alias=True, exclude_none=True))

    async def healthz(self, request: web.Request) -> web.StreamResponse:
        reason = self.deps.live() if self.deps.live is not None else None
        if reason is not None:
            return _json({"status": "unavailable", "reason": reason}, 503)
        return _json({"status": "ok"})

    async def readyz(self, request: web.Request) -> web.StreamResponse:
        reason = None
        try:
            async with asyncio.timeout(self.deps.ready_timeout):
                await self.redis.ping()
        except (RedisError, OSError, TimeoutError):
            reason = "redis unreachable"
        if reason is None and self.deps.ready is not None:
            try:
                if not await self.deps.ready():
                    reason = "not ready"
            except Exception:
                log.exception("api: readiness check failed")
                reason = "not ready"
        if reason is not None:
            return _json({"status": "unavailable", "reason": reason}, 503)
        return _json({"status": "ok"})

    async def openapi(self, request: web.Request) -> web.StreamResponse:
        if self._document is None:
            self._document = json.dumps(openapi_document(), ensure_ascii=False).encode()
        return web.Response(body=self._document, content_type="application/json")


class _ProviderUnavailable(Exception):
    def __init__(
        self, message: str, *, failed: bool = False, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.failed = failed
        """The provider answered with an error or failed (as opposed to: not asked)."""
        self.retry_after = retry_after


def _queued(
    requests: Sequence[OutboundRequest],
    status: str,
    deferred: Mapping[str, Deferral] | None = None,
) -> list[dict[str, Any]]:
    """The response items of a send; a deferred message's status is ``deferred`` with
    ``deferred_until`` (ISO 8601 UTC) and ``deferred_reason``."""
    result = []
    for request in requests:
        info = segments(request.text)
        item: dict[str, Any] = {
            "id": request.gw_id,
            "to": request.destination,
            "conversation": request.conversation,
            "status": status,
            "segments": info.segments,
            "encoding": str(info.encoding),
        }
        deferral = (deferred or {}).get(request.gw_id)
        if deferral is not None:
            item["status"] = DEFERRED
            item["deferred_until"] = deferral.until_iso
            item["deferred_reason"] = deferral.reason
        result.append(item)
    return result


def _details(error: ValidationError, prefix: str = "") -> str:
    """A pydantic error as one short line: ``/field: reason; /other: reason``."""
    details = validation_details(error, prefix)
    line = "; ".join(details[:5])
    if len(details) > 5:
        line += f" (and {len(details) - 5} more)"
    return line[:500]


def _utf8_bytes(value: str) -> bytes | None:
    """A header value's bytes as they were received, or ``None`` when they are not UTF-8.

    aiohttp decodes header values as UTF-8 with ``surrogateescape``: a byte that is not UTF-8
    arrives as a lone surrogate, which ``str.encode()`` refuses. Such a value can never equal
    a configured (UTF-8) credential: it is malformed, not merely wrong.
    """
    try:
        raw = value.encode("utf-8", "surrogateescape")
        raw.decode("utf-8")
    except UnicodeError:
        return None
    return raw


def _flag(request: web.Request, name: str, *, default: bool) -> bool:
    raw = request.query.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ApiError(422, f"{name}: must be 1 or 0")


def _int_param(request: web.Request, name: str, *, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(422, f"{name}: must be an integer") from None
    if not low <= value <= high:
        raise ApiError(422, f"{name}: must be between {low} and {high}")
    return value


def api_routes(deps: ApiDeps) -> list[web.RouteDef]:
    """The management API's routes, for ``app.add_routes(...)`` (see the module docstring).

    The routes read their bodies themselves, bounded by ``deps.max_body``, so they do not
    depend on the application's ``client_max_size``.
    """
    api = Api(deps)
    g = api.guarded
    return [
        web.post(f"{API_PREFIX}/messages", g(api.send), name="api-send"),
        web.get(
            f"{API_PREFIX}/messages/{{id}}", g(api.message), name="api-message", allow_head=False
        ),
        web.get(
            f"{API_PREFIX}/conversations",
            g(api.conversations),
            name="api-conversations",
            allow_head=False,
        ),
        web.get(
            f"{API_PREFIX}/conversations/{{key}}",
            g(api.conversation),
            name="api-conversation",
            allow_head=False,
        ),
        web.get(f"{API_PREFIX}/senders", g(api.senders), name="api-senders", allow_head=False),
        web.get(
            f"{API_PREFIX}/openapi.json",
            g(api.openapi, auth=False),
            name="api-openapi",
            allow_head=False,
        ),
        web.get("/healthz", g(api.healthz, auth=False), name="healthz", allow_head=False),
        web.get("/readyz", g(api.readyz, auth=False), name="readyz", allow_head=False),
    ]
