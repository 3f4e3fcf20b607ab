"""Throughput of the gateway's message path, against a bare aiohttp ceiling.

    python bench/throughput.py [--messages 20000] [--conversations 500] [--concurrency 64]

Starts a redis-server, the sandbox provider (`sinchbot sandbox`, its own process) and one
`sinchbot serve` process (durability on: AOF everysec, every webhook stored before its
200), then posts inbound webhooks from an aiohttp load generator in this process. The
handler answers each message (`ack <text>`), so every message costs: webhook → Lua
dedupe+XADD → inbox batch → handler → fenced commit (reply into the outbox) → sender batch
→ provider call → record. The throttle is set out of the way (the provider's real limit,
100 calls per 60 s, would cap any gateway at 10,000 messages/min).

Prints: webhook acceptance rate and latency, end-to-end replies per second, provider calls
and batch sizes; then the same load against a bare aiohttp JSON endpoint (the ceiling).
Everything shares this machine's cores, the load generator included.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from aiohttp import web

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bot.storage.redis_server import RedisServer, free_port  # noqa: E402

OURS = "+61491570157"
SECRET = "bench-secret"


def handset(i: int) -> str:
    return f"+614920{i:05d}"


async def wait_http(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            try:
                async with http.get(url) as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} did not answer")


async def load(
    urls: list[str], messages: int, conversations: int, concurrency: int, prefix: str
) -> tuple[float, list[float]]:
    """Post ``messages`` webhooks, ``concurrency`` at a time, spread over ``urls`` (each
    worker sticks to one); returns (seconds, latencies)."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    for n in range(messages):
        queue.put_nowait(n)
    latencies: list[float] = []
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def worker(url: str) -> None:
            while True:
                try:
                    n = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                payload = {
                    "reply_id": f"{prefix}-{n}",
                    "source_address": handset(n % conversations),
                    "destination_address": OURS,
                    "content": f"m{n}",
                    "type": "SMS",
                    "attachments": [],
                    "metadata": [],
                }
                started = time.perf_counter()
                while True:
                    async with http.post(url, json=payload) as response:
                        await response.read()
                        if response.status == 200:
                            break
                    await asyncio.sleep(0.01)
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(worker(urls[i % len(urls)]) for i in range(concurrency)))
        return time.perf_counter() - started, latencies


async def sandbox_stats(url: str) -> dict[str, object]:
    async with aiohttp.ClientSession() as http, http.get(f"{url}/_sandbox/stats") as response:
        result: dict[str, object] = await response.json()
        return result


def sent_messages(stats: dict[str, object]) -> int:
    return sum(int(c["messages"]) for c in stats["send_calls"])  # type: ignore[attr-defined]


def summary(seconds: float, latencies: list[float]) -> dict[str, float]:
    ordered = sorted(latencies)
    return {
        "per_second": round(len(latencies) / seconds),
        "p50_ms": round(statistics.median(ordered) * 1000, 2),
        "p99_ms": round(ordered[int(len(ordered) * 0.99) - 1] * 1000, 2),
    }


async def bare_ceiling(messages: int, concurrency: int) -> dict[str, float]:
    async def accept(request: web.Request) -> web.Response:
        await request.json()
        return web.json_response({"status": "accepted"})

    app = web.Application()
    app.router.add_post("/webhooks/messages", accept)
    port = free_port()
    # The ceiling server runs in a child process, like the gateway, so both compete with
    # the load generator the same way.
    code = (
        "import asyncio,sys\n"
        "from aiohttp import web\n"
        "async def accept(r):\n"
        "    await r.json()\n"
        "    return web.json_response({'status':'accepted'})\n"
        "app=web.Application(); app.router.add_post('/webhooks/messages', accept)\n"
        "app.router.add_get('/healthz', lambda r: web.json_response({}))\n"
        f"web.run_app(app, host='127.0.0.1', port={port}, print=None, access_log=None)\n"
    )
    process = subprocess.Popen([sys.executable, "-c", code])
    try:
        await wait_http(f"http://127.0.0.1:{port}/healthz")
        seconds, latencies = await load(
            [f"http://127.0.0.1:{port}/webhooks/messages"], messages, 100, concurrency, "bare"
        )
        return summary(seconds, latencies)
    finally:
        process.terminate()
        process.wait()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--conversations", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--partitions", type=int, default=16)
    parser.add_argument(
        "--gateways", type=int, default=1, help="`sinchbot serve` processes sharing one Redis"
    )
    parser.add_argument(
        "--engine",
        action="store_true",
        help="answer with the conversation engine (compliance check, then the fallback reply)"
        " instead of the bare `ack` handler",
    )
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="sinchbot-bench-"))
    redis_server = RedisServer(work / "redis").start()
    sandbox_port = free_port()
    gateway_ports = [free_port() for _ in range(args.gateways)]
    sandbox_url = f"http://127.0.0.1:{sandbox_port}"
    gateway_urls = [f"http://127.0.0.1:{port}" for port in gateway_ports]
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("SINCHBOT_")}
    sandbox = subprocess.Popen(
        [sys.executable, "-m", "bot", "sandbox", "--port", str(sandbox_port), "--receipt-delay", "0.01"],
        cwd=ROOT, env=base_env, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    env = {
        **base_env,
        "SINCHBOT_REDIS_URL": redis_server.url,
        "SINCHBOT_BASE_URL": sandbox_url,
        "SINCHBOT_API_KEY": "sandbox-key",
        "SINCHBOT_API_SECRET": "sandbox-secret",
        "SINCHBOT_WEBHOOK_SECRET": SECRET,
        "SINCHBOT_API_TOKEN": "bench",
        "SINCHBOT_THROTTLE_CALLS": "100000",
        "SINCHBOT_THROTTLE_PERIOD": "1",
        "SINCHBOT_PARTITIONS": str(args.partitions),
        "SINCHBOT_LOG_LEVEL": "WARNING",
        "SINCHBOT_DATA_DIR": str(work / "data"),
    }
    if args.engine:
        config = work / "bot.toml"
        config.write_text('fallback = "ack {text}"\n')
        env.update(SINCHBOT_CONFIG=str(config), SINCHBOT_PLUGINS="none")
    else:
        env["SINCHBOT_HANDLER"] = "tests.gateway.burst_handler:Ack"
    gateways = [
        subprocess.Popen(
            [sys.executable, "-m", "bot", "serve"],
            cwd=ROOT,
            env={**env, "SINCHBOT_PORT": str(port)},
            stdout=subprocess.DEVNULL,
        )
        for port in gateway_ports
    ]
    try:
        await wait_http(f"{sandbox_url}/_sandbox")
        for url in gateway_urls:
            await wait_http(f"{url}/readyz")
        started = time.perf_counter()
        seconds, latencies = await load(
            [f"{url}/webhooks/messages?token={SECRET}" for url in gateway_urls],
            args.messages, args.conversations, args.concurrency, "bench",
        )  # fmt: skip
        while sent_messages(await sandbox_stats(sandbox_url)) < args.messages:
            if time.perf_counter() - started > 600:
                raise RuntimeError("replies did not all leave within 10 minutes")
            await asyncio.sleep(0.05)
        end_to_end = time.perf_counter() - started
        stats = await sandbox_stats(sandbox_url)
        calls = stats["send_calls"]  # type: ignore[index]
        sizes = [int(c["messages"]) for c in calls]  # type: ignore[attr-defined]
        gateway_figures = {
            "messages": args.messages,
            "conversations": args.conversations,
            "concurrency": args.concurrency,
            "gateway_processes": args.gateways,
            "handler": "engine (compliance, fallback)" if args.engine else "ack",
            "webhooks": summary(seconds, latencies),
            "end_to_end_replies_per_second": round(args.messages / end_to_end),
            "provider_calls": len(sizes),
            "mean_batch": round(sum(sizes) / max(len(sizes), 1), 1),
            "replies_sent": sum(sizes),
        }
    finally:
        for process in (*gateways, sandbox):
            process.send_signal(signal.SIGTERM)
            process.wait(30)
        redis_server.stop()
    ceiling = await bare_ceiling(args.messages, args.concurrency)
    print(
        json.dumps(
            {"gateway": gateway_figures, "bare_aiohttp": ceiling, "cores": os.cpu_count()}, indent=2
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
