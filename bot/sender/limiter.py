"""The sender's rate-limiter seam: what the send loop asks of whatever limits provider calls.

The send loop takes a call before every provider request (each retry and each half of a
split batch included), releases it once the provider answered (or the call failed) and,
when the provider answers 429, holds every caller for the time it asked; while it waits for a
call it may ask how soon one frees (to have its batch ready by then). :class:`RateLimiter`
is that contract and nothing more (the shape of python-telegram-bot's ``BaseRateLimiter``,
reduced to what the sender calls); :class:`~bot.sender.throttle.Throttle`, shared by every
process through Redis, is its reference implementation.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

__all__ = ["RateLimiter"]


class RateLimiter(ABC):
    """Limits the sender's provider calls."""

    @abstractmethod
    async def acquire(self) -> float:
        """Wait until a provider call is allowed and take it; returns the seconds waited.

        Bound the wait with ``asyncio.timeout`` where that matters."""

    async def release(self) -> None:  # noqa: B027  (optional hook: most limiters need none)
        """The call this task took last was answered, or failed (the default: nothing to
        do; a limiter that counts calls as the provider does, on arrival, counts it from
        now)."""

    async def available_in(self, ahead: int = 0) -> float:
        """Seconds until a call would be allowed (0.0: now, the default), taking nothing,
        once ``ahead`` more calls were taken (those the sender's batches already wait for):
        a hint that lets the sender have its next batch ready when the call frees."""
        return 0.0

    @abstractmethod
    async def pause(self, seconds: float) -> None:
        """Hold every caller's calls for ``seconds`` (the provider said ``Retry-After``)."""
