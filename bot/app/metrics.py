"""Prometheus metrics of one gateway process: ``GET /metrics``.

Each :class:`~bot.app.gateway.Gateway` has a :class:`GatewayMetrics` with a registry of its
own (no global state: tests run many gateways in one process). Most figures are not counted
twice: a collector reads the counters the parts keep anyway at scrape time
(:class:`~bot.sender.loop.SenderCounters`, :class:`~bot.inbox.worker.InboxStats`,
:attr:`Ingress.counts <bot.ingress.admission.Ingress.counts>`, the timer and deferred pumps).
Only what nobody counted is observed here: the handler latency (the inbox's ``on_handled``
hook) and the handler errors per router (the engine's ``on_error`` hook).

The queue depths are read from Redis when scraped, in one pipeline of ``4 * partitions + 1``
O(1) commands (``XLEN``/``ZCARD``), bounded by :data:`DEPTH_TIMEOUT`. They are the totals
over every partition, the same in every process: aggregate them across processes with
``max``, not ``sum``. When Redis does not answer, the scrape still succeeds: the depth gauges
are left out and ``sinchbot_redis_up`` is 0.

Counters start at zero when the process starts and are per process; every ``sinchbot
serve`` process is scraped on its own port (no multiprocess mode). The endpoint is open and
shows aggregate numbers only (no phone numbers, no message text, no secrets): keep it off
the public internet anyway (bind it to an internal network, or block ``/metrics`` at the
reverse proxy). Every metric is listed in docs/operations.md.
"""

from __future__ import annotations

import asyncio
from collections import Counter as Tally
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Final, Protocol

import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from bot.core.config import Settings
from bot.inbox.timers import TimerPump
from bot.inbox.worker import InboxConsumer
from bot.ingress.admission import Ingress
from bot.outbox.deferred import DeferredPump
from bot.sender.loop import Sender
from bot.storage.connection import RedisClient
from bot.storage.keys import DLQ, PartitionKeys
from bot.streams.leases import WorkerRegistry


class Metered(Protocol):
    """The parts of a gateway the metrics read at scrape time
    (:class:`bot.app.gateway.Gateway` is the one implementation)."""

    @property
    def settings(self) -> Settings: ...
    @property
    def redis(self) -> RedisClient: ...
    @property
    def role(self) -> str: ...
    @property
    def api_sends(self) -> Tally[str]: ...
    @property
    def registry(self) -> WorkerRegistry: ...
    @property
    def ingress(self) -> Ingress: ...
    @property
    def inbox(self) -> InboxConsumer: ...
    @property
    def timers(self) -> TimerPump: ...
    @property
    def deferred(self) -> DeferredPump: ...
    @property
    def sender(self) -> Sender: ...


__all__ = [
    "BATCH_BUCKETS",
    "CONTENT_TYPE",
    "DEPTH_TIMEOUT",
    "HANDLER_BUCKETS",
    "METRICS_PATH",
    "RETRY_CAUSES",
    "GatewayMetrics",
]

log = structlog.get_logger(__name__)

METRICS_PATH: Final = "/metrics"
CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
"""The Prometheus text format (every Prometheus version reads it)."""
BATCH_BUCKETS: Final = (1, 2, 5, 10, 20, 50, 100)
"""Buckets of ``sinchbot_send_batch_size`` (messages per provider call; 100 is the most)."""
HANDLER_BUCKETS: Final = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
)
"""Buckets of ``sinchbot_handler_seconds`` (a handler call times out after 30 s)."""
RETRY_CAUSES: Final = ("server_error", "timeout", "transport", "rate_limited", "rejected")
"""Causes of ``sinchbot_send_retries_total`` (always exported, zero included)."""
EVENT_KINDS: Final = ("message", "opt_out", "receipt")
"""Kinds of provider events the webhooks admit."""
INTERNAL_KINDS: Final = ("timer", "timeout", "command")
"""Kinds of inbox events that do not come from the provider (counted when handled)."""
RECEIPT_STATUSES: Final = ("enroute", "submitted", "delivered", "expired", "rejected", "failed")
DEPTH_TIMEOUT: Final = 2.0
"""Seconds a scrape waits for the depths from Redis before leaving them out."""

_DEPTHS: Final = (
    ("sinchbot_inbox_depth", "Inbox entries not handled yet (every partition)."),
    ("sinchbot_outbox_depth", "Outbox entries not sent yet (every partition)."),
    ("sinchbot_deferred_depth", "Sends held back by quiet hours (every partition)."),
    ("sinchbot_timers_pending", "Timers scheduled and not fired yet (every partition)."),
)


class GatewayMetrics:
    """The metrics of one gateway: a registry, the two hooks, the ``/metrics`` handler.

    Args:
        gateway: whose parts are read at scrape time (only attributes read then: the
            metrics may be built before the parts are).
    """

    def __init__(self, gateway: Metered) -> None:
        self.gateway = gateway
        self.registry = CollectorRegistry()
        self.handler_seconds = Histogram(
            "sinchbot_handler_seconds",
            "Seconds per handler call of an inbox event (failed and repeated calls included).",
            ["kind"],
            buckets=HANDLER_BUCKETS,
            registry=self.registry,
        )
        self._handler_seconds: dict[str, Histogram] = {}
        """``handler_seconds``' child per kind."""
        self.handler_errors = Counter(
            "sinchbot_handler_errors",
            "Exceptions raised while handling an event, by root router (compliance, a "
            "plugin, keywords); every attempt counts.",
            ["router"],
            registry=self.registry,
        )
        self.registry.register(_Collector(self))
        self.depths: dict[str, float] | None = None
        """The depths read at the last scrape (``None``: Redis did not answer)."""
        self._redis_failing = False

    # ------------------------------------------------------------------ hooks

    def handled(self, kind: str, seconds: float) -> None:
        """The inbox's ``on_handled`` hook: one handler call of a ``kind`` event."""
        child = self._handler_seconds.get(kind)
        if child is None:  # labels() looks the child up under a lock: once per kind
            child = self._handler_seconds[kind] = self.handler_seconds.labels(kind)
        child.observe(seconds)

    def handler_error(self, router: str, _exc: Exception) -> None:
        """The engine's ``on_error`` hook: handling raised in root router ``router``."""
        self.handler_errors.labels(router).inc()

    def know_routers(self, names: Iterable[str]) -> None:
        """Export ``sinchbot_handler_errors_total`` at 0 for these routers from the start
        (a rate over a series that appears only at its first error misses that error)."""
        for name in names:
            self.handler_errors.labels(name)

    # ------------------------------------------------------------------ scraping

    async def refresh(self) -> None:
        """Read the depths from Redis (one pipeline); on failure leave them out."""
        partitions = self.gateway.settings.partitions
        try:
            async with asyncio.timeout(DEPTH_TIMEOUT):
                pipe = self.gateway.redis.pipeline(transaction=False)
                for p in range(partitions):
                    keys = PartitionKeys(p)
                    pipe.xlen(keys.inbox)
                    pipe.xlen(keys.outbox)
                    pipe.zcard(keys.deferred)
                    pipe.zcard(keys.timers)
                pipe.xlen(DLQ)
                values = [int(v) for v in await pipe.execute()]
        except Exception as exc:  # Redis down or slow: the in-memory figures still count
            self.depths = None
            if not self._redis_failing:
                log.warning("metrics: queue depths unavailable", error=type(exc).__name__)
            self._redis_failing = True
            return
        self._redis_failing = False
        depths = {
            name: float(sum(values[i : 4 * partitions : 4])) for i, (name, _) in enumerate(_DEPTHS)
        }
        depths["sinchbot_dlq_depth"] = float(values[-1])
        self.depths = depths

    def exposition(self) -> bytes:
        """The current metrics in the Prometheus text format (depths as last refreshed)."""
        return generate_latest(self.registry)

    async def handle(self, _request: web.Request) -> web.Response:
        """``GET /metrics``."""
        await self.refresh()
        return web.Response(body=self.exposition(), headers={"Content-Type": CONTENT_TYPE})

    def route(self) -> web.RouteDef:
        return web.get(METRICS_PATH, self.handle, name="metrics", allow_head=False)


def _counter(
    name: str, documentation: str, value: float | None = None, labels: Sequence[str] = ()
) -> CounterMetricFamily:
    return CounterMetricFamily(name, documentation, value=value, labels=labels or None)


def _labelled(
    name: str,
    documentation: str,
    label: str,
    counts: Mapping[str, float],
    always: Iterable[str] = (),
) -> CounterMetricFamily:
    family = CounterMetricFamily(name, documentation, labels=[label])
    for key in sorted(set(always) | set(counts)):
        family.add_metric([key], counts.get(key, 0))
    return family


def _histogram(
    name: str, documentation: str, sizes: Mapping[int, int], buckets: Sequence[float]
) -> HistogramMetricFamily:
    """A histogram of the observations counted in ``sizes`` (value → times observed)."""
    cumulative = [
        (str(float(bound)), float(sum(n for size, n in sizes.items() if size <= bound)))
        for bound in buckets
    ]
    cumulative.append(("+Inf", float(sum(sizes.values()))))
    total = float(sum(size * n for size, n in sizes.items()))
    return HistogramMetricFamily(name, documentation, buckets=cumulative, sum_value=total)


class _Collector(Collector):
    """Reads the parts' own counters at scrape time."""

    def __init__(self, metrics: GatewayMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        gateway = self.metrics.gateway
        sender = gateway.sender.counters
        inbox = gateway.inbox.stats

        info = GaugeMetricFamily(
            "sinchbot_worker", "This process (always 1).", labels=["worker", "role"]
        )
        info.add_metric([gateway.registry.worker_id, gateway.role], 1)
        yield info

        inbound = Tally({(k, r): float(n) for (k, r), n in gateway.ingress.counts.items()})
        for kind in INTERNAL_KINDS:
            inbound[kind, "accepted"] += inbox.kinds[kind]
        family = CounterMetricFamily(
            "sinchbot_inbound_events",
            "Provider events the webhooks admitted, by kind and result (accepted: new and "
            "stored; duplicate: seen before); timers and commands as they are handled.",
            labels=["kind", "result"],
        )
        for kind in EVENT_KINDS:
            for result in ("accepted", "duplicate"):
                inbound.setdefault((kind, result), 0)
        for (kind, result), count in sorted(inbound.items()):
            family.add_metric([kind, result], count)
        yield family

        yield _labelled(
            "sinchbot_events_handled",
            "Inbox events handled and committed, by kind.",
            "kind",
            inbox.kinds,
            (*EVENT_KINDS, *INTERNAL_KINDS),
        )
        yield _labelled(
            "sinchbot_receipts",
            "Delivery receipts handled, by status (other: a status sinchbot does not know).",
            "status",
            inbox.receipts,
            RECEIPT_STATUSES,
        )
        yield _labelled(
            "sinchbot_outbound_messages",
            "Outbound messages by outcome: queued and deferred (by handlers and the API; "
            "deferred: held back by quiet hours), released (deferred sends "
            "moved to the outbox), sent (accepted by the provider), failed, suppressed "
            "(recipient opted out), dead_lettered.",
            "outcome",
            {
                "queued": inbox.queued - inbox.deferred + gateway.api_sends["queued"],
                "deferred": inbox.deferred + gateway.api_sends["deferred"],
                "released": gateway.deferred.released,
                "sent": sender.messages_sent,
                "failed": sender.failed,
                "suppressed": sender.suppressed,
                "dead_lettered": sender.dead_lettered,
            },
        )
        yield _counter(
            "sinchbot_provider_calls",
            "Provider send calls (every attempt, bisection halves included).",
            sender.calls,
        )
        yield _counter(
            "sinchbot_provider_refusals",
            "Provider calls refused without judging the messages (401, 403...).",
            sender.refused,
        )
        yield _labelled(
            "sinchbot_send_retries",
            "Provider calls retried, by cause.",
            "cause",
            sender.retries,
            RETRY_CAUSES,
        )
        yield _counter(
            "sinchbot_throttle_wait_seconds",
            "Seconds the sender waited for the shared provider throttle.",
            sender.throttle_wait_seconds,
        )
        yield _counter(
            "sinchbot_possible_duplicates",
            "Messages whose send may have reached the provider twice (unknown outcomes, "
            "crashed workers' in-flight batches).",
            sender.possible_duplicates,
        )
        yield _counter(
            "sinchbot_outbox_claimed",
            "Outbox entries taken over from other workers.",
            sender.claimed,
        )
        yield _labelled(
            "sinchbot_sender_errors",
            "Times the send loop failed and started over, by exception type.",
            "type",
            sender.errors,
        )
        yield _histogram(
            "sinchbot_send_batch_size",
            "Messages per successful provider call.",
            sender.batch_sizes,
            BATCH_BUCKETS,
        )
        yield _labelled(
            "sinchbot_dead_letters",
            "Entries moved to the dead-letter stream, by source stream.",
            "source",
            {"inbox": inbox.dead_lettered, "outbox": sender.dead_lettered},
        )
        yield _counter(
            "sinchbot_inbox_handler_failures",
            "Inbox handler calls that failed (each retry counts).",
            inbox.failed,
        )
        yield _counter(
            "sinchbot_inbox_conflicts",
            "Inbox batches handled again because a session changed underneath.",
            inbox.conflicts,
        )
        slots = gateway.inbox.slots
        yield _counter(
            "sinchbot_inbox_turns_overdue",
            "Times an inbox partition waited its patience for a work slot and went ahead "
            "anyway (slow handlers holding the slots; SINCHBOT_INBOX_CONCURRENCY).",
            slots.overflows if slots is not None else 0,
        )
        yield _counter(
            "sinchbot_inbox_errors",
            "Times an inbox partition task backed off and started over (Redis errors).",
            inbox.errors,
        )
        yield _counter(
            "sinchbot_timers_fired", "Timers moved into the inbox when due.", gateway.timers.fired
        )
        yield GaugeMetricFamily(
            "sinchbot_owned_partitions",
            "Partitions whose lease this process holds.",
            value=len(gateway.registry.owned),
        )
        yield GaugeMetricFamily(
            "sinchbot_sender_buffered",
            "Outbox entries read by this process's sender and waiting for a call.",
            value=gateway.sender.buffered,
        )
        depths = self.metrics.depths
        yield GaugeMetricFamily(
            "sinchbot_redis_up",
            "1 when Redis answered the last scrape's depth queries, else 0 (depths left out).",
            value=0 if depths is None else 1,
        )
        if depths is not None:
            for name, documentation in (
                *_DEPTHS,
                ("sinchbot_dlq_depth", "Entries in the dead-letter stream."),
            ):
                yield GaugeMetricFamily(name, documentation, value=depths[name])
