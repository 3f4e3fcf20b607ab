"""cancel_and_wait stops a task even when a cancellation is swallowed once."""

from __future__ import annotations

import asyncio

from bot.core.aio import cancel_and_wait


async def test_a_swallowed_cancellation_is_repeated_until_the_task_stops() -> None:
    swallowed = 0

    async def stubborn() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                if swallowed:
                    raise
                swallowed += 1  # what a library racing its own timeout can do

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    await asyncio.wait_for(cancel_and_wait(task, every=0.05), 5)
    assert task.cancelled() and swallowed == 1


async def test_a_finished_or_failed_task_and_none_are_fine() -> None:
    async def fails() -> None:
        raise RuntimeError("boom")

    task = asyncio.create_task(fails())
    await asyncio.sleep(0)
    await cancel_and_wait(task)  # the exception is retrieved, not raised
    await cancel_and_wait(None)
