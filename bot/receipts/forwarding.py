"""Event forwarding: the connector's triggers, delivered to downstream systems.

The handler commits a forward event (:mod:`bot.receipts.forward_events`: the event types, the
request, the signature) into its partition's forward stream with the handling of the
provider event. The :class:`Forwarder` of the worker process holding the partition's lease
(consumer group ``forwarder``, built on the partitioned stream consumer
:mod:`bot.streams.consumer`) POSTs it to every configured subscriber URL. The names of
:mod:`bot.receipts.forward_events` are importable from here too.

Delivery
    An event is acknowledged (and deleted from the stream) once **every** URL answered 2xx.
    Each delivery POSTs to the URLs that have not succeeded yet, retrying with exponential
    backoff and jitter (stamina) on 5xx, 408, 429, timeouts and connection errors. The URLs
    that succeeded are remembered in a small per-event hash, so a later delivery never
    re-posts to them. An event still not delivered is retried after ``redelivery_delay``
    (its failed deliveries are counted in the partition's failures hash, field
    ``fwd:<entry>``); after ``max_deliveries`` deliveries it goes to the dead-letter stream
    (``sinchbot dlq``) and is acknowledged. Deliveries of a partition run concurrently (at
    most ``max_inflight`` per worker), in no particular order. When a partition moves to
    another worker (a crash, a rebalance), the new lease holder takes over every pending
    event and delivers it again first; a released partition first finishes and records its
    deliveries in flight. A crash between a subscriber's 2xx and our record of it re-posts
    once.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import urlsplit

import httpx
import stamina
import structlog

from bot.receipts.forward_events import (
    EVENT_ID_HEADER,
    EVENT_TYPE_HEADER,
    SIGNATURE_HEADER,
    event_for,
    forward,
    forward_event,
    sign,
    verify,
)
from bot.storage.keys import FORWARD_GROUP, PREFIX, PartitionKeys
from bot.storage.store import Batch, CommitConflict, Store, text_map
from bot.streams.consumer import Partition, PartitionedConsumer
from bot.streams.leases import WorkerRegistry
from bot.streams.reader import Entry, Fenced, Letter, StreamSpec

__all__ = [
    "EVENT_ID_HEADER",
    "EVENT_TYPE_HEADER",
    "FORWARD",
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

_STATE_TTL_MS: Final = 7 * 86400 * 1000
"""A forward-state hash outlives any retry schedule; it is deleted when the event is acked."""


def forward_state(keys: PartitionKeys, entry_id: str) -> str:
    """Hash of one forward entry's progress: a field per URL that answered 2xx (a short
    hash of the URL), written when a delivery failed for another URL. Deleted with the
    entry."""
    return f"{PREFIX}:{keys.tag}:fwdst:{entry_id}"


# ------------------------------------------------------------------------------- consuming


FORWARD: Final = StreamSpec(
    kind="forward",
    group=FORWARD_GROUP,
    stream=lambda keys: keys.forward,
    failure_prefix="fwd:",
    noun="forward event",
)
"""The forward stream of each partition, as the forwarder reads it."""


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


_RETRY_ON: Final = (_RetryableStatus, httpx.TimeoutException, httpx.TransportError)
_RETRYABLE_STATUSES: Final = frozenset({408, 425, 429})


@dataclass
class _Job:
    """One forward entry being delivered, or waiting to be delivered again."""

    entry_id: str
    fields: dict[str, str]
    done: frozenset[str] = frozenset()
    """Refs of the URLs that already answered 2xx."""
    failures: int = 0
    """Deliveries that failed so far."""
    started: float = 0.0
    """When its last delivery started (monotonic seconds)."""


@dataclass(eq=False)
class _Outcome:
    job: _Job
    succeeded: set[str] = field(default_factory=set)
    error: str | None = None
    """``None``: every URL has the event now."""
    dead_lettered: bool = False


class _Lane(Partition):
    """A partition's deliveries: running, finished and not recorded yet, and failed ones
    waiting for their redelivery."""

    def __init__(self, forwarder: Forwarder, partition: int) -> None:
        super().__init__(forwarder, partition)
        self.delivering: dict[str, asyncio.Task[None]] = {}
        self.finished: list[_Outcome] = []
        self.later: dict[str, _Job] = {}

    def holds(self, entry_id: str) -> bool:
        return (
            entry_id in self.delivering
            or entry_id in self.later
            or any(o.job.entry_id == entry_id for o in self.finished)
        )


class Forwarder(PartitionedConsumer[_Lane]):
    """Delivers forward events to subscriber URLs (see the module docstring): the lease
    holder of each partition consumes that partition's forward stream.

    Args:
        store: the gateway's Redis.
        urls: subscriber URLs; with none, :meth:`start` does nothing (no stream is read).
        secret: key of ``X-Sinchbot-Signature``; ``None`` sends events unsigned.
        registry: this process's :class:`~bot.streams.leases.WorkerRegistry`: the
            forwarder consumes the partitions whose leases it holds.
        max_deliveries: deliveries of one event before it goes to the dead-letter stream.
        timeout: seconds for one POST (connect, write, read).
        retry_attempts: POSTs to one URL within one delivery (stamina backoff between).
        retry_wait_initial, retry_wait_max: stamina's backoff bounds, in seconds.
        redelivery_delay: seconds from the start of a failed delivery to the next one.
        batch_size: entries read per partition at a time.
        max_inflight: events being delivered at once by this worker (all partitions).
        idle_interval: longest wait for new entries before reading again (checking the
            lease).
        drain_timeout: seconds a released partition may take to finish its deliveries in
            flight and record them; then they stop (and are delivered again by the next
            owner).
        http: an ``httpx.AsyncClient`` to use (closed by the caller); default: our own.
    """

    leave_group = True

    def __init__(
        self,
        store: Store,
        urls: Sequence[str],
        secret: str | None,
        *,
        registry: WorkerRegistry,
        max_deliveries: int = 5,
        timeout: float = 10.0,
        retry_attempts: int = 3,
        retry_wait_initial: float = 0.5,
        retry_wait_max: float = 5.0,
        redelivery_delay: float = 30.0,
        batch_size: int = 50,
        max_inflight: int = 64,
        idle_interval: float = 1.0,
        drain_timeout: float = 30.0,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        if max_deliveries < 1 or retry_attempts < 1:
            raise ValueError("max_deliveries and retry_attempts must be at least 1")
        if batch_size < 1 or max_inflight < 1:
            raise ValueError("batch_size and max_inflight must be at least 1")
        for url in urls:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"forward URL {_safe_url(url)!r} must be an http(s) URL")
        super().__init__(
            store,
            registry,
            FORWARD,
            block=idle_interval,
            retry_delay=0.1,
            retry_delay_max=5.0,
            drain_timeout=drain_timeout,
        )
        self.urls = list(dict.fromkeys(urls))
        self.secret = secret
        self.max_deliveries = max_deliveries
        self.timeout = timeout
        self.retry_attempts = retry_attempts
        self.retry_wait_initial = retry_wait_initial
        self.retry_wait_max = retry_wait_max
        self.redelivery_delay = redelivery_delay
        self.batch_size = batch_size
        self.max_inflight = max_inflight
        self._refs = {url: _url_ref(url) for url in self.urls}
        self._http = http
        self._own_http = http is None
        self._delivering = 0
        """Deliveries running, all partitions together (at most ``max_inflight``)."""
        self._sem = asyncio.Semaphore(max_inflight)

    @property
    def enabled(self) -> bool:
        """Whether there is anywhere to forward to."""
        return bool(self.urls)

    async def start(self) -> None:
        """Start consuming the forward streams of the partitions we hold (nothing happens
        without URLs)."""
        if not self.urls:
            log.info("forwarding off: no subscriber URLs")
            return
        if self.secret is None:
            log.warning("forwarded events are unsigned: no forward secret configured")
        if self._http is None:
            self._http = httpx.AsyncClient(
                timeout=httpx.Timeout(self.timeout),
                follow_redirects=False,
                headers={"User-Agent": "sinchbot-forwarder"},
            )
        await super().start()
        log.info(
            "forwarding events",
            urls=[_safe_url(u) for u in self.urls],
            worker=self.worker_id,
        )

    async def stop(self) -> None:
        """Stop reading, finish the deliveries in flight and record them, then return."""
        try:
            await super().stop()
        finally:
            if self._own_http and self._http is not None:
                await self._http.aclose()
                self._http = None

    # ------------------------------------------------------------------ the partition task

    def new_partition(self, partition: int) -> _Lane:
        return _Lane(self, partition)

    def room(self, part: _Lane) -> int:
        return min(self.batch_size, self.max_inflight - self._delivering)

    def idle_timeout(self, part: _Lane) -> float:
        if not part.later:
            return self.block
        due = min(job.started for job in part.later.values()) + self.redelivery_delay
        return max(0.001, min(self.block, due - time.monotonic()))

    async def tend(self, part: _Lane) -> None:
        """Record the finished deliveries, start the redeliveries that are due."""
        await self._record(part)
        now = time.monotonic()
        for entry_id, job in list(part.later.items()):
            if self._delivering >= self.max_inflight:
                break
            if job.started + self.redelivery_delay <= now:
                del part.later[entry_id]
                self._begin(part, job)

    async def handle(self, part: _Lane, entries: Sequence[Entry]) -> None:
        """Start delivering entries just read (the progress of those that failed before
        is loaded first)."""
        jobs = [
            _Job(entry.id, entry.text_fields(), failures=part.stream.failures.get(entry.id, 0))
            for entry in entries
            if not part.holds(entry.id)
        ]
        retried = [job for job in jobs if job.failures]
        if retried:
            async with self.redis.pipeline(transaction=False) as pipe:
                for job in retried:
                    pipe.hgetall(forward_state(part.keys, job.entry_id))
                states = await pipe.execute()
            for job, state in zip(retried, states, strict=True):
                job.done = frozenset(text_map(state))
        for job in jobs:
            self._begin(part, job)

    async def finish(self, part: _Lane) -> None:
        """Let the deliveries in flight finish and record them; those waiting for a
        redelivery stay pending for the next owner."""
        if part.delivering:
            await asyncio.gather(*part.delivering.values(), return_exceptions=True)
        await self._record(part)

    def ended(self, part: _Lane) -> None:
        for task in part.delivering.values():
            task.cancel()  # their entries stay pending: the next owner delivers them

    # ------------------------------------------------------------------ delivering

    def _begin(self, part: _Lane, job: _Job) -> None:
        job.started = time.monotonic()
        self._delivering += 1
        part.delivering[job.entry_id] = asyncio.create_task(
            self._deliver(part, job), name=f"forward:{job.entry_id}"
        )

    async def _deliver(self, part: _Lane, job: _Job) -> None:
        try:
            outcome = await self._attempt(job)
        except Exception as exc:  # never lose track of an entry
            part.log.exception("forwarder: delivery crashed", entry=job.entry_id)
            outcome = _Outcome(job, error=f"internal error: {type(exc).__name__}")
        finally:
            part.delivering.pop(job.entry_id, None)
            was_full = self._delivering >= self.max_inflight
            self._delivering -= 1
        part.finished.append(outcome)
        part.wake_up()
        if was_full:  # partitions waiting for room may read again
            for other in list(self.parts.values()):
                other.wake_up()

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

    async def _record(self, part: _Lane) -> None:
        """Record the finished deliveries in one fenced batch: acknowledge what every URL
        took (or what is dead-lettered, copied to the dead-letter stream first); count a
        failure and remember the URLs that took it for the rest, which wait for their
        redelivery."""
        outcomes = list(part.finished)
        if not outcomes:
            return
        stream = part.stream
        for outcome in outcomes:
            if outcome.error is not None and outcome.job.failures + 1 >= self.max_deliveries:
                outcome.dead_lettered = True
        letters = [
            Letter(
                part.partition,
                o.job.entry_id,
                o.job.fields,
                o.error or "",
                o.job.failures + 1,
                {"type": o.job.fields.get("type", "?")},
            )
            for o in outcomes
            if o.dead_lettered
        ]
        self.tally.dead_lettered += await stream.dead_letter(letters)
        batch = stream.fence(Batch())
        done = [o.job.entry_id for o in outcomes if o.error is None or o.dead_lettered]
        stream.ack(batch, done)
        for entry_id in done:
            batch.delete(forward_state(part.keys, entry_id))
        failed: dict[str, int] = {}
        for o in outcomes:
            if o.error is not None and not o.dead_lettered:
                state = forward_state(part.keys, o.job.entry_id)
                if o.succeeded:
                    batch.hset(state, dict.fromkeys(o.succeeded, "1"), _STATE_TTL_MS)
                failed[o.job.entry_id] = stream.add_failure(batch, o.job.entry_id)
        try:
            await batch.commit(self.store)
        except CommitConflict as exc:
            if exc.reason == "fenced":
                raise Fenced from exc
            raise
        stream.settle(done, failed)
        for o in outcomes:
            part.finished.remove(o)
            job = o.job
            if job.entry_id in failed:
                job.failures = failed[job.entry_id]
                job.done = job.done | o.succeeded
                part.later[job.entry_id] = job
                part.log.warning(
                    "forward delivery failed; will retry",
                    entry=job.entry_id,
                    type=job.fields.get("type", "?"),
                    deliveries=job.failures,
                    error=o.error,
                )
            elif not o.dead_lettered:
                part.log.debug("forwarded event", entry=job.entry_id, type=job.fields.get("type"))


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
