"""asyncio helpers shared by the gateway and the sandbox."""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["cancel_and_wait"]


async def cancel_and_wait(task: asyncio.Task[Any] | None, *, every: float = 1.0) -> None:
    """Cancel ``task`` and wait until it is done, cancelling again every ``every`` seconds.

    Once is not always enough: on Python 3.11 a cancellation that arrives just as an inner
    ``asyncio.wait_for`` (or a library's own timeout) completes can be swallowed, and a loop
    that never checks a flag then runs on while its owner waits forever. Never raises the
    task's exception or cancellation.
    """
    if task is None:
        return
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=every)
    if not task.cancelled():
        task.exception()  # retrieved: no "exception was never retrieved" warning
