"""Redaction: secrets and phone numbers never reach the rendered log."""

import io
import json
import logging

import structlog

from bot.core.logs import LazyContext, configure, mask_text


def test_mask_text() -> None:
    assert mask_text("from +61491570156 to 0491570157") == "from +********156 to *******157"
    assert mask_text("conv +61491570157:+61491570156") == "conv +********157:+********156"
    assert mask_text("order 1234 at 12:30, id 5b2c") == "order 1234 at 12:30, id 5b2c"
    assert (
        mask_text("entry 1795710785242-0 at 1795710785.245")
        == "entry 1795710785242-0 at 1795710785.245"
    )
    assert mask_text("call 0491570157.") == "call *******157."


def test_json_logs_are_redacted_everywhere() -> None:
    out = io.StringIO()
    configure("DEBUG", "json", stream=out)
    log = structlog.get_logger("t")
    log.info(
        "sent to +61491570156",
        authorization="Basic c2VjcmV0",
        api_secret="s3cret",
        webhook_token="tok",
        handset="+61491570156",
        nested={"signature": "abc", "numbers": ["+61491570158"]},
    )
    logging.getLogger("stdlib").warning("stdlib line about +61491570159")
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    text = out.getvalue()
    for secret in ("c2VjcmV0", "s3cret", 'tok"', "abc", "491570156", "491570158", "491570159"):
        assert secret not in text
    assert lines[0]["handset"] == "+********156"
    assert lines[0]["authorization"] == "[redacted]"
    assert lines[0]["nested"]["signature"] == "[redacted]"
    assert lines[1]["event"].endswith("+********159")


def test_cached_loggers_are_redacted_and_filtered_alike() -> None:
    """configure(cache=True), as sinchbot serve runs: a module's logger keeps the
    configuration (in a process of its own, since it cannot be undone)."""
    import subprocess
    import sys

    program = """
import structlog
from bot.core.logs import add_secret, configure
configure("INFO", "json", cache=True)
add_secret("hunter2-secret")
log = structlog.get_logger("t")
for n in range(2):
    log.debug("hidden", n=n)
    log.info("to +61491570156 with hunter2-secret", n=n, token="abc")
"""
    result = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=True
    )
    lines = [json.loads(line) for line in result.stderr.splitlines()]
    assert [line["n"] for line in lines] == [0, 1]
    for line in lines:
        assert line["event"] == "to +********156 with [redacted]"
        assert line["token"] == "[redacted]"


def test_a_lazy_context_is_computed_per_line_and_leaves_nothing_behind() -> None:
    out = io.StringIO()
    configure("INFO", "json", stream=out)
    log = structlog.get_logger("t")
    computed: list[int] = []

    def fields() -> dict[str, object]:
        computed.append(1)
        return {"conversation": "+61491570156", "entry": "1-0"}

    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(partition=3)
    try:
        with LazyContext(fields, {"partition": 3}):
            log.debug("below the level")  # no line, nothing computed
            assert computed == []
            log.info("one", entry="given")
            structlog.contextvars.bind_contextvars(leaked="yes", partition=9)
            log.info("two")
        log.info("after")
        with LazyContext(fields, {"partition": 3}):
            pass  # nothing bound inside: nothing to restore
        assert structlog.contextvars.get_contextvars() == {"partition": 3}
    finally:
        structlog.contextvars.clear_contextvars()
    one, two, after = (json.loads(line) for line in out.getvalue().splitlines())
    assert computed == [1, 1]
    assert (one["conversation"], one["entry"], one["partition"]) == ("+********156", "given", 3)
    assert (two["leaked"], two["partition"], two["entry"]) == ("yes", 9, "1-0")
    assert after == {**after, "partition": 3} and "leaked" not in after
    assert "conversation" not in after
