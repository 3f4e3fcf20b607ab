"""Event forwarding: the connector's triggers, delivered to downstream systems.

When an inbound message, an opt-out or a delivery receipt is handled, the handler adds a
:func:`forward` operation to its batch, so the forward event is committed atomically with
the handling of the provider event (once, whatever the redeliveries). The event lands in
the partition's forward stream; a :class:`Forwarder` in every ``sinchbot serve`` process
(consumer group ``forwarder``) POSTs it to every configured subscriber URL.

Event types
    ``message.received`` (an SMS, MMS or RCS message from a handset),
    ``message.opt_out`` (the provider's opt-out notification) and
    ``receipt.<status>`` for delivery receipts (``receipt.enroute``, ``receipt.submitted``,
    ``receipt.delivered``, ``receipt.failed``, ``receipt.expired``, ``receipt.rejected``...).

The request
    ``POST <url>`` with ``Content-Type: application/json`` and the body
    ``{"id": "evt_…", "type": "receipt.delivered", "created": 1732636800.123, "data": {…}}``
    (``created`` in Unix seconds). Headers:

    * ``X-Sinchbot-Event-Id``: the event's id, identical on every retry: subscribers dedupe
      on it (delivery is at least once);
    * ``X-Sinchbot-Event-Type``: the event's type;
    * ``X-Sinchbot-Signature: t=<unix seconds>,v1=<hex>`` when a secret is configured, where
      ``<hex>`` is HMAC-SHA256 keyed with the secret over ``"<t>.<raw body>"`` (the Stripe
      scheme). A subscriber recomputes it over the raw bytes it received, compares in
      constant time and rejects a ``t`` too far from its clock (see :func:`verify`).

Delivery
    An event is acknowledged (and deleted from the stream) once **every** URL answered 2xx.
    Each delivery POSTs to the URLs that have not succeeded yet, retrying with exponential
    backoff and jitter (stamina) on 5xx, 408, 429, timeouts and connection errors. The URLs
    that succeeded are remembered in a small per-event hash, so a later delivery never
    re-posts to them. An event still not delivered is retried after ``redelivery_delay``;
    after ``max_deliveries`` deliveries it goes to the dead-letter stream (``sinchbot dlq``)
    and is acknowledged. Entries held by a worker whose liveness key expired are claimed by
    the others. A crash between a subscriber's 2xx and our record of it re-posts once.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlsplit

import httpx
import stamina
import structlog
from redis.exceptions import RedisError, ResponseError

from bot.gateway import dlq
from bot.gateway.events import GW_ID, InboxEvent
from bot.gateway.keys import FORWARD_GROUP, PREFIX, PartitionKeys, alive
from bot.gateway.store import Batch, Store, text, text_map
from bot.sinch.models import DeliveryReceipt, InboundMessage

__all__ = [
    "EVENT_ID_HEADER",
    "EVENT_TYPE_HEADER",
    "SIGNATURE_HEADER",
    "Forwarder",
    "event_for",
    "forward",
    "forward_event",
    "forward_state",
    "sign",
    "verify",
]

log = structlog.get_logger(__name__)

SIGNATURE_HEADER: Final = "X-Sinchbot-Signature"
EVENT_ID_HEADER: Final = "X-Sinchbot-Event-Id"
EVENT_TYPE_HEADER: Final = "X-Sinchbot-Event-Type"

_FAILURES: Final = "n"
"""Field of a forward-state hash: deliveries that failed so far."""
_STATE_TTL_MS: Final = 7 * 86400 * 1000
"""A forward-state hash outlives any retry schedule; it is deleted when the event is acked."""


def forward_state(keys: PartitionKeys, entry_id: str) -> str:
    """Hash of one forward entry's progress: a field per URL that answered 2xx (a short
    hash of the URL) and ``n``, the failed deliveries so far. Deleted with the entry."""
    return f"{PREFIX}:{keys.tag}:fwdst:{entry_id}"


# ------------------------------------------------------------------------------- producing


def forward(
    batch: Batch,
    keys: PartitionKeys,
    event_type: str,
    payload: Mapping[str, Any],
    *,
    event_id: str | None = None,
    created: float | None = None,
) -> str:
    """Add a forward event to ``batch`` (an XADD to the partition's forward stream).

    Only call this when forwarding is configured: without a :class:`Forwarder` nothing
    consumes the stream. Returns the event id (``evt_`` + 32 hex characters).
    """
    event_id = event_id or f"evt_{uuid.uuid4().hex}"
    batch.xadd(
        keys.forward,
        {
            "id": event_id,
            "type": event_type,
            "created": f"{time.time() if created is None else created:.3f}",
            "data": json.dumps(payload, separators=(",", ":"), ensure_ascii=False, default=str),
        },
    )
    return event_id


def event_for(event: InboxEvent) -> tuple[str, dict[str, Any]]:
    """The forward event type and payload of an inbox event."""
    inner = event.event
    if isinstance(inner, DeliveryReceipt):
        return f"receipt.{inner.status}", {
            "conversation": event.conversation,
            "gw_id": inner.metadata.get(GW_ID),
            "message_id": inner.message_id,
            "delivery_report_id": inner.delivery_report_id,
            "status": str(inner.status),
            "status_code": inner.status_code,
            "status_meaning": inner.status_meaning,
            "recipient": inner.recipient,
            "sender": inner.sender,
            "billing_units": inner.billing_units,
            "metadata": dict(inner.metadata),
            "submitted_at": _iso(inner.submitted_at),
            "received_at": _iso(inner.received_at),
        }
    assert isinstance(inner, InboundMessage)
    kind = "message.opt_out" if inner.kind == "opt_out" else "message.received"
    return kind, {
        "conversation": event.conversation,
        "from": inner.source_number,
        "to": inner.destination_number,
        "channel": str(inner.channel),
        "content": inner.content,
        "reply_id": inner.reply_id,
        "in_reply_to": inner.message_id,
        "gw_id": inner.metadata.get(GW_ID),
        "metadata": dict(inner.metadata),
        "attachments": [a.model_dump(exclude_none=True) for a in inner.attachments],
        "choice": inner.choice.model_dump(exclude_none=True) if inner.choice else None,
        "received_at": _iso(inner.received_at),
    }


def forward_event(batch: Batch, keys: PartitionKeys, event: InboxEvent) -> str:
    """:func:`forward` the inbox event being handled (see :func:`event_for`)."""
    event_type, payload = event_for(event)
    return forward(batch, keys, event_type, payload)


def _iso(value: Any) -> str | None:
    return None if value is None else str(value.isoformat())


# ------------------------------------------------------------------------------- signatures


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The ``X-Sinchbot-Signature`` value of ``body`` sent at ``timestamp`` (Unix seconds)."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify(
    secret: str,
    body: bytes,
    header: str,
    *,
    tolerance: float = 300.0,
    now: float | None = None,
) -> bool:
    """Check a ``X-Sinchbot-Signature`` header as a subscriber should: any ``v1`` matches
    the HMAC of ``"<t>.<body>"`` (constant-time) and ``t`` is within ``tolerance`` seconds."""
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t" and value.isdigit():
            timestamp = int(value)
        elif name == "v1":
            candidates.append(value)
    if timestamp is None or not candidates:
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance:
        return False
    expected = sign(secret, body, timestamp).rpartition("v1=")[2]
    return any(hmac.compare_digest(expected.encode(), c.encode()) for c in candidates)


# ------------------------------------------------------------------------------- consuming


def _url_ref(url: str) -> str:
    """A short, stable, secret-free name of a subscriber URL (its hash)."""
    return hashlib.sha256(url.encode()).hexdigest()[:12]


def _safe_url(url: str) -> str:
    """A URL for the log: no user info, query or fragment (they may carry tokens)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


class _RetryableStatus(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


# Forget a consumer of the group once it holds no pending entry (a stopped or dead worker).
_DELETE_IDLE_CONSUMER: Final = """
if #redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2]) == 0 then
  return redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
end
return -1
"""

_RETRY_ON: Final = (_RetryableStatus, httpx.TimeoutException, httpx.TransportError)
_RETRYABLE_STATUSES: Final = frozenset({408, 425, 429})


@dataclass
class _Job:
    partition: int
    entry_id: str
    fields: dict[str, str]
    done: frozenset[str] = frozenset()
    """Refs of the URLs that already answered 2xx."""
    failures: int = 0


@dataclass(eq=False)
class _Outcome:
    job: _Job
    succeeded: set[str] = field(default_factory=set)
    error: str | None = None
    """``None``: every URL has the event now."""
    dead_lettered: bool = False
    dlq_written: bool = False


class Forwarder:
    """Delivers forward events to subscriber URLs (see the module docstring).

    Args:
        store: the gateway's Redis.
        urls: subscriber URLs; with none, :meth:`start` does nothing (no stream is read).
        secret: key of ``X-Sinchbot-Signature``; ``None`` sends events unsigned.
        worker_id: this process's consumer name; its liveness key (:func:`keys.alive`) must
            be kept fresh by the process's heartbeat, or other workers claim its entries.
        partitions: the partition count.
        max_deliveries: deliveries of one event before it goes to the dead-letter stream.
        timeout: seconds for one POST (connect, write, read).
        retry_attempts: POSTs to one URL within one delivery (stamina backoff between).
        retry_wait_initial, retry_wait_max: stamina's backoff bounds, in seconds.
        redelivery_delay: seconds from the start of a failed delivery to the next one.
        claim_interval: seconds between scans for retries due and dead workers' entries.
        claim_min_idle: seconds since its last delivery started before an entry is claimed
            from a dead worker: two workers never claim the same entry at once, and a
            delivery still running when a liveness key lapses is not doubled.
        batch_size: entries read per partition per poll.
        max_inflight: events being delivered at once by this worker.
        idle_interval: seconds between polls while there is nothing to do.
        http: an ``httpx.AsyncClient`` to use (closed by the caller); default: our own.
    """

    def __init__(
        self,
        store: Store,
        urls: Sequence[str],
        secret: str | None,
        *,
        worker_id: str,
        partitions: int,
        max_deliveries: int = 5,
        timeout: float = 10.0,
        retry_attempts: int = 3,
        retry_wait_initial: float = 0.5,
        retry_wait_max: float = 5.0,
        redelivery_delay: float = 30.0,
        claim_interval: float = 5.0,
        claim_min_idle: float = 60.0,
        batch_size: int = 50,
        max_inflight: int = 64,
        idle_interval: float = 0.25,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        if partitions < 1:
            raise ValueError("partitions must be at least 1")
        if max_deliveries < 1 or retry_attempts < 1:
            raise ValueError("max_deliveries and retry_attempts must be at least 1")
        for url in urls:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"forward URL {_safe_url(url)!r} must be an http(s) URL")
        self.store = store
        self.urls = list(dict.fromkeys(urls))
        self.secret = secret
        self.worker_id = worker_id
        self.partitions = partitions
        self.max_deliveries = max_deliveries
        self.timeout = timeout
        self.retry_attempts = retry_attempts
        self.retry_wait_initial = retry_wait_initial
        self.retry_wait_max = retry_wait_max
        self.redelivery_ms = max(1, round(redelivery_delay * 1000))
        self.claim_interval = claim_interval
        self.claim_min_idle_ms = max(1, round(claim_min_idle * 1000))
        self.batch_size = batch_size
        self.max_inflight = max_inflight
        self.idle_interval = idle_interval
        self._refs = {url: _url_ref(url) for url in self.urls}
        self._http = http
        self._own_http = http is None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._wake = asyncio.Event()
        self._jobs: dict[tuple[int, str], asyncio.Task[None]] = {}
        self._inflight: set[tuple[int, str]] = set()
        """Entries taken and not yet committed (delivering, or waiting for the flush)."""
        self._results: list[_Outcome] = []
        self._groups_ready = False
        self._sem = asyncio.Semaphore(max_inflight)
        self._delete_idle_consumer: Any = store.redis.register_script(_DELETE_IDLE_CONSUMER)

    @property
    def enabled(self) -> bool:
        """Whether there is anywhere to forward to."""
        return bool(self.urls)

    async def start(self) -> None:
        """Start consuming the forward streams (nothing happens without URLs)."""
        if not self.urls:
            log.info("forwarding off: no subscriber URLs")
            return
        if self._task is not None:
            return
        if self.secret is None:
            log.warning("forwarded events are unsigned: no forward secret configured")
        if self._http is None:
            self._http = httpx.AsyncClient(
                timeout=httpx.Timeout(self.timeout),
                follow_redirects=False,
                headers={"User-Agent": "sinchbot-forwarder"},
            )
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name=f"forwarder:{self.worker_id}")
        log.info(
            "forwarding events",
            urls=[_safe_url(u) for u in self.urls],
            worker=self.worker_id,
        )

    async def stop(self) -> None:
        """Stop reading, finish the deliveries in flight, record them, then return."""
        task, self._task = self._task, None
        if task is not None:
            self._stopping = True
            self._wake.set()
            try:
                await task
            finally:
                if self._own_http and self._http is not None:
                    await self._http.aclose()
                    self._http = None

    # ------------------------------------------------------------------ the loop

    async def _run(self) -> None:
        try:
            await self._loop()
            await self._drain()
            await self._leave()
        finally:  # cancelled: the deliveries in flight stop too (their entries stay pending)
            for job in list(self._jobs.values()):
                job.cancel()

    async def _loop(self) -> None:
        backoff = 0.0
        next_claim = 0.0
        while not self._stopping:
            try:
                await self._ensure_groups()
                await self._flush()
                if time.monotonic() >= next_claim:
                    await self._claim()
                    next_claim = time.monotonic() + self.claim_interval
                read = 0
                if len(self._jobs) < self.max_inflight:
                    read = await self._poll()
                backoff = 0.0
                if read == 0 and not self._results:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self.idle_interval):
                            await self._wake.wait()
                    self._wake.clear()
            except (RedisError, OSError) as exc:
                backoff = min(5.0, backoff * 2 or 0.1)
                log.warning("forwarder: redis unavailable", error=str(exc), retry_in=backoff)
                await asyncio.sleep(backoff)
            except Exception:
                backoff = min(5.0, backoff * 2 or 0.1)
                log.exception("forwarder: unexpected error", retry_in=backoff)
                await asyncio.sleep(backoff)

    async def _drain(self) -> None:
        """Let the deliveries in flight finish and record them (best effort)."""
        if self._jobs:
            await asyncio.gather(*self._jobs.values(), return_exceptions=True)
        for attempt in range(3):
            try:
                await self._flush()
                return
            except (RedisError, OSError) as exc:
                log.warning("forwarder: could not record deliveries", error=str(exc))
                await asyncio.sleep(0.1 * (attempt + 1))
        # Not recorded: the entries stay pending and are delivered again (at least once).

    async def _leave(self) -> None:
        """Remove this worker's consumer from every forward stream it holds nothing in."""
        try:
            pipe = self.store.redis.pipeline(transaction=False)
            for p in range(self.partitions):
                await self._delete_idle_consumer(
                    keys=[PartitionKeys(p).forward],
                    args=[FORWARD_GROUP, self.worker_id],
                    client=pipe,
                )
            await pipe.execute(raise_on_error=False)
        except (RedisError, OSError) as exc:
            log.warning("forwarder: could not leave the consumer groups", error=str(exc))

    async def _ensure_groups(self) -> None:
        if self._groups_ready:
            return
        pipe = self.store.redis.pipeline(transaction=False)
        for p in range(self.partitions):
            pipe.xgroup_create(PartitionKeys(p).forward, FORWARD_GROUP, id="0", mkstream=True)
        for result in await pipe.execute(raise_on_error=False):
            if isinstance(result, ResponseError) and "BUSYGROUP" not in str(result):
                raise result
            if isinstance(result, Exception) and not isinstance(result, ResponseError):
                raise result
        self._groups_ready = True

    async def _poll(self) -> int:
        """Read new entries from every partition (one pipeline) and start delivering them."""
        pipe = self.store.redis.pipeline(transaction=False)
        for p in range(self.partitions):
            pipe.xreadgroup(
                FORWARD_GROUP,
                self.worker_id,
                {PartitionKeys(p).forward: ">"},
                count=self.batch_size,
            )
        replies = await pipe.execute(raise_on_error=False)
        jobs: list[_Job] = []
        for p, reply in enumerate(replies):
            if isinstance(reply, ResponseError) and "NOGROUP" in str(reply):
                self._groups_ready = False  # the data was lost or flushed: recreate
                continue
            if isinstance(reply, Exception):
                raise reply
            for entry_id, fields in _stream_entries(reply):
                jobs.append(_Job(p, entry_id, text_map(fields)))
        for job in jobs:
            self._begin(job)
        return len(jobs)

    async def _claim(self) -> None:
        """Take back our own entries whose redelivery is due, and claim the entries of
        workers that are gone."""
        redis = self.store.redis
        pipe = redis.pipeline(transaction=False)
        for p in range(self.partitions):
            pipe.xpending(PartitionKeys(p).forward, FORWARD_GROUP)
        summaries = await pipe.execute(raise_on_error=False)
        owners: dict[int, list[str]] = {}
        for p, summary in enumerate(summaries):
            if isinstance(summary, ResponseError):
                continue  # NOGROUP: handled by the next poll
            if isinstance(summary, Exception):
                raise summary
            if summary and summary.get("pending"):
                owners[p] = [text(c["name"]) for c in summary.get("consumers") or []]
        if not owners:
            return
        others = sorted({c for names in owners.values() for c in names if c != self.worker_id})
        dead: set[str] = set()
        if others:
            pipe = redis.pipeline(transaction=False)
            for name in others:
                pipe.exists(alive(name))
            dead = {name for name, up in zip(others, await pipe.execute(), strict=True) if not up}
        claimed: list[_Job] = []
        for p, names in owners.items():
            stream = PartitionKeys(p).forward
            for name in names:
                if name == self.worker_id:
                    min_idle = self.redelivery_ms
                elif name in dead:
                    min_idle = self.claim_min_idle_ms
                else:
                    continue
                pending: list[dict[str, Any]] = await redis.xpending_range(
                    stream,
                    FORWARD_GROUP,
                    min="-",
                    max="+",
                    count=self.batch_size,
                    consumername=name,
                    idle=min_idle,
                )
                ids: list[Any] = [text(item["message_id"]) for item in pending]
                ids = [i for i in ids if (p, i) not in self._inflight]
                if not ids:
                    continue
                entries: list[Any] = await redis.xclaim(
                    stream, FORWARD_GROUP, self.worker_id, min_idle, ids
                )
                if name != self.worker_id:
                    log.info(
                        "forwarder: claimed entries of a dead worker",
                        worker=name,
                        count=len(entries),
                        partition=p,
                    )
                    await self._delete_idle_consumer(keys=[stream], args=[FORWARD_GROUP, name])
                for entry_id, fields in entries:
                    claimed.append(_Job(p, text(entry_id), text_map(fields or {})))
        if not claimed:
            return
        await self._load_state(claimed)
        for job in claimed:
            self._begin(job)

    async def _load_state(self, jobs: Sequence[_Job]) -> None:
        pipe = self.store.redis.pipeline(transaction=False)
        for job in jobs:
            pipe.hgetall(forward_state(PartitionKeys(job.partition), job.entry_id))
        for job, raw in zip(jobs, await pipe.execute(), strict=True):
            state = text_map(raw)
            job.failures = int(state.pop(_FAILURES, "0") or 0)
            job.done = frozenset(state)

    # ------------------------------------------------------------------ delivering

    def _begin(self, job: _Job) -> None:
        ref = (job.partition, job.entry_id)
        if ref in self._inflight:
            return
        self._inflight.add(ref)
        self._jobs[ref] = asyncio.create_task(self._deliver(job), name=f"forward:{job.entry_id}")

    async def _deliver(self, job: _Job) -> None:
        ref = (job.partition, job.entry_id)
        try:
            outcome = await self._attempt(job)
        except Exception as exc:  # never lose track of an entry
            log.exception("forwarder: delivery crashed", entry=job.entry_id)
            outcome = _Outcome(job, error=f"internal error: {type(exc).__name__}")
        finally:
            self._jobs.pop(ref, None)
        self._results.append(outcome)
        self._wake.set()

    async def _attempt(self, job: _Job) -> _Outcome:
        if not job.fields:
            return _Outcome(job)  # the entry is gone (trimmed): nothing left to deliver
        body = _body(job.fields)
        if body is None:
            return _Outcome(job, error="malformed forward entry", dead_lettered=True)
        event_id, event_type = job.fields["id"], job.fields["type"]
        todo = [url for url in self.urls if self._refs[url] not in job.done]
        errors = await asyncio.gather(
            *(self._post(url, body, event_id, event_type) for url in todo)
        )
        outcome = _Outcome(job)
        failed = []
        for url, error in zip(todo, errors, strict=True):
            if error is None:
                outcome.succeeded.add(self._refs[url])
            else:
                failed.append(f"{_safe_url(url)}: {error}")
        if failed:
            outcome.error = "; ".join(failed)
        return outcome

    async def _post(self, url: str, body: bytes, event_id: str, event_type: str) -> str | None:
        """POST one event to one URL, with retries; ``None`` on 2xx, else why not."""
        assert self._http is not None
        try:
            async for attempt in stamina.retry_context(
                on=_RETRY_ON,
                attempts=self.retry_attempts,
                timeout=None,
                wait_initial=self.retry_wait_initial,
                wait_max=self.retry_wait_max,
            ):
                with attempt:
                    headers = {
                        "Content-Type": "application/json",
                        EVENT_ID_HEADER: event_id,
                        EVENT_TYPE_HEADER: event_type,
                    }
                    if self.secret is not None:
                        headers[SIGNATURE_HEADER] = sign(self.secret, body, int(time.time()))
                    async with self._sem:
                        response = await self._http.post(url, content=body, headers=headers)
                    status = response.status_code
                    if status >= 500 or status in _RETRYABLE_STATUSES:
                        raise _RetryableStatus(status)
                    if not 200 <= status < 300:
                        return f"HTTP {status}"
        except _RetryableStatus as exc:
            return f"HTTP {exc.status}"
        except httpx.TimeoutException:
            return "timeout"
        except httpx.TransportError as exc:
            return f"connection failed ({type(exc).__name__})"
        return None

    # ------------------------------------------------------------------ recording

    async def _flush(self) -> None:
        """Record finished deliveries: one batch per partition (acks, progress), plus one
        pipeline for the dead letters."""
        if not self._results:
            return
        outcomes = list(self._results)
        for outcome in outcomes:
            if outcome.error is not None and outcome.job.failures + 1 >= self.max_deliveries:
                outcome.dead_lettered = True
        await self._dead_letter([o for o in outcomes if o.dead_lettered])
        by_partition: dict[int, list[_Outcome]] = defaultdict(list)
        for outcome in outcomes:
            by_partition[outcome.job.partition].append(outcome)
        for p, group in by_partition.items():
            keys = PartitionKeys(p)
            batch = Batch()
            done = [o for o in group if o.error is None or o.dead_lettered]
            batch.xack(keys.forward, FORWARD_GROUP, [o.job.entry_id for o in done])
            for o in done:
                batch.delete(forward_state(keys, o.job.entry_id))
            for o in group:
                if o.error is not None and not o.dead_lettered:
                    progress = dict.fromkeys(o.succeeded, "1")
                    progress[_FAILURES] = str(o.job.failures + 1)
                    batch.hset(forward_state(keys, o.job.entry_id), progress, _STATE_TTL_MS)
            await batch.commit(self.store)
            for o in group:
                self._results.remove(o)
                self._inflight.discard((p, o.job.entry_id))
                self._log_outcome(o)

    def _log_outcome(self, outcome: _Outcome) -> None:
        job = outcome.job
        event_type = job.fields.get("type", "?")
        if outcome.error is None:
            log.debug("forwarded event", entry=job.entry_id, type=event_type)
        elif outcome.dead_lettered:
            log.error(
                "forward event dead-lettered",
                entry=job.entry_id,
                type=event_type,
                deliveries=job.failures + 1,
                error=outcome.error,
            )
        else:
            log.warning(
                "forward delivery failed; will retry",
                entry=job.entry_id,
                type=event_type,
                deliveries=job.failures + 1,
                error=outcome.error,
            )

    async def _dead_letter(self, outcomes: Iterable[_Outcome]) -> None:
        """Copy entries to the dead-letter stream (its own step: the DLQ is not in the
        partition's hash slot; a crash before the ack leaves a harmless duplicate)."""
        outcomes = [o for o in outcomes if not o.dlq_written]
        if not outcomes:
            return
        await dlq.dead_letter(
            self.store.redis,
            [
                dlq.DeadLetter(
                    source=PartitionKeys(o.job.partition).forward,
                    entry=o.job.entry_id,
                    partition=o.job.partition,
                    group=FORWARD_GROUP,
                    kind="forward",
                    fields=o.job.fields,
                    reason=o.error or "",
                    deliveries=o.job.failures + 1,
                )
                for o in outcomes
            ],
        )
        for o in outcomes:
            o.dlq_written = True


def _body(fields: Mapping[str, str]) -> bytes | None:
    """The JSON body of a forward entry, or ``None`` if the entry is malformed."""
    try:
        event = {
            "id": fields["id"],
            "type": fields["type"],
            "created": float(fields["created"]),
            "data": json.loads(fields["data"]),
        }
    except (KeyError, ValueError):
        return None
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode()


def _stream_entries(reply: Any) -> list[tuple[str, Any]]:
    """Entries of a one-stream XREADGROUP reply (RESP2 ``[[stream, entries]]`` or RESP3
    ``{stream: [entries]}``)."""
    if not reply:
        return []
    if isinstance(reply, dict):
        groups = [v[0] if v and isinstance(v[0], list) else v for v in reply.values()]
    else:
        groups = [item[1] for item in reply]
    return [(text(entry_id), fields) for group in groups for entry_id, fields in group]
