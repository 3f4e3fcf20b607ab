"""Control characters from payloads never reach the log raw.

A real ``sinchbot serve`` process (the zero-configuration demo, the default console format
at DEBUG) runs a handler that logs each inbound text as a plugin would, in the event and as
a value, and fails on some (the inbox logs the traceback). Webhooks bring texts full of
control characters: NUL, an ANSI escape, BEL, DEL, NEL, LINE SEPARATOR, CR LF and a forged
log line. Its whole standard error is then read back as bytes: no control character but the
line breaks, no forged line, the escapes visible. In-process: the console and JSON formats
alike, for structlog's and the standard library's lines and for tracebacks.
"""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
import structlog

from bot.core.logs import configure, escape_controls
from bot.storage.redis_server import RedisServer
from tests.gateway.procutil import GatewayProcess, eventually, free_port, gateway_env

FORGED = "2030-01-01T00:00:00Z [critical ] FORGED line"
NASTY = f"x\x00y\x1b[31mred\x07\x7f\x85\u2028\r\n{FORGED}"
ESCAPED = "x\\x00y\\x1b[31mred\\x07\\x7f\\x85\\u2028\\r\\n2030"
RAW_CONTROL = re.compile(rb"[\x00-\x09\x0b-\x1f\x7f]|\xc2[\x80-\x9f]|\xe2\x80[\xa8\xa9]")
"""A control character in UTF-8 output, the line feed excepted."""


async def test_a_real_runs_console_log_carries_no_control_character_from_a_payload(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    env = gateway_env(
        redis_url=redis_server.url,
        sandbox_port=free_port(),
        data_dir=tmp_path / "data",
        partitions=2,
        handler="tests.log_handlers:Chatty",
        max_deliveries=1,
        log_level="DEBUG",
        log_format="console",
    )
    gateway = GatewayProcess("C", tmp_path, env)
    try:
        gateway.start()
        await gateway.wait_ready()
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            for reply_id, text in (("ctl-1", NASTY), ("ctl-2", f"boom {NASTY}")):
                hook = {"reply_id": reply_id, "source_number": "+61491570159", "content": text}
                async with http.post(f"{gateway.url}/webhooks/messages", json=hook) as response:
                    assert response.status == 200, await response.text()
                # One at a time: in one inbox batch, the failing second would have the first
                # handled (and logged) again when the batch is retried without it.
                await eventually(
                    lambda: "[plugins.chatty]" in gateway.stderr(), what="the first handled"
                )
        await eventually(
            lambda: "ValueError: cannot handle boom" in gateway.stderr(), what="the failure logged"
        )
        assert await gateway.terminate() == 0
    finally:
        gateway.close()

    log = (tmp_path / "gateway-C-1.err").read_bytes()
    raw = RAW_CONTROL.search(log)
    assert raw is None, log[max(0, raw.start() - 200) : raw.end() + 100]
    lines = log.decode().splitlines()
    assert not [line for line in lines if line.startswith(FORGED)]
    said = [line for line in lines if "[plugins.chatty]" in line]
    assert len(said) == 2, said
    assert f"got {ESCAPED}" in said[0] and f"got boom {ESCAPED}" in said[1], said
    compact = "x\\x00y\\x1b[31mred\\x07\\x7f\\x85\\u20282030-01-01T00:00:00Z[critical]FORGEDline"
    assert f"compact={compact} " in said[0] and f"compact=boom{compact} " in said[1], said
    # In a traceback a line break stays one, but the rest of the message is a line of the
    # traceback, indented, not a line of the log.
    first_line = ESCAPED.removesuffix("\\n2030")  # up to the line break
    message = f"  ValueError: cannot handle boom {first_line}"
    at = lines.index(message)
    assert lines[at + 1] == f"  {FORGED}"


# ---------------------------------------------------------------------- in-process


@pytest.fixture
def console_log() -> Iterator[io.StringIO]:
    out = io.StringIO()
    configure("DEBUG", "console", stream=out)
    try:
        yield out
    finally:
        structlog.reset_defaults()
        logging.getLogger().handlers.clear()


def test_console_lines_escape_controls_in_the_event_values_and_tracebacks(
    console_log: io.StringIO,
) -> None:
    log = structlog.get_logger("t")
    compact = "x\x00y\x1b[31mred\x07\x7f\x85\u2028"  # nothing that makes structlog quote it
    log.info(f"event {NASTY}", compact=compact, spaced=NASTY, key="ok")
    logging.getLogger("stdlib").warning("from %s", NASTY)
    try:
        raise ValueError(f"bad \x1b[2J{'!'}")
    except ValueError:
        log.exception("failed")
    text = console_log.getvalue()
    assert RAW_CONTROL.search(text.encode()) is None, repr(text)
    lines = text.splitlines()
    assert not [line for line in lines if line.startswith(FORGED)]
    first, second, third, *traceback = lines
    assert "event x\\x00y\\x1b[31mred\\x07\\x7f\\x85\\u2028\\r\\n2030" in first
    assert "compact=x\\x00y\\x1b[31mred\\x07\\x7f\\x85\\u2028 " in first and "key=ok" in first
    assert "from x\\x00y" in second
    assert "failed" in third
    # a traceback keeps its line breaks, indented under its line
    assert traceback[0] == "  Traceback (most recent call last):"
    assert traceback[-1] == "  ValueError: bad \\x1b[2J!"


def test_json_lines_escape_every_control_and_keep_the_text() -> None:
    out = io.StringIO()
    configure("DEBUG", "json", stream=out)
    try:
        structlog.get_logger("t").info(f"event {NASTY}", value=NASTY)
    finally:
        structlog.reset_defaults()
        logging.getLogger().handlers.clear()
    text = out.getvalue()
    assert RAW_CONTROL.search(text.encode()) is None
    [record] = [json.loads(line) for line in text.splitlines()]
    assert record["event"] == f"event {NASTY}" and record["value"] == NASTY


def test_escape_controls() -> None:
    assert escape_controls("a\nb\tc\x00\x1b\x7f\x85\u2028\udcff é ✓") == (
        "a\\nb\\tc\\x00\\x1b\\x7f\\x85\\u2028\\udcff é ✓"
    )
    assert escape_controls("line\nbreak\r", keep_newlines=True) == "line\nbreak\\r"
