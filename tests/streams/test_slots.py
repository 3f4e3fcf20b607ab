"""Work slots (bot/streams/slots.py): a bounded number of holders, first come first served,
an impatient waiter going ahead, and nothing lost to a cancellation."""

from __future__ import annotations

import asyncio

import pytest

from bot.streams.slots import Slots


async def test_a_free_slot_is_taken_at_once_and_a_busy_one_in_turn() -> None:
    slots = Slots(2, patience=60.0)
    await slots.acquire()
    await slots.acquire()
    assert slots.busy == 2
    order: list[str] = []

    async def wait(name: str) -> None:
        await slots.acquire()
        order.append(name)

    first = asyncio.create_task(wait("first"))
    await asyncio.sleep(0)
    second = asyncio.create_task(wait("second"))
    await asyncio.sleep(0.01)
    assert order == [] and slots.waiting == 2
    slots.release()
    await asyncio.sleep(0)
    assert order == ["first"]
    # A newcomer does not jump the queue while someone waits, even with a slot passing.
    late = asyncio.create_task(wait("late"))
    slots.release()
    await asyncio.sleep(0)
    assert order == ["first", "second"]
    slots.release()
    await asyncio.gather(first, second, late)
    assert order == ["first", "second", "late"]
    assert slots.busy == 2 and slots.overflows == 0
    slots.release()
    slots.release()
    assert slots.busy == 0


async def test_a_waiter_goes_ahead_after_its_patience() -> None:
    slots = Slots(1, patience=0.05)
    await slots.acquire()  # held and never given back
    await asyncio.wait_for(slots.acquire(), 5)
    assert slots.busy == 2 and slots.overflows == 1
    slots.release()
    slots.release()
    assert slots.busy == 0


async def test_a_cancelled_waiter_takes_nothing_and_a_granted_one_passes_it_on() -> None:
    slots = Slots(1, patience=60.0)
    await slots.acquire()
    gone = asyncio.create_task(slots.acquire())
    await asyncio.sleep(0)
    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gone
    # Granted (the slot passed to it) and cancelled before it ran: the slot goes on.
    granted = asyncio.create_task(slots.acquire())
    nxt = asyncio.create_task(slots.acquire())
    await asyncio.sleep(0)
    slots.release()
    granted.cancel()
    with pytest.raises(asyncio.CancelledError):
        await granted
    await asyncio.wait_for(nxt, 5)
    assert slots.busy == 1
    slots.release()
    assert slots.busy == 0 and slots.waiting == 0


@pytest.mark.parametrize(("width", "patience", "why"), [(0, 1.0, "width"), (1, 0.0, "patience")])
def test_bad_bounds_are_refused(width: int, patience: float, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        Slots(width, patience)
