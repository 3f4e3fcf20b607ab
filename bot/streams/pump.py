"""The loop shared by the gateway's pumps: once per tick, one lease-checked script per
owned partition moves due work (timers into the inbox, deferred sends into the outbox).

A subclass implements :meth:`Pump.tick`; the base runs it in a task, sleeps until the next
due item (at most ``poll``), wakes early on :meth:`Pump.wake`, and backs off while Redis is
unreachable.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import structlog

from bot.core.aio import cancel_and_wait
from bot.storage.store import Store, text
from bot.streams.leases import WorkerRegistry

__all__ = ["Pump"]

log = structlog.get_logger(__name__)


class Pump:
    """A lease holder's periodic mover of due work (see the module documentation).

    Args:
        store: the gateway's Redis.
        registry: whose :attr:`~bot.streams.leases.WorkerRegistry.owned` partitions to
            serve; the scripts check the lease, so a worker that lost a partition moves
            nothing of it.
        poll: longest sleep between ticks (seconds): new due work moves at most this late.
        retry_delay_max: longest backoff while Redis is unreachable.
        skew: seconds the engine's clock runs ahead of Redis's (the testing kit moves its
            clock forward; work is due by the engine's clock). Default: none.
    """

    name = "pump"
    """For the task's name and the logs."""

    def __init__(
        self,
        store: Store,
        registry: WorkerRegistry,
        *,
        poll: float,
        retry_delay_max: float = 5.0,
        skew: Callable[[], float] | None = None,
    ) -> None:
        if not poll > 0:
            raise ValueError("poll must be positive")
        self.store = store
        self.registry = registry
        self.poll = poll
        self.retry_delay_max = max(poll, retry_delay_max)
        self.skew = skew
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._stopping = False

    async def tick(self) -> float:
        """Move the due work of every owned partition once; the seconds until the next
        tick is needed."""
        raise NotImplementedError

    def skew_ms(self) -> int:
        """:attr:`skew` in whole milliseconds (a script argument)."""
        return round(self.skew() * 1000) if self.skew is not None else 0

    def next_wait(self, wait: float, now: Any, due: Any) -> float:
        """``wait`` shortened to the next due item (``due``, ``now``: a script's ms)."""
        if not text(due):
            return wait
        return min(wait, max(0.0, (float(text(due)) - float(text(now))) / 1000))

    async def start(self) -> None:
        """Start the loop (idempotent)."""
        if self._task is not None:
            return
        self._stopping = False
        self._task = asyncio.create_task(self._loop(), name=self.name)

    async def stop(self) -> None:
        """Stop the loop. A tick in progress is one script call per partition: each either
        moved its items or did nothing, so cancelling it loses nothing."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping = True
        self._wake.set()
        await cancel_and_wait(task)

    def wake(self) -> None:
        """Tick now rather than at the end of the current sleep (the testing kit calls it
        after moving its clock)."""
        self._wake.set()

    async def _loop(self) -> None:
        backoff = 0.0
        while not self._stopping:
            self._wake.clear()  # before the tick: a wake() during it ticks again at once
            try:
                wait = await self.tick()
                backoff = 0.0
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis down, a script error...: log, back off, retry
                backoff = min(max(backoff * 2, self.poll), self.retry_delay_max)
                log.warning(f"{self.name} tick failed", error=str(exc), retry_in=backoff)
                wait = backoff
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=max(wait, 0.001))
