"""``sinchbot appointments`` against a real gateway (BotTester) with the plugin enabled."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from pathlib import Path

import pytest
import structlog

from bot.cli import main
from bot.storage.redis_server import RedisServer
from bot.testing import BotTester
from plugins.appointments import plugin


async def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """The CLI in a thread (it is synchronous; the gateway runs on this loop), with the
    gateway's log lines kept out of the output."""
    capsys.readouterr()
    with structlog.testing.capture_logs():
        code = await asyncio.to_thread(main, list(argv))
    out, err = capsys.readouterr()
    return code, out, err


async def test_add_show_list_import_cancel(
    redis_server: RedisServer, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    async with BotTester(plugins=[plugin], redis_url=redis_server.url) as bot:
        assert bot.gateway.settings.api_token is not None
        token = bot.gateway.settings.api_token.get_secret_value()
        gateway = ("--url", bot.url, "--token", token)
        at = (bot.clock() + timedelta(days=2)).replace(microsecond=0).isoformat()

        code, out, err = await run(
            capsys, "appointments", "add", "--phone", "0491 570 156", "--name", "Sam",
            "--at", at, "--remind-before", "2h", *gateway,
        )  # fmt: skip
        assert (code, err) == (0, "")
        status, appointment, *rest = out.split()
        assert status == "scheduled" and appointment.startswith("ap_")
        assert rest[:2] == ["reminder", "at"]

        code, out, _ = await run(capsys, "appointments", "show", appointment, *gateway)
        assert code == 0
        assert "status         scheduled" in out
        assert "phone          +61491570156" in out
        assert "remind before  PT2H" in out
        assert "scheduled  via api" in out

        code, out, _ = await run(capsys, "appointments", "show", appointment, "--json", *gateway)
        assert json.loads(out)["id"] == appointment

        csv = tmp_path / "bookings.csv"
        csv.write_text(f"phone,name,starts_at\n+61491570158,Kim,{at}\n+61491570159,Lee,tomorrow\n")
        code, out, err = await run(capsys, "appointments", "import", str(csv), *gateway)
        assert code == 1  # a row was bad; the good one is kept
        assert out.splitlines()[0] == "created  1 appointment"
        assert "row 3: starts_at: 'tomorrow' is not ISO 8601" in out

        code, out, _ = await run(capsys, "appointments", "list", *gateway)
        assert code == 0
        lines = out.splitlines()
        assert lines[0].split() == ["ID", "STATUS", "STARTS", "PHONE", "NAME"]
        assert len(lines) == 3
        code, out, _ = await run(
            capsys, "appointments", "list", "--phone", "+61491570158", *gateway
        )
        assert "Kim" in out and "Sam" not in out
        code, out, _ = await run(
            capsys, "appointments", "list", "--status", "cancelled", "--json", *gateway
        )
        assert json.loads(out) == {"appointments": [], "truncated": False}

        code, out, _ = await run(capsys, "appointments", "cancel", appointment, *gateway)
        assert (code, out) == (0, f"cancel requested  {appointment}\n")
        await bot.settle()
        code, out, _ = await run(capsys, "appointments", "list", "--status", "cancelled", *gateway)
        assert appointment in out


async def test_errors_are_one_line(
    redis_server: RedisServer, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    async with BotTester(plugins=[plugin], redis_url=redis_server.url) as bot:
        assert bot.gateway.settings.api_token is not None
        token = bot.gateway.settings.api_token.get_secret_value()
        gateway = ("--url", bot.url, "--token", token)
        cases = [
            (
                ("appointments", "show", "ap_00000000000000000000", *gateway),
                1,
                "sinchbot: error: the gateway answered HTTP 404: no such appointment",
            ),
            (
                ("appointments", "list", "--url", bot.url, "--token", "wrong"),
                1,
                "sinchbot: error: the gateway answered HTTP 403: forbidden",
            ),
            (
                ("appointments", "add", "--phone", "12", "--name", "x", "--at",
                 "2030-01-01T10:00:00+10:00", *gateway),
                1,
                "sinchbot: error: the gateway answered HTTP 422: phone: '12' is not a valid phone number",
            ),
            (
                ("appointments", "import", str(tmp_path / "missing.csv"), *gateway),
                1,
                "sinchbot: error: cannot read",
            ),
            (
                ("appointments", "list", "--url", "http://127.0.0.1:9", "--token", token),
                1,
                "sinchbot: error: cannot reach the gateway at http://127.0.0.1:9",
            ),
            (
                ("appointments", "add", "--phone", "+61491570156", *gateway),
                2,
                "sinchbot: error: the following arguments are required: --name, --at",
            ),
            (
                ("appointments", "add", "--phone", "+61491570156", "--name", "x", "--at", "soon"),
                2,
                "expected an ISO 8601 time",
            ),
        ]  # fmt: skip
        for argv, expected_code, message in cases:
            code, out, err = await run(capsys, *argv)
            assert code == expected_code, (argv, err)
            assert out == ""
            assert err.startswith(message) or message in err, (argv, err)
            assert err.count("\n") == 1, err


async def test_a_gateway_without_the_plugin(
    redis_server: RedisServer, capsys: pytest.CaptureFixture[str]
) -> None:
    async with BotTester(plugins=[], redis_url=redis_server.url) as bot:
        assert bot.gateway.settings.api_token is not None
        token = bot.gateway.settings.api_token.get_secret_value()
        code, _, err = await run(capsys, "appointments", "list", "--url", bot.url, "--token", token)
        assert code == 1
        assert "has no appointments API (is the appointments plugin enabled?)" in err
