"""The benchmark (bench/gateway_bench.py) runs end to end with tiny counts, and its last line
is one JSON object holding every figure, so the command cannot silently rot."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]

TINY = [
    "--messages", "300", "--conversations", "50", "--concurrency", "16", "--warmup", "50",
    "--idle-conversations", "100", "--half-seconds", "2", "--throttle", "5/1",
    "--outbound-periods", "1", "--lone-replies", "2", "--processes", "2",
    "--phase-timeout", "60",
]  # fmt: skip

LATENCIES = ["ack_p50_ms", "ack_p99_ms", "reply_p50_ms", "reply_p99_ms"]
END_TO_END = [
    "webhooks_per_s", *LATENCIES, "replies_per_s", "ratio_to_ceiling",
    "cpu_us_per_message.gateway", "cpu_us_per_message.redis", "cpu_us_per_message.sandbox",
    "gateway_budget_us_at_target",
    "provider_calls", "messages_per_call",
]  # fmt: skip
CEILING = ["webhooks_per_s", "ack_p50_ms", "ack_p99_ms"]
FIGURES = [
    *(f"ceiling.{name}" for name in CEILING),
    *(f"end_to_end.{name}" for name in END_TO_END),
    *(f"half_load.{name}" for name in ["offered_per_s", "achieved_per_s", *LATENCIES]),
    *(
        f"outbound.{name}"
        for name in [
            "messages_per_call",
            "capacity_used",
            "late_per_call_ms",
            "capacity_used_at_real_limit",
            "peak_calls_in_a_period",
            "rate_limited_429",
            "lone_reply_p50_ms",
            "lone_reply_max_ms",
        ]
    ),
    "memory.gateway_rss_idle_mb",
    "memory.gateway_rss_load_mb",
    "memory.redis_idle_conversation.bytes_per_conversation",
    "memory.redis_idle_conversation.memory_usage_total",
    "memory.redis_idle_conversation.used_memory_delta_per_conversation",
    *(f"scale_out.ceiling.{name}" for name in CEILING),
    *(f"scale_out.end_to_end.{name}" for name in END_TO_END),
    "scale_out.gateway_rss_load_mb",
    *(f"split.end_to_end.{name}" for name in END_TO_END),
    *(f"split.half_load.{name}" for name in ["offered_per_s", "achieved_per_s", *LATENCIES]),
    "split.gateway_rss_load_mb",
]
TARGETS = {
    "end_to_end_ratio",
    "half_load_ack_p99_ms",
    "outbound_capacity_used",
    "outbound_429s",
    "lone_reply_max_ms",
    "gateway_rss_load_mb",
    "redis_bytes_per_idle_conversation",
}


def dig(result: dict[str, Any], path: str) -> Any:
    value: Any = result
    for part in path.split("."):
        value = value[part]
    return value


def run_bench(args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    process = subprocess.Popen(
        [sys.executable, "bench/gateway_bench.py", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        # SIGTERM: the benchmark stops the processes it started, then exits.
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=60)
        pytest.fail(f"the benchmark took over {timeout} s:\n{err[-3000:]}")
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def test_tiny_run_prints_every_figure() -> None:
    done = run_bench(TINY, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    result = json.loads(lines[-1])
    for path in FIGURES:
        value = dig(result, path)
        assert isinstance(value, int | float) and not isinstance(value, bool), (path, value)
        assert math.isfinite(value), (path, value)
    assert result["end_to_end"]["messages"] == 300
    assert result["scale_out"]["processes"] == 2
    assert isinstance(result["scale_out"]["shared_port"], bool)
    assert result["split"]["label"] == "1 web + 1 worker"
    assert set(result["targets"]) == TARGETS
    assert result["targets"]["end_to_end_ratio"]["by"] in {
        "1 process",
        "2 processes",
        "1 web + 1 worker",
    }
    for name, target in result["targets"].items():
        assert isinstance(target["met"], bool), name
    report = "\n".join(lines[:-1])
    for heading in ("ceiling", "end to end", "half load", "outbound", "memory", "targets met"):
        assert heading in report


def test_bad_throttle_is_a_usage_error() -> None:
    done = run_bench(["--throttle", "fast"], timeout=30)
    assert done.returncode == 2
    assert "CALLS/SECONDS" in done.stderr
