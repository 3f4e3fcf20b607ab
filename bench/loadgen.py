"""The load generator: inbound webhooks as the provider posts them, from this process.

- :func:`closed_loop`: ``concurrency`` workers, each posting its next message as soon as
  the last one was answered (saturation: how fast can it go);
- :func:`open_loop`: messages at a fixed offered rate whatever the answers (latency at a
  given load), at most ``max_in_flight`` at once.

A webhook that is not answered 200 is posted again after 10 ms (counted in
:attr:`Sent.retries`); its acknowledgement time runs from the first attempt. Every send
records its wall-clock start, so the reply's acceptance time at the sandbox (also wall
clock, same machine) gives the end-to-end latency.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass

import aiohttp

OURS = "+61491570157"
"""The account's number (the sandbox's first)."""


@dataclass(frozen=True, slots=True)
class Job:
    """One inbound message to post: its number in the phase and the handset it comes from."""

    n: int
    handset: str


@dataclass(frozen=True, slots=True)
class Sent:
    """One webhook that was answered 200."""

    n: int
    started: float
    """Wall-clock time (``time.time()``) of the first attempt."""
    ack: float
    """Seconds from the first attempt to the 200."""
    retries: int


class PhaseTimeout(RuntimeError):
    """A phase did not finish before its deadline."""


def body(tag: str, job: Job) -> bytes:
    """The MO webhook of ``job``: its text is ``<tag><n>`` (echoed by the fallback reply)."""
    return json.dumps(
        {
            "reply_id": f"{tag}-{job.n}-{time.time_ns()}",
            "source_address": job.handset,
            "destination_address": OURS,
            "content": f"{tag}{job.n}",
            "type": "SMS",
            "attachments": [],
            "metadata": [],
        }
    ).encode()


async def _post(http: aiohttp.ClientSession, url: str, tag: str, job: Job, deadline: float) -> Sent:
    data = body(tag, job)
    started_wall = time.time()
    started = time.perf_counter()
    retries = 0
    while True:
        try:
            async with http.post(url, data=data) as response:
                await response.read()
                if response.status == 200:
                    return Sent(job.n, started_wall, time.perf_counter() - started, retries)
        except aiohttp.ClientError:
            pass
        if time.monotonic() > deadline:
            raise PhaseTimeout(f"webhook {tag}{job.n} not accepted before the phase deadline")
        retries += 1
        await asyncio.sleep(0.01)


def session(secret: str, connections: int) -> aiohttp.ClientSession:
    """A client session posting JSON with the webhook secret, ``connections`` at most."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=connections),
        headers={"Content-Type": "application/json", "X-Webhook-Secret": secret},
        timeout=aiohttp.ClientTimeout(total=30),
    )


async def closed_loop(
    urls: Sequence[str],
    jobs: Sequence[Job],
    *,
    tag: str,
    secret: str,
    concurrency: int,
    deadline: float,
) -> list[Sent]:
    """Post every job, ``concurrency`` at a time; worker ``i`` posts to ``urls[i % len]``.
    ``deadline`` is a ``time.monotonic()`` value."""
    pending = iter(jobs)
    sent: list[Sent] = []
    async with session(secret, concurrency) as http:

        async def worker(url: str) -> None:
            for job in pending:
                sent.append(await _post(http, url, tag, job, deadline))

        await asyncio.gather(*(worker(urls[i % len(urls)]) for i in range(concurrency)))
    return sent


async def open_loop(
    urls: Sequence[str],
    jobs: Sequence[Job],
    *,
    tag: str,
    secret: str,
    rate: float,
    deadline: float,
    max_in_flight: int = 256,
) -> tuple[list[Sent], float]:
    """Post job ``i`` at ``i / rate`` seconds from the start (round robin over ``urls``),
    whether or not earlier ones were answered; returns what was sent and the p99 of how
    late the sends started (seconds: the generator itself falling behind)."""
    sent: list[Sent] = []
    lateness: list[float] = []
    slots = asyncio.Semaphore(max_in_flight)
    tasks: set[asyncio.Task[None]] = set()
    async with session(secret, max_in_flight) as http:

        async def one(url: str, job: Job) -> None:
            try:
                sent.append(await _post(http, url, tag, job, deadline))
            finally:
                slots.release()

        start = time.perf_counter()
        for i, job in enumerate(jobs):
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            await slots.acquire()
            lateness.append(max(0.0, time.perf_counter() - due))
            task = asyncio.create_task(one(urls[i % len(urls)], job))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            if time.monotonic() > deadline:
                raise PhaseTimeout("the open-loop phase did not finish before its deadline")
        await asyncio.gather(*tasks)
    lateness.sort()
    return sent, lateness[min(len(lateness) - 1, int(len(lateness) * 0.99))] if lateness else 0.0
