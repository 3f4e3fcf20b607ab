"""The sender's rate-limiter seam: what the send loop asks of whatever limits provider calls.

The send loop takes a call before every provider request (each retry and each half of a
split batch included) and, when the provider answers 429, holds every caller for the time
it asked. :class:`RateLimiter` is that contract and nothing more (the shape of
python-telegram-bot's ``BaseRateLimiter``, reduced to what the sender calls);
:class:`~bot.sender.throttle.Throttle`, shared by every process through Redis, is its
reference implementation.
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

    @abstractmethod
    async def pause(self, seconds: float) -> None:
        """Hold every caller's calls for ``seconds`` (the provider said ``Retry-After``)."""
