"""Tried as a new user would: ``sinchbot serve`` with no configuration but
``SINCHBOT_PLUGINS=appointments`` (the embedded Redis and the sandbox), an appointment
created through the API reminds a virtual handset, the handset answers Y through the
sandbox's control API (as a person would, without naming the message it answers), and the
API shows the appointment confirmed. A real process over real HTTP."""

from __future__ import annotations

import shutil
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp

from bot.storage.redis_server import free_port
from tests.gateway.procutil import SERVE, GatewayProcess, eventually, gateway_env

HANDSET = "+61491570158"  # not the demo's handset, whose sample appointment is booked too


async def test_an_appointment_made_through_the_api_is_confirmed_by_a_handsets_y(
    tmp_path: Path,
) -> None:
    script = shutil.which("sinchbot", path=str(Path(sys.executable).parent))
    sandbox_port = free_port()
    env = gateway_env(sandbox_port=sandbox_port, plugins="appointments")
    del env["SINCHBOT_LOG_FORMAT"]
    g = GatewayProcess("new-user", tmp_path, env, command=[script, "serve"] if script else SERVE)
    handset_url = f"http://127.0.0.1:{sandbox_port}/_sandbox/handsets/{HANDSET}/messages"
    try:
        g.start()
        await g.wait_ready()
        assert "plugins:   appointments" in g.stdout()
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as http:
            starts = (datetime.now(UTC) + timedelta(hours=3)).isoformat(timespec="seconds")
            body = {"phone": HANDSET, "name": "Ada", "starts_at": starts}
            async with http.post(f"{g.url}/api/appointments", json=body) as response:
                assert response.status == 201
                created = await response.json()
            assert created["status"] == "scheduled"

            received: list[dict[str, Any]] = []

            async def reminded() -> bool:
                nonlocal received
                async with http.get(handset_url) as r:
                    received = await r.json()
                return bool(received)

            await eventually(reminded, timeout=30, interval=0.2, what="the reminder")
            assert "Reply Y to confirm" in received[0]["content"]

            async with http.post(handset_url, json={"content": "Y"}) as response:
                assert response.status == 201

            appointment: dict[str, Any] = {}

            async def confirmed() -> bool:
                nonlocal appointment
                async with http.get(f"{g.url}/api/appointments/{created['id']}") as r:
                    appointment = await r.json()
                return appointment.get("status") == "confirmed"

            await eventually(confirmed, timeout=30, interval=0.2, what="the confirmation")
            assert [h["status"] for h in appointment["history"]] == [
                "scheduled",
                "reminded",
                "confirmed",
            ]

            async def thanked() -> bool:
                return await reminded() and len(received) >= 2

            await eventually(thanked, timeout=30, interval=0.2, what="the confirmation SMS")
            assert "is confirmed" in received[1]["content"]
        assert await g.terminate() == 0
    finally:
        g.close()
