"""Work slots: how many partitions of a consumer read and handle a batch at once.

A process owning many partitions runs one task per partition. Left alone, under load every
task reads again as soon as its batch is committed, so each batch holds the two or three
entries that arrived during one cycle, and every entry pays a share of the batch's Redis
round trips (a fenced read, the sessions, the commit) and of the script calls' fixed cost
in Redis. :class:`Slots` lets at most ``width`` tasks work at once: the others wait their
turn, first come first served, while their streams fill, so under load batches grow by
themselves and the round trips per entry fall; a partition alone never waits (no linger).

A task that waited ``patience`` seconds goes ahead anyway, beyond the width: a slow
handler (a plugin calling an outside service) holds its slot, and must not stall every
other partition behind it. So the width is a soft bound, and no wait is longer than
``patience``.
"""

from __future__ import annotations

import asyncio
from collections import deque

__all__ = ["Slots"]


class Slots:
    """At most ``width`` holders at once, first come first served; a waiter goes ahead
    anyway after ``patience`` seconds (see the module docstring).

    ``await acquire()`` takes a slot, ``release()`` gives it back (to the longest waiter,
    if any). Cancelled while waiting, :meth:`acquire` takes nothing.
    """

    def __init__(self, width: int, patience: float) -> None:
        if width < 1:
            raise ValueError("width must be at least 1")
        if patience <= 0:
            raise ValueError("patience must be positive")
        self.width = width
        self.patience = patience
        self.busy = 0
        """Slots held now (more than ``width`` while impatient waiters went ahead)."""
        self.overflows = 0
        """Times a waiter went ahead after ``patience`` (for metrics)."""
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def waiting(self) -> int:
        """Tasks waiting for a slot."""
        return sum(1 for waiter in self._waiters if not waiter.done())

    async def acquire(self) -> None:
        """Take a slot: now if one is free and nobody waits, else in turn, or after
        ``patience`` seconds regardless."""
        if self.busy < self.width and not self.waiting:
            self.busy += 1
            return
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self._waiters.append(waiter)
        timer = loop.call_later(self.patience, self._go_ahead, waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # granted just before the cancellation: pass it on
            raise
        finally:
            timer.cancel()

    def release(self) -> None:
        """Give a slot back: to the longest waiter, if any, else it is free."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot passes to it as it is (busy unchanged)
                return
        self.busy -= 1

    def _go_ahead(self, waiter: asyncio.Future[None]) -> None:
        if waiter.done():
            return
        self.busy += 1
        self.overflows += 1
        waiter.set_result(None)
