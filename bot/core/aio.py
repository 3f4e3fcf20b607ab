"""asyncio helpers shared by the gateway and the sandbox: stopping a task for sure, and the
event loop ``sinchbot serve`` runs on."""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["cancel_and_wait", "loop_name", "new_event_loop"]


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


def new_event_loop(choice: str = "auto") -> asyncio.AbstractEventLoop:
    """A new event loop: uvloop's (``pip install 'sinchbot[speed]'``) for ``uvloop``, and for
    ``auto`` when uvloop is installed; else asyncio's own. ``ImportError`` for ``uvloop``
    when it is not installed."""
    if choice != "asyncio":
        try:
            import uvloop
        except ImportError:
            if choice == "uvloop":
                raise
        else:
            return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def loop_name(loop: asyncio.AbstractEventLoop) -> str:
    """``uvloop`` or ``asyncio``: which kind of loop ``loop`` is (for the start-up banner)."""
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"
