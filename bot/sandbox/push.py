"""Outbound HTTP of the sandbox: every push to a ``callback_url``, a registered webhook or the
configured ``webhook_url`` / ``receipt_url`` goes through one :class:`Pusher`.

A fixed pool of workers takes pushes from a queue, so API handlers never wait for a push and
the number of connections stays bounded. A push that fails (no 2xx, a connection error or a
timeout) is put back on the queue after its retry delay, by a timer rather than a sleeping
task. When a signature key is enabled each attempt is signed anew (fresh ``Date``).
:class:`Pending` counts everything not finished yet, which is what ``wait_idle`` waits for.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import formatdate

import aiohttp
from yarl import URL

from bot.core.aio import cancel_and_wait
from bot.sandbox.state import Stats
from bot.sinch.signatures import SigningKey

__all__ = ["Pending", "Push", "Pusher", "Rendered"]

log = logging.getLogger(__name__)

USER_AGENT = "sinchbot-sandbox"


class Pending:
    """A counter of unfinished work with an event that is set whenever it is zero."""

    def __init__(self) -> None:
        self._count = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def count(self) -> int:
        return self._count

    def add(self, n: int = 1) -> None:
        self._count += n
        if self._count > 0:
            self._idle.clear()

    def done(self, n: int = 1) -> None:
        self._count = max(0, self._count - n)
        if self._count == 0:
            self._idle.set()

    def reset(self) -> None:
        self._count = 0
        self._idle.set()

    async def wait(self) -> None:
        await self._idle.wait()


@dataclass(slots=True, frozen=True)
class Rendered:
    """One attempt's request body."""

    body: bytes
    content_type: str | None
    query: str | None = None
    """For GET and DELETE webhooks: the payload travels as the query string."""


@dataclass(slots=True, eq=False)
class Push:
    """One HTTP request the provider makes, with its retry policy.

    ``render(retry_count)`` builds the body of each attempt (templates may use
    ``$retryCount``); ``delay(n)`` is the wait before retry ``n`` (1-based).
    """

    url: str
    render: Callable[[int], Rendered]
    kind: str
    """``callback``, ``webhook`` or ``connector`` (statistics only)."""
    method: str = "POST"
    headers: dict[str, str] = field(default_factory=dict)
    attempts: int = 1
    delay: Callable[[int], float] = lambda _: 0.0
    timeout: float = 10.0
    attempt: int = 0


class Pusher:
    """The worker pool. :meth:`start` and :meth:`close` bound its lifetime."""

    def __init__(
        self,
        *,
        stats: Stats,
        pending: Pending,
        signing_key: Callable[[], SigningKey | None],
        concurrency: int = 64,
    ) -> None:
        self._stats = stats
        self._pending = pending
        self._signing_key = signing_key
        self._concurrency = concurrency
        self._queue: asyncio.Queue[Push] = asyncio.Queue()
        self._workers: list[asyncio.Task[None]] = []
        self._retries: set[asyncio.TimerHandle] = set()
        self._session: aiohttp.ClientSession | None = None
        self._generation = 0

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=self._concurrency, limit_per_host=0)
        self._session = aiohttp.ClientSession(
            connector=connector, headers={"User-Agent": USER_AGENT}, raise_for_status=False
        )
        self._workers = [
            asyncio.create_task(self._work(), name=f"sandbox-push-{i}")
            for i in range(self._concurrency)
        ]

    async def close(self) -> None:
        self.drop_all()
        await asyncio.gather(*(cancel_and_wait(task) for task in self._workers))
        self._workers = []
        if self._session is not None:
            await self._session.close()
            self._session = None

    def drop_all(self) -> None:
        """Forget queued pushes and scheduled retries (used by reset and shutdown).
        Attempts already in flight finish but are not retried."""
        self._generation += 1
        for handle in self._retries:
            handle.cancel()
        dropped = len(self._retries)
        self._retries.clear()
        while not self._queue.empty():
            self._queue.get_nowait()
            dropped += 1
        self._pending.done(dropped)

    def push(self, push: Push) -> None:
        """Queue a push; returns at once."""
        self._pending.add()
        self._queue.put_nowait(push)

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    async def _work(self) -> None:
        while True:
            push = await self._queue.get()
            generation = self._generation
            try:
                ok = await self._attempt(push)
            except asyncio.CancelledError:
                self._pending.done()
                raise
            except Exception:  # a bug must not kill the worker
                log.exception("sandbox push to %s crashed", push.url)
                ok = False
            if generation != self._generation:
                self._pending.done()
                continue
            self._finish(push, ok)

    def _finish(self, push: Push, ok: bool) -> None:
        push.attempt += 1
        if ok:
            self._stats.pushes["ok"] += 1
            self._stats.pushes[f"ok_{push.kind}"] += 1
            self._pending.done()
            return
        if push.attempt >= push.attempts:
            self._stats.pushes["failed"] += 1
            self._stats.pushes[f"failed_{push.kind}"] += 1
            self._pending.done()
            return
        self._stats.pushes["retried"] += 1
        loop = asyncio.get_running_loop()
        handle: asyncio.TimerHandle

        def requeue() -> None:
            self._retries.discard(handle)
            self._queue.put_nowait(push)

        handle = loop.call_later(push.delay(push.attempt), requeue)
        self._retries.add(handle)

    async def _attempt(self, push: Push) -> bool:
        assert self._session is not None, "Pusher.start() was not called"
        try:
            rendered = push.render(push.attempt)
        except Exception:
            log.exception("sandbox could not render a push to %s", push.url)
            return False
        url = URL(push.url)
        if rendered.query:
            url = url.with_query(rendered.query)
        headers = dict(push.headers)
        if rendered.content_type and push.method not in ("GET", "DELETE"):
            headers["Content-Type"] = rendered.content_type
        body = b"" if push.method in ("GET", "DELETE") else rendered.body
        key = self._signing_key()
        if key is not None:
            headers.update(key.headers(push.method, url.raw_path_qs, body))
        else:
            headers.setdefault("Date", formatdate(usegmt=True))
        try:
            async with self._session.request(
                push.method,
                url,
                data=body or None,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=push.timeout),
                allow_redirects=False,
            ) as response:
                await response.read()
                return 200 <= response.status < 300
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            log.debug("sandbox push to %s failed: %r", push.url, exc)
            return False
