"""Tests for the ``sinchbot`` command line (bot.cli), driven against a real sandbox.

Most tests call :func:`bot.cli.main` in-process, in a thread (``main`` runs its own event
loop) while the sandbox serves on the test's loop; a few run ``python -m bot`` and
``sinchbot sandbox`` as subprocesses, end to end.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import bot.cli.messaging  # noqa: F401 (monkeypatched below)
from bot import cli
from bot.core.config import ENV_PREFIX
from bot.sandbox import Sandbox, SandboxConfig

ROOT = Path(__file__).resolve().parent.parent
ALICE = "+61491570156"
BOB = "+61491570157"
CAROL = "+61491570158"


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)

    @property
    def error_line(self) -> str:
        """stderr, asserted to be exactly one line without a traceback."""
        lines = self.err.splitlines()
        assert len(lines) == 1, self.err
        assert "Traceback" not in self.err
        return lines[0]


Run = Callable[..., Awaitable[Result]]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No SINCHBOT_* variables and an empty working directory (so no stray .env)."""
    for name in list(os.environ):
        if name.upper().startswith(ENV_PREFIX):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    async with Sandbox(SandboxConfig(port=0, step_delay=0.01, callback_attempts=1)) as sb:
        yield sb


def credentials(sb: Sandbox) -> list[str]:
    return ["--base-url", sb.url, "--api-key", sb.api_key, "--api-secret", sb.api_secret]


@pytest.fixture
def run_offline(capsys: pytest.CaptureFixture[str]) -> Callable[..., Result]:
    """Run ``main`` synchronously with exactly the given arguments."""

    def run(*args: str) -> Result:
        capsys.readouterr()
        code = cli.main(list(args))
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


@pytest.fixture
def run(sandbox: Sandbox, capsys: pytest.CaptureFixture[str]) -> Run:
    """Run ``main`` in a thread with the given arguments plus the sandbox's URL and keys
    (``auth=False`` leaves them out)."""

    async def run(*args: str, auth: bool = True) -> Result:
        capsys.readouterr()
        argv = [*args, *credentials(sandbox)] if auth else list(args)
        code = await asyncio.to_thread(cli.main, argv)
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


def queued_ids(out: str) -> dict[str, str]:
    """destination → message id, from the human output of send/mms/rcs."""
    result = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[2] == "->":
            assert parts[0] == "queued", line
            result[parts[3]] = parts[1]
    return result


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def assert_usage_error(result: Result, command: str = "sinchbot") -> str:
    assert result.code == 2, result
    line = result.error_line
    assert line.startswith("sinchbot: error: "), line
    assert f"try '{command} --help'" in line
    assert result.out == ""
    return line


def assert_error(result: Result, *fragments: str, code: int = 1) -> str:
    assert result.code == code, result
    line = result.error_line
    assert line.startswith("sinchbot: error: "), line
    for fragment in fragments:
        assert fragment in line
    return line


# ---------------------------------------------------------------------------------------------
# Sending
# ---------------------------------------------------------------------------------------------


async def test_send_to_two_recipients_reaches_both_handsets(run: Run, sandbox: Sandbox) -> None:
    result = await run("send", "--to", f"{ALICE} {BOB}", "-m", "Your table is ready")

    assert result.code == 0, result.err
    assert result.err == ""
    ids = queued_ids(result.out)
    assert set(ids) == {ALICE, BOB}
    assert result.out.splitlines()[-1] == "1 segment, GSM-7"
    await sandbox.wait_idle()
    for number in (ALICE, BOB):
        received = sandbox.handset(number).received
        assert [(m["message_id"], m["content"]) for m in received] == [
            (ids[number], "Your table is ready")
        ]


async def test_send_recipients_repeat_with_commas_and_national_numbers(
    run: Run, sandbox: Sandbox
) -> None:
    result = await run("send", "--to", f"{ALICE},0491570157", "--to", CAROL, "-m", "Hi ☃")

    assert result.code == 0, result.err
    assert set(queued_ids(result.out)) == {ALICE, BOB, CAROL}
    assert result.out.splitlines()[-1] == "1 segment, UCS-2"


async def test_send_json_output_parses(run: Run) -> None:
    result = await run("send", "--json", "--to", f"{ALICE} {BOB}", "-m", "hello")

    assert result.code == 0, result.err
    messages = result.json()
    assert isinstance(messages, list)
    assert [m["destination_number"] for m in messages] == [ALICE, BOB]
    assert all(m["message_id"] and m["status"] == "queued" for m in messages)


async def test_global_json_before_the_command(run: Run) -> None:
    result = await run("--json", "send", "--to", ALICE, "-m", "hello")

    assert result.code == 0, result.err
    assert result.json()[0]["destination_number"] == ALICE


async def test_send_with_metadata_and_options(run: Run, sandbox: Sandbox) -> None:
    result = await run(
        "send",
        "--json",
        "--to",
        ALICE,
        "-m",
        "Reminder",
        "--from",
        BOB,
        "--delivery-report",
        "--callback-url",
        "http://127.0.0.1:9/callback",
        "--metadata",
        "conv=42",
        "--metadata",
        "step=a=b",
    )

    assert result.code == 0, result.err
    (message,) = result.json()
    assert message["metadata"] == {"conv": "42", "step": "a=b"}
    status = await run("status", "--json", message["message_id"])
    assert status.code == 0, status.err
    shown = status.json()
    assert shown["metadata"] == {"conv": "42", "step": "a=b"}
    assert shown["source_number"] == BOB
    assert shown["delivery_report"] is True
    await sandbox.wait_idle()
    assert sandbox.handset(ALICE).received[0]["metadata"] == {"conv": "42", "step": "a=b"}


async def test_send_message_from_stdin(
    run: Run, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("piped text\n"))

    result = await run("send", "--to", ALICE, "--message", "-")

    assert result.code == 0, result.err
    await sandbox.wait_idle()
    assert sandbox.handset(ALICE).received[0]["content"] == "piped text"


async def test_mms(run: Run, sandbox: Sandbox) -> None:
    result = await run(
        "mms",
        "--to",
        ALICE,
        "-m",
        "Your ticket",
        "--media",
        "https://example.com/ticket.png",
        "--media",
        "https://example.com/map.png",
        "--subject",
        "Tickets",
    )

    assert result.code == 0, result.err
    message_id = queued_ids(result.out)[ALICE]
    assert "MMS with 2 media items" in result.out
    await sandbox.wait_idle()
    (received,) = sandbox.handset(ALICE).received
    assert received["message_id"] == message_id
    assert received["format"] == "MMS"
    assert received["subject"] == "Tickets"
    assert received["media"] == ["https://example.com/ticket.png", "https://example.com/map.png"]


async def test_rcs_text_with_choices(run: Run, sandbox: Sandbox) -> None:
    sandbox.handset(BOB).rcs = False  # gets the SMS fallback
    result = await run(
        "rcs",
        "--to",
        f"{ALICE} {BOB}",
        "--text",
        "Table for two?",
        "--choice",
        "Yes",
        "--choice",
        "No=answer-no",
        "--choice",
        "Menu=https://example.com/menu",
        "--fallback",
        "Table for two? Reply Y or N",
    )

    assert result.code == 0, result.err
    ids = queued_ids(result.out)
    assert set(ids) == {ALICE, BOB}
    assert "SMS fallback: 1 segment, GSM-7" in result.out
    await sandbox.wait_idle()
    (rich,) = sandbox.handset(ALICE).received
    assert rich["message_id"] == ids[ALICE]
    choice = rich["rcs"]["choice_message"]
    assert choice["text_message"] == {"text": "Table for two?"}
    assert choice["choices"] == [
        {"text_message": {"text": "Yes"}, "postback_data": "Yes"},
        {"text_message": {"text": "No"}, "postback_data": "answer-no"},
        {"url_message": {"title": "Menu", "url": "https://example.com/menu"}},
    ]
    (fallback,) = sandbox.handset(BOB).received
    assert fallback["content"] == "Table for two? Reply Y or N"


async def test_rcs_card_carousel_and_json_file(run: Run, sandbox: Sandbox, tmp_path: Path) -> None:
    sandbox.handset(ALICE).rcs = True
    card = await run(
        "rcs",
        "--to",
        ALICE,
        "--card-title",
        "Pizza",
        "--card-description",
        "Large",
        "--card-media",
        "https://example.com/p.jpg",
        "--choice",
        "Order=order",
    )
    assert card.code == 0, card.err
    cards = [{"title": "One"}, {"title": "Two", "choices": [{"text": "Pick"}]}]
    (tmp_path / "menu.json").write_text(json.dumps(cards), encoding="utf-8")
    carousel = await run("rcs", "--to", ALICE, "--carousel", str(tmp_path / "menu.json"))
    assert carousel.code == 0, carousel.err
    message = {"destination_number": ALICE, "text": "From a file", "fallback_text": "File"}
    (tmp_path / "message.json").write_text(json.dumps(message), encoding="utf-8")
    from_file = await run("rcs", "--json-file", str(tmp_path / "message.json"))
    assert from_file.code == 0, from_file.err

    await sandbox.wait_idle()
    bodies = [m["rcs"] for m in sandbox.handset(ALICE).received]
    assert bodies[0]["card_message"]["title"] == "Pizza"
    assert bodies[0]["card_message"]["choices"][0]["postback_data"] == "order"
    assert [c["title"] for c in bodies[1]["carousel_message"]["cards"]] == ["One", "Two"]
    assert bodies[2] == {"text_message": {"text": "From a file"}}


# ---------------------------------------------------------------------------------------------
# Status, cancel, senders
# ---------------------------------------------------------------------------------------------


async def test_status_human(run: Run, sandbox: Sandbox) -> None:
    sent = await run("send", "--to", ALICE, "-m", "Status check " + "x" * 100)
    message_id = queued_ids(sent.out)[ALICE]
    await sandbox.wait_idle()

    result = await run("status", message_id)

    assert result.code == 0, result.err
    fields = {
        line.split("  ", 1)[0]: line.split("  ", 1)[1].strip() for line in result.out.splitlines()
    }
    assert fields["message id"] == message_id
    assert fields["status"] == "delivered"
    assert fields["destination"] == ALICE
    assert fields["format"] == "SMS"
    assert fields["content"].startswith("Status check xxx")
    assert fields["content"].endswith("…")
    assert len(fields["content"]) == cli.CONTENT_PREVIEW


async def test_cancel_scheduled_message(run: Run) -> None:
    sent = await run("send", "--to", ALICE, "-m", "Later", "--scheduled", "2099-01-31T09:30:00Z")
    message_id = queued_ids(sent.out)[ALICE]
    scheduled = await run("status", "--json", message_id)
    assert scheduled.json()["status"] == "scheduled"

    result = await run("cancel", message_id)

    assert result.code == 0, result.err
    assert result.out == f"cancelled  {message_id}\n"
    status = await run("status", "--json", message_id)
    assert status.json()["status"] == "cancelled"
    again = await run("cancel", message_id)
    assert_error(again, "HTTP 400")


async def test_senders_table_and_json(run: Run) -> None:
    result = await run("senders")

    assert result.code == 0, result.err
    header, *rows = result.out.splitlines()
    assert header.split() == ["NUMBER", "TYPE", "LABEL", "DEFAULT", "MMS"]
    assert any(row.startswith("+61491570157") for row in rows)

    as_json = await run("senders", "--json")
    assert as_json.code == 0, as_json.err
    numbers = [s["number"] for s in as_json.json()["senders"]]
    assert "+61491570157" in numbers


# ---------------------------------------------------------------------------------------------
# Webhooks and blacklist
# ---------------------------------------------------------------------------------------------


async def test_webhooks_subscribe_list_delete(run: Run) -> None:
    messages_url = "https://bot.example.com/webhooks/messages"
    receipts_url = "https://bot.example.com/webhooks/receipts"
    subscribed = await run(
        "webhooks",
        "subscribe",
        "--messages-url",
        messages_url,
        "--receipts-url",
        receipts_url,
        "--header",
        "X-Token=s3cret",
        "--retries",
        "3",
        "--retry-delay",
        "10",
        "--json",
    )
    assert subscribed.code == 0, subscribed.err
    created = subscribed.json()
    assert isinstance(created, list)
    assert [h["url"] for h in created] == [messages_url, receipts_url]
    assert "RECEIVED_SMS" in created[0]["events"]
    assert "DELIVERED_DR" in created[1]["events"]
    assert created[0]["headers"] == {"X-Token": "s3cret"}

    listed = await run("webhooks", "list")
    assert listed.code == 0, listed.err
    assert listed.out.splitlines()[0].split() == ["ID", "METHOD", "URL", "EVENTS"]
    assert messages_url in listed.out
    assert receipts_url in listed.out

    deleted = await run("webhooks", "delete", *(h["id"] for h in created))
    assert deleted.code == 0, deleted.err
    assert deleted.out.splitlines() == [f"deleted  {h['id']}" for h in created]
    empty = await run("webhooks", "list", "--json")
    assert empty.json() == []
    missing = await run("webhooks", "delete", created[0]["id"])
    assert_error(missing, "HTTP 404")


async def test_webhook_duplicate_and_invalid_retries(run: Run) -> None:
    url = "https://bot.example.com/hook"
    first = await run("webhooks", "subscribe", "--messages-url", url)
    assert first.code == 0, first.err
    assert first.out.startswith("created  ")

    duplicate = await run("webhooks", "subscribe", "--messages-url", url)
    assert_error(duplicate, "HTTP 409")
    invalid = await run("webhooks", "subscribe", "--receipts-url", url + "2", "--retries", "9")
    assert_error(invalid, "retries: Input should be less than or equal to 5")


async def test_blacklist_add_list_remove(run: Run) -> None:
    added = await run("blacklist", "add", ALICE, "0491570157")
    assert added.code == 0, added.err
    assert added.out.splitlines() == [f"blacklisted  {ALICE}", f"blacklisted  {BOB}"]

    listed = await run("blacklist", "list")
    assert set(listed.out.split()) >= {ALICE, BOB}

    removed = await run("blacklist", "remove", ALICE)
    assert removed.code == 0, removed.err
    as_json = await run("blacklist", "list", "--json")
    numbers = as_json.json()["numbers"]
    assert ALICE not in numbers
    assert BOB in numbers


# ---------------------------------------------------------------------------------------------
# Errors against the sandbox
# ---------------------------------------------------------------------------------------------


async def test_bad_number(run: Run) -> None:
    result = await run("send", "--to", f"{ALICE} 12ab", "-m", "hi")

    assert_error(result, "'12ab' is not a valid phone number")
    assert result.out == ""


async def test_empty_message(run: Run) -> None:
    result = await run("send", "--to", ALICE, "-m", "")

    line = assert_error(result)
    assert line == "sinchbot: error: content: String should have at least 1 character"


async def test_wrong_credentials(run: Run, sandbox: Sandbox) -> None:
    result = await run(
        "senders", "--base-url", sandbox.url, "--api-key", "wrong", "--api-secret", "x", auth=False
    )

    assert_error(result, "HTTP 401", "SINCHBOT_API_KEY")


async def test_credentials_from_environment(
    run: Run, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SINCHBOT_BASE_URL", sandbox.url)
    monkeypatch.setenv("SINCHBOT_API_KEY", sandbox.api_key)
    monkeypatch.setenv("SINCHBOT_API_SECRET", sandbox.api_secret)

    result = await run("send", "--to", ALICE, "-m", "hi", auth=False)

    assert result.code == 0, result.err


async def test_unknown_message_id(run: Run) -> None:
    result = await run("status", "no-such-message")

    assert_error(result, "HTTP 404")


# ---------------------------------------------------------------------------------------------
# Errors without a provider
# ---------------------------------------------------------------------------------------------

OFFLINE_KEYS = ["--api-key", "k", "--api-secret", "s", "--base-url", "http://127.0.0.1:9"]


@pytest.mark.parametrize(
    ("argv", "command", "fragment"),
    [
        ([], "sinchbot", "required: COMMAND"),
        (["bogus"], "sinchbot", "invalid choice: 'bogus'"),
        (["send", "--to", ALICE], "sinchbot send", "-m/--message"),
        (["send", "-m", "hi"], "sinchbot send", "--to"),
        (["send", "--to", ALICE, "-m", "x", "--metadata", "novalue"], "sinchbot send", "KEY=VALUE"),
        (["send", "--to", ALICE, "-m", "x", "--metadata", "=v"], "sinchbot send", "KEY=VALUE"),
        (["send", "--to", ALICE, "-m", "x", "--scheduled", "soon"], "sinchbot send", "ISO 8601"),
        (["mms", "--to", ALICE, "-m", "x"], "sinchbot mms", "--media"),
        (["rcs", "--to", ALICE], "sinchbot rcs", "--text --card-title"),
        (["rcs", "--text", "x", *OFFLINE_KEYS], "sinchbot rcs", "--to"),
        (
            ["rcs", "--to", ALICE, "--text", "x", "--card-media", "https://e.com/a"],
            "sinchbot rcs",
            "--card-title",
        ),
        (["rcs", "--to", ALICE, "--carousel", "missing.json"], "sinchbot rcs", "cannot read"),
        (["status"], "sinchbot status", "ID"),
        (["webhooks"], "sinchbot webhooks", "ACTION"),
        (["webhooks", "subscribe", *OFFLINE_KEYS], "sinchbot webhooks subscribe", "--messages-url"),
        (["webhooks", "subscribe", "--retries", "many"], "sinchbot webhooks subscribe", "int"),
        (["blacklist", "add"], "sinchbot blacklist add", "NUMBER"),
        (["sandbox", "--port", "x"], "sinchbot sandbox", "--port"),
    ],
)
def test_usage_errors_are_one_line(
    run_offline: Callable[..., Result], argv: list[str], command: str, fragment: str
) -> None:
    line = assert_usage_error(run_offline(*argv), command)
    assert fragment in line


def test_bad_json_file_is_a_usage_error(run_offline: Callable[..., Result], tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text("{nope", encoding="utf-8")

    line = assert_usage_error(
        run_offline("rcs", "--to", ALICE, "--json-file", "bad.json"), "sinchbot rcs"
    )

    assert "not valid JSON" in line


@pytest.mark.parametrize("argv", [["--help"], ["send", "--help"], ["webhooks", "subscribe", "-h"]])
def test_help(run_offline: Callable[..., Result], argv: list[str]) -> None:
    result = run_offline(*argv)

    assert result.code == 0
    assert result.out.startswith("usage: sinchbot")
    assert "examples:" in result.out
    assert result.err == ""


def test_version(run_offline: Callable[..., Result]) -> None:
    result = run_offline("--version")

    assert result.code == 0
    assert result.out.strip() == "sinchbot 0.1.0"


def test_missing_credentials(run_offline: Callable[..., Result]) -> None:
    result = run_offline("send", "--to", ALICE, "-m", "hi")

    assert_error(result, "SINCHBOT_API_KEY", "SINCHBOT_API_SECRET")


def test_missing_secret_only(
    run_offline: Callable[..., Result], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SINCHBOT_API_KEY", "k")

    assert_error(run_offline("senders"), "SINCHBOT_API_SECRET")


def test_invalid_configuration(run_offline: Callable[..., Result]) -> None:
    result = run_offline("senders", "--api-key", "k", "--api-secret", "s", "--base-url", "ftp://x")

    assert_error(result, "invalid configuration: SINCHBOT_BASE_URL")


def test_unreachable_base_url(run_offline: Callable[..., Result]) -> None:
    url = f"http://127.0.0.1:{free_port()}"

    result = run_offline(
        "send", "--to", ALICE, "-m", "hi", "--api-key", "k", "--api-secret", "s", "--base-url", url
    )

    assert_error(result, "cannot reach the provider", url)


def test_internal_error_is_one_line_with_exit_70(
    run_offline: Callable[..., Result], monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(ctx: cli.Context) -> None:
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(cli.messaging, "_senders", broken)

    result = run_offline("senders", *OFFLINE_KEYS)

    assert result.code == 70
    assert result.error_line == (
        "sinchbot: internal error: RuntimeError: boom second line "
        "(set SINCHBOT_DEBUG=1 for a traceback)"
    )


def test_debug_shows_the_traceback(
    run_offline: Callable[..., Result], monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(ctx: cli.Context) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(cli.messaging, "_senders", broken)
    monkeypatch.setenv("SINCHBOT_DEBUG", "1")

    result = run_offline("senders", *OFFLINE_KEYS)

    assert result.code == 70
    assert "Traceback" in result.err


def test_keyboard_interrupt_exits_130(
    run_offline: Callable[..., Result], monkeypatch: pytest.MonkeyPatch
) -> None:
    async def interrupted(ctx: cli.Context) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli.messaging, "_senders", interrupted)

    result = run_offline("senders", *OFFLINE_KEYS)

    assert result.code == 130
    assert result.error_line == "sinchbot: interrupted"


# ---------------------------------------------------------------------------------------------
# End to end: python -m bot, sinchbot sandbox
# ---------------------------------------------------------------------------------------------


def subprocess_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith(ENV_PREFIX)}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def sinchbot(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_python_m_bot_send_then_status(sandbox: Sandbox) -> None:
    env = subprocess_env(
        SINCHBOT_BASE_URL=sandbox.url,
        SINCHBOT_API_KEY=sandbox.api_key,
        SINCHBOT_API_SECRET=sandbox.api_secret,
    )

    sent = await asyncio.to_thread(sinchbot, "send", "--to", ALICE, "-m", "end to end", env=env)

    assert sent.returncode == 0, sent.stderr
    message_id = queued_ids(sent.stdout)[ALICE]
    await sandbox.wait_idle()
    status = await asyncio.to_thread(sinchbot, "status", message_id, env=env)
    assert status.returncode == 0, status.stderr
    fields = dict(
        line.split(None, 1) for line in status.stdout.replace("message id", "id").splitlines()
    )
    assert fields["id"].strip() == message_id
    assert fields["status"].strip() == "delivered"


async def test_python_m_bot_error_has_no_traceback(sandbox: Sandbox) -> None:
    env = subprocess_env(
        SINCHBOT_BASE_URL=sandbox.url, SINCHBOT_API_KEY="bad", SINCHBOT_API_SECRET="bad"
    )

    result = await asyncio.to_thread(sinchbot, "status", "x", env=env)

    assert result.returncode == 1
    assert len(result.stderr.splitlines()) == 1
    assert "HTTP 401" in result.stderr


def wait_for_port(port: int, process: subprocess.Popen[str], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"sandbox exited early: {process.communicate()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError("the sandbox did not start listening")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_sandbox_command_serves_and_stops_cleanly(signum: signal.Signals) -> None:
    port = free_port()
    env = subprocess_env()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bot",
            "sandbox",
            "--port",
            str(port),
            "--api-key",
            "k",
            "--api-secret",
            "s",
            "--number",
            "+61491570159",
            "--receipt-delay",
            "0",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for_port(port, process)
        url = f"http://127.0.0.1:{port}"
        client_env = subprocess_env(
            SINCHBOT_BASE_URL=url, SINCHBOT_API_KEY="k", SINCHBOT_API_SECRET="s"
        )
        sent = sinchbot("send", "--to", ALICE, "-m", "via the sandbox command", env=client_env)
        assert sent.returncode == 0, sent.stderr
        assert ALICE in queued_ids(sent.stdout)
        senders = sinchbot("senders", "--json", env=client_env)
        assert senders.returncode == 0, senders.stderr
        assert "+61491570159" in [s["number"] for s in json.loads(senders.stdout)["senders"]]

        process.send_signal(signum)
        out, err = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, err
    assert "Traceback" not in err
    assert str(port) in out


def test_sandbox_port_in_use_is_one_line() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = sinchbot("sandbox", "--port", str(port), env=subprocess_env())

    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("sinchbot: error: ")


def test_sandbox_starts_with_faults_from_a_file(tmp_path: Path) -> None:
    faults = tmp_path / "faults.json"
    faults.write_text(
        json.dumps(
            {
                "rules": [
                    {
                        "endpoint": "POST /v1/messages",
                        "kind": "rate_limit",
                        "retry_after": 9,
                        "count": 1,
                    }
                ]
            }
        )
    )
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "bot", "sandbox", "--port", str(port), "--faults", str(faults)],
        env=subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for_port(port, process)
        env = subprocess_env(
            SINCHBOT_BASE_URL=f"http://127.0.0.1:{port}",
            SINCHBOT_API_KEY="sandbox-key",
            SINCHBOT_API_SECRET="sandbox-secret",
        )
        first = sinchbot("send", "--to", ALICE, "-m", "one", env=env)
        assert first.returncode == 1
        assert "HTTP 429" in first.stderr
        second = sinchbot("send", "--to", ALICE, "-m", "two", env=env)
        assert second.returncode == 0, second.stderr
    finally:
        process.terminate()
        process.communicate(timeout=20)


@pytest.mark.parametrize(
    ("content", "words"),
    [("{not json", "not valid JSON"), ('{"rules": [{"kind": "explode"}]}', "kind")],
)
def test_sandbox_bad_faults_file_is_one_line(tmp_path: Path, content: str, words: str) -> None:
    faults = tmp_path / "faults.json"
    faults.write_text(content)
    result = sinchbot("sandbox", "--port", "0", "--faults", str(faults), env=subprocess_env())
    assert result.returncode == 1
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert words in result.stderr
