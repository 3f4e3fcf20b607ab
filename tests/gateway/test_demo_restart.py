"""The zero-configuration demo across a restart, as a user runs it: ``sinchbot serve`` as a
real process on a temporary data folder, stopped with SIGTERM and started again. The
embedded Redis keeps its data but the in-process sandbox starts with empty handsets, so
the demo starts clean: what the bot waits for an answer to is in the handset's inbox, and
HOURS gets the HOURS answer. And the banner promises the sample reminder only when the
demo booked it."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

import aiohttp

from bot.demo.start import DEMO_HANDSET
from tests.gateway.procutil import SERVE, GatewayProcess, eventually, free_port, gateway_env

REMINDER = "a sample appointment reminder is waiting: reply Y, N or R"
CLEAN = "demo restarted clean: earlier demo conversations were cleared"
HOURS = ("We are open 8am-6pm weekdays", "We are closed now")  # the demo's, open or closed


def command() -> list[str]:
    script = shutil.which("sinchbot", path=str(Path(sys.executable).parent))
    return [script, "serve"] if script else list(SERVE)


class Handset:
    """The demo handset, through the sandbox's control API."""

    def __init__(self, http: aiohttp.ClientSession, sandbox_port: int) -> None:
        self.http = http
        self.url = f"http://127.0.0.1:{sandbox_port}/_sandbox/handsets/{DEMO_HANDSET}/messages"

    async def inbox(self) -> list[dict[str, Any]]:
        async with self.http.get(self.url) as response:
            assert response.status == 200
            return list(await response.json())

    async def until(self, count: int, what: str) -> list[dict[str, Any]]:
        """The inbox once it holds ``count`` messages."""
        received: list[dict[str, Any]] = []

        async def arrived() -> bool:
            nonlocal received
            received = await self.inbox()
            return len(received) >= count

        await eventually(arrived, timeout=30, interval=0.2, what=what)
        return received

    async def send(self, text: str) -> None:
        async with self.http.post(self.url, json={"content": text}) as response:
            assert response.status == 201


async def waiting(http: aiohttp.ClientSession, gateway: str) -> list[dict[str, Any]]:
    """The demo handset's appointments that wait for an answer."""
    async with http.get(f"{gateway}/api/appointments", params={"phone": DEMO_HANDSET}) as r:
        assert r.status == 200
        body = await r.json()
    return [a for a in body["appointments"] if a["status"] == "reminded"]


async def test_a_restarted_demo_starts_clean_and_its_handset_sees_what_the_bot_waits_for(
    tmp_path: Path,
) -> None:
    sandbox_port = free_port()
    g = GatewayProcess("demo", tmp_path, gateway_env(sandbox_port=sandbox_port), command=command())
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as http:
            phone = Handset(http, sandbox_port)
            g.start()
            await g.wait_ready()
            assert REMINDER in g.stdout() and CLEAN not in g.stdout()
            [first] = await phone.until(1, "the first run's sample reminder")
            assert "Reply Y to confirm" in first["content"]
            assert await g.terminate() == 0

            g.start()
            await g.wait_ready()
            banner = g.stdout()
            assert CLEAN in banner, banner
            assert REMINDER in banner
            # The new sandbox has a new handset: the reminder it shows is the one the bot
            # waits for an answer to, and nothing else waits.
            [reminder] = await phone.until(1, "the restarted demo's sample reminder")
            assert "Reply Y to confirm" in reminder["content"]
            [appointment] = await waiting(http, g.url)
            assert appointment["reminder_gw_id"] == reminder["metadata"]["gw_id"]

            await phone.send("HOURS")
            answer = (await phone.until(2, "the answer to HOURS"))[1]["content"]
            assert answer.startswith(HOURS), answer
            await phone.send("Y")
            thanks = (await phone.until(3, "the confirmation"))[2]["content"]
            assert "is confirmed" in thanks, thanks
            assert await waiting(http, g.url) == []
            assert await g.terminate() == 0
    finally:
        g.close()


async def test_the_banner_promises_the_sample_reminder_only_when_it_was_booked(
    tmp_path: Path,
) -> None:
    env = gateway_env(sandbox_port=free_port(), plugins="autoreply")
    g = GatewayProcess("autoreply", tmp_path, env, command=command())
    try:
        g.start()
        await g.wait_ready()
        banner = g.stdout()
        assert "plugins:   autoreply\n" in banner, banner
        assert f"try it:    sinchbot chat --as {DEMO_HANDSET}\n" in banner, banner
        assert "reminder" not in banner, banner
        assert await g.terminate() == 0
    finally:
        g.close()
