"""The gateway benchmark: end to end against a bare aiohttp ceiling, under the provider's
throttle, at half load, and its memory, printed next to the targets in one run.

    python bench/gateway_bench.py [--messages 20000] [--conversations 500] [--concurrency 64]
        [--processes 2] [--half-seconds 10] [--throttle 20/2] [--outbound-periods 3]

It starts, on 127.0.0.1 only, a redis-server (AOF everysec, as the embedded one), the sandbox
provider (``sinchbot sandbox``) and ``sinchbot serve`` processes with a bot configuration as a
user would have it (compliance, the appointments and autoreply plugins, keywords, a
fallback reply that answers every message of the benchmark), webhook secret and API token
set. The load generator runs in this process. Phases, each bounded in messages and time:

1. warm-up; gateway RSS idle; Redis bytes per idle conversation (conversations with one
   exchange each, once no work is left: the ``INFO memory`` ``used_memory`` delta, and the
   ``MEMORY USAGE`` of each key by kind);
2. the ceiling: bare aiohttp (bench/bare_server.py) answering the same webhook with 200,
   as many processes as gateways, closed loop;
3. end to end, closed loop with the provider throttle out of the way: webhooks/s, webhook
   ack p50/p99, webhook → reply accepted by the sandbox p50/p99, replies/s, the ratio to the
   ceiling, CPU µs per message (utime + stime from /proc, per process group);
4. half load: open loop at half the end-to-end rate: ack and reply p50/p99;
5. with ``--processes N`` (N > 1): 2 and 3 again with N gateways on one Redis; then 3 and 4
   with the roles split: one ``--role web`` process taking every webhook and N - 1
   ``--role worker`` processes handling them (the webhook's ack no longer waits behind
   the handlers' work on the same event loop);
6. outbound under the throttle: the sandbox enforces ``--throttle CALLS/SECONDS`` (429
   past it) and the gateway is configured with the same numbers; a backlog queued through
   the API (by a ``--role web`` process, so it is all there before the sender starts)
   drains: messages per call, share of the throttle's capacity used, 429s; then lone
   replies once calls are free: webhook → reply accepted latency.

The output ends with one JSON line holding every figure; a speed target counts the best of
the set-ups measured. Everything shares this machine's
cores (load generator, gateways, sandbox, Redis): compare figures of the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import redis
import redis.asyncio as aioredis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from loadgen import Job, PhaseTimeout, Sent, closed_loop, open_loop  # noqa: E402
from procs import Proc, Procs, cpu_seconds, listens, rss_bytes, wait_http  # noqa: E402

from bot.sandbox.throttle import parse_throttle  # noqa: E402
from bot.storage.redis_server import RedisServer, free_port  # noqa: E402

PY = sys.executable
API_KEY, API_SECRET = "sandbox-key", "sandbox-secret"
WEBHOOK_SECRET = "bench-webhook-secret"
API_TOKEN = "bench-api-token"
OURS = "+61491570157"
OUT_OF_THE_WAY = ("100000", "1")
"""Gateway throttle for the phases that do not measure it: 100,000 calls per second."""

BOT_CONFIG = """\
# What the benchmark's gateways run: compliance (always), two plugins, keywords, and the
# fallback reply that answers every message of the benchmark (echoing its text).
plugins = ["appointments", "autoreply"]
fallback = "Thanks, we got {text}. Reply HELP for help."

[compliance]
help_text = "Bench Clinic: appointment reminders. Reply STOP to opt out."

[keywords]
PING = "PONG"
HOURS = "We are open 8am-6pm weekdays."

[plugin.appointments]
business = "Bench Clinic"
from_number = "+61491570157"
slots = ["Tue 10:00", "Wed 14:30", "Fri 09:15"]

[plugin.autoreply]
timezone = "UTC"
business_hours = {"mon-fri" = "08:00-18:00"}

[[plugin.autoreply.rules]]
keyword = ["price", "prices"]
text = "A cleaning costs $120. Reply BOOK to ask for an appointment."

[[plugin.autoreply.rules]]
regex = "book (?P<day>[a-z]+)"
text = "Thanks! We will text you a time on {day}."
"""

_REPLY = re.compile(r"\b([a-z])(\d+)\b")
"""A reply's echo of the benchmark message it answers (``e123``: tag, number)."""
_TAGGED = re.compile(r"^sb:\{([^}]*)\}:([^:]*)")
_PARTITION = re.compile(r"p\d+")

REAL_PERIOD = 60.0
"""Seconds of the connector's real limit (100 calls per 60 s), for the outbound projection."""

TARGETS = {
    "end_to_end_ratio": ("end to end / ceiling", ">=", 0.50),
    "half_load_ack_p99_ms": ("webhook ack p99 at half load, ms", "<=", 10.0),
    "outbound_capacity_used": ("throttle capacity used while backlogged", ">=", 0.99),
    "outbound_429s": ("429s from our own pacing", "<=", 0),
    "lone_reply_max_ms": ("lone reply accepted by the provider, ms (max)", "<=", 50.0),
    "gateway_rss_load_mb": ("gateway RSS under load, MB (max per process)", "<=", 120.0),
    "redis_bytes_per_idle_conversation": ("Redis per idle conversation, bytes", "<=", 1024),
}


def handset(block: int, i: int) -> str:
    """Handset ``i`` of a block of numbers (one block per phase: 0 end to end, 1 idle,
    2 lone replies, 3 outbound backlog, 9 warm-up); valid AU mobile numbers."""
    return f"+6149{block:02d}{i:05d}"


def ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank percentile (``q`` in 0..1) of ``values``; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def git(*args: str) -> str:
    try:
        return subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


# --------------------------------------------------------------------------- the run


@dataclass
class Stack:
    """A sandbox and the gateways pointed at it."""

    name: str
    sandbox: Proc
    sandbox_url: str
    gateways: list[Proc] = field(default_factory=list)
    urls: list[str] = field(default_factory=list)
    """Base URLs the load goes to: one when the gateways share their port."""
    shared_port: bool = True

    @property
    def webhook_urls(self) -> list[str]:
        return [f"{url}/webhooks/messages" for url in self.urls]

    @property
    def gateway_pids(self) -> list[int]:
        return [g.pid for g in self.gateways]

    def check(self) -> None:
        for proc in (self.sandbox, *self.gateways):
            proc.check()


class Bench:
    """One run: its arguments, work folder, processes and Redis."""

    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args = args
        self.work = work
        (work / "logs").mkdir(parents=True)
        self.procs = Procs(cwd=work, logs=work / "logs")
        self.redis_server = RedisServer(work / "redis")
        self.redis: aioredis.Redis | None = None
        self.config = work / "bot.toml"
        self.config.write_text(BOT_CONFIG)
        self.base_env = {k: v for k, v in os.environ.items() if not k.startswith("SINCHBOT_")}
        path = self.base_env.get("PYTHONPATH")
        self.base_env["PYTHONPATH"] = f"{ROOT}{os.pathsep}{path}" if path else str(ROOT)
        self._names: Counter[str] = Counter()
        self.seconds: dict[str, float] = {}

    def name(self, base: str) -> str:
        self._names[base] += 1
        return f"{base}-{self._names[base]}"

    def deadline(self) -> float:
        return time.monotonic() + self.args.phase_timeout

    @property
    def r(self) -> aioredis.Redis:
        assert self.redis is not None
        return self.redis

    # ------------------------------------------------------------------ processes

    async def start_sandbox(self, throttle: tuple[int, float] | None = None) -> tuple[Proc, str]:
        port = free_port()
        command = [PY, "-m", "bot", "sandbox", "--port", str(port), "--receipt-delay", "0.01"]
        if throttle is not None:
            command += ["--throttle", f"{throttle[0]}/{throttle[1]:g}"]
        proc = self.procs.start(self.name("sandbox"), command, self.base_env)
        url = f"http://127.0.0.1:{port}"
        await wait_http(f"{url}/_sandbox", proc)
        return proc, url

    def gateway_env(
        self, sandbox_url: str, port: int, throttle: tuple[str, str] = OUT_OF_THE_WAY
    ) -> dict[str, str]:
        data = self.work / self.name("data")
        env = {
            **self.base_env,
            "SINCHBOT_REDIS_URL": self.redis_server.url,
            "SINCHBOT_BASE_URL": sandbox_url,
            "SINCHBOT_API_KEY": API_KEY,
            "SINCHBOT_API_SECRET": API_SECRET,
            "SINCHBOT_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "SINCHBOT_API_TOKEN": API_TOKEN,
            "SINCHBOT_THROTTLE_CALLS": throttle[0],
            "SINCHBOT_THROTTLE_PERIOD": throttle[1],
            "SINCHBOT_PARTITIONS": str(self.args.partitions),
            "SINCHBOT_LOG_LEVEL": "WARNING",
            "SINCHBOT_DATA_DIR": str(data),
            "SINCHBOT_CONFIG": str(self.config),
            "SINCHBOT_HOST": "127.0.0.1",
            "SINCHBOT_PORT": str(port),
        }
        if self.args.handler:
            env["SINCHBOT_HANDLER"] = self.args.handler
        return env

    async def start_gateway(
        self, sandbox_url: str, port: int, *, role: str = "all", **env: Any
    ) -> Proc:
        command = [PY, "-m", "bot", "serve", "--role", role]
        proc = self.procs.start(
            self.name(f"gateway-{role}"), command, self.gateway_env(sandbox_url, port, **env)
        )
        await wait_http(f"http://127.0.0.1:{port}/readyz", proc, timeout=60)
        return proc

    async def shares_port(self, sandbox_url: str, port: int, timeout: float = 60.0) -> bool:
        """Whether a second ``sinchbot serve`` can listen on the port a first one holds
        (SO_REUSEPORT): tried with a ``--role web`` process, which takes no partitions. It
        either comes to listen on the port, or exits (address in use)."""
        probe = self.procs.start(
            self.name("probe"),
            [PY, "-m", "bot", "serve", "--role", "web"],
            self.gateway_env(sandbox_url, port),
        )
        deadline = time.monotonic() + timeout
        try:
            while probe.running:
                if listens(probe.pid, port):
                    return True
                if time.monotonic() > deadline:
                    raise PhaseTimeout(f"the port probe neither listened nor exited in {timeout} s")
                await asyncio.sleep(0.05)
            tail = probe.stderr_tail().lower()
            if "address already in use" in tail or "errno 98" in tail:
                return False
            probe.check()
            raise RuntimeError(f"the port probe exited 0 without listening:\n{tail}")
        finally:
            self.procs.stop(probe)

    async def start_stack(self, processes: int, *, split: bool = False) -> Stack:
        """A sandbox and ``processes`` gateways: each with role ``all`` (sharing the port
        when they can), or with ``split`` one ``--role web`` process taking every webhook
        and ``processes - 1`` ``--role worker`` processes (on ports of their own: they
        serve no webhooks)."""
        sandbox, sandbox_url = await self.start_sandbox()
        stack = Stack(self.name("stack"), sandbox, sandbox_url)
        port = free_port()
        if split:
            stack.gateways.append(await self.start_gateway(sandbox_url, port, role="web"))
            stack.urls.append(f"http://127.0.0.1:{port}")
            for _ in range(processes - 1):
                stack.gateways.append(
                    await self.start_gateway(sandbox_url, free_port(), role="worker")
                )
            await self.wait_balanced(processes - 1, stack)
            return stack
        stack.gateways.append(await self.start_gateway(sandbox_url, port))
        stack.urls.append(f"http://127.0.0.1:{port}")
        if processes > 1:
            stack.shared_port = await self.shares_port(sandbox_url, port)
            for _ in range(processes - 1):
                own = port if stack.shared_port else free_port()
                stack.gateways.append(await self.start_gateway(sandbox_url, own))
                if not stack.shared_port:
                    stack.urls.append(f"http://127.0.0.1:{own}")
        await self.wait_balanced(processes, stack)
        return stack

    def stop_stack(self, stack: Stack) -> None:
        self.procs.stop(*stack.gateways, timeout=45)
        self.procs.stop(stack.sandbox)

    async def wait_balanced(self, processes: int, stack: Stack, timeout: float = 30.0) -> None:
        """Until every partition is leased and each of ``processes`` workers holds its fair
        share (a new worker gets its share within a few heartbeats)."""
        keys = [f"sb:{{p{p}}}:lease" for p in range(self.args.partitions)]
        deadline = time.monotonic() + timeout
        while True:
            stack.check()
            holders = Counter(await self.r.mget(keys))
            shares = sorted(holders.values())
            if None not in holders and len(holders) == processes and shares[-1] - shares[0] <= 1:
                return
            if time.monotonic() > deadline:
                raise PhaseTimeout(f"partitions not shared by {processes} workers: {holders}")
            await asyncio.sleep(0.2)

    # ------------------------------------------------------------------ the sandbox's view

    async def sandbox_get(self, url: str) -> Any:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as http,
            http.get(url) as response,
        ):
            response.raise_for_status()
            return await response.json()

    async def accepted(self, stack: Stack) -> int:
        """Messages the sandbox accepted so far."""
        stats = await self.sandbox_get(f"{stack.sandbox_url}/_sandbox/stats")
        return int(stats["messages"]["accepted"])

    async def calls(self, stack: Stack) -> int:
        """Provider calls the sandbox got so far (the gateways make only send calls)."""
        stats = await self.sandbox_get(f"{stack.sandbox_url}/_sandbox/stats")
        return sum(stats["api_calls"].values())

    async def wait_accepted(self, stack: Stack, target: int, deadline: float) -> None:
        while await self.accepted(stack) < target:
            stack.check()
            if time.monotonic() > deadline:
                raise PhaseTimeout(
                    f"{target - await self.accepted(stack)} replies not accepted by the "
                    "sandbox before the phase deadline"
                )
            # Not often: the stats carry the send-call history, costly for the sandbox.
            await asyncio.sleep(0.5)

    async def replies(self, stack: Stack, count: int, tag: str) -> dict[int, float]:
        """Message number → wall-clock time the sandbox accepted its reply, for the last
        ``count`` messages the sandbox got that answer ``tag`` messages."""
        items = await self.sandbox_get(f"{stack.sandbox_url}/_sandbox/messages?limit={count}")
        found: dict[int, float] = {}
        for item in items:
            match = _REPLY.search(item.get("content", ""))
            if match and match[1] == tag:
                found[int(match[2])] = datetime.fromisoformat(item["submitted"]).timestamp()
        return found

    # ------------------------------------------------------------------ measuring

    def cpu(self, stack: Stack) -> dict[str, float]:
        """CPU seconds so far of each kind of process of ``stack``."""
        assert self.redis_server.pid is not None
        return {
            "gateway": sum(cpu_seconds(pid) for pid in stack.gateway_pids),
            "redis": cpu_seconds(self.redis_server.pid),
            "sandbox": cpu_seconds(stack.sandbox.pid),
            "load_generator": cpu_seconds(os.getpid()),
        }

    @contextlib.asynccontextmanager
    async def rss_peak(self, pids: Sequence[int], peaks: dict[int, int]) -> AsyncIterator[None]:
        """Sample the RSS of ``pids`` every 0.2 s meanwhile, keeping each one's peak."""

        async def sample() -> None:
            while True:
                for pid in pids:
                    with contextlib.suppress(OSError):
                        peaks[pid] = max(peaks.get(pid, 0), rss_bytes(pid))
                await asyncio.sleep(0.2)

        task = asyncio.create_task(sample())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def quiet(self, timeout: float = 20.0) -> None:
        """Until no inbox or outbox entry is left (handled entries are deleted), then a
        moment for the last commits."""
        keys = [
            f"sb:{{p{p}}}:{kind}" for p in range(self.args.partitions) for kind in ("in", "out")
        ]
        deadline = time.monotonic() + timeout
        while True:
            async with self.r.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.xlen(key)
                lengths = await pipe.execute()
            if not any(lengths):
                break
            if time.monotonic() > deadline:
                raise PhaseTimeout(f"{sum(lengths)} stream entries still there after {timeout} s")
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)

    async def key_sizes(self) -> dict[str, int]:
        """``MEMORY USAGE`` (exact: ``SAMPLES 0``) of every key."""
        keys = [key async for key in self.r.scan_iter(count=1000)]
        sizes: dict[str, int] = {}
        for start in range(0, len(keys), 1000):
            chunk = keys[start : start + 1000]
            async with self.r.pipeline(transaction=False) as pipe:
                for key in chunk:
                    pipe.memory_usage(key, samples=0)
                for key, size in zip(chunk, await pipe.execute(), strict=True):
                    sizes[key.decode()] = int(size or 0)
        return sizes

    async def used_memory(self) -> int:
        """``used_memory`` without the client and AOF buffers, which come and go with the
        traffic, not with the data."""
        info = await self.r.info("memory")
        buffers = sum(int(info.get(k, 0)) for k in ("mem_clients_normal", "mem_aof_buffer"))
        return int(info["used_memory"]) - buffers

    # ------------------------------------------------------------------ phases

    async def post(self, stack: Stack, jobs: Sequence[Job], tag: str, concurrency: int) -> None:
        """Post ``jobs`` and wait for all their replies (warm-up and memory phases)."""
        before = await self.accepted(stack)
        deadline = self.deadline()
        await closed_loop(
            stack.webhook_urls,
            jobs,
            tag=tag,
            secret=WEBHOOK_SECRET,
            concurrency=concurrency,
            deadline=deadline,
        )
        await self.wait_accepted(stack, before + len(jobs), deadline)

    async def warm_up(self, stack: Stack) -> None:
        count = self.args.warmup
        jobs = [Job(n, handset(9, n % self.args.conversations)) for n in range(count)]
        await self.post(stack, jobs, "w", min(self.args.concurrency, 16))
        await self.quiet()

    async def dump_all(self) -> dict[bytes, tuple[bytes, int]]:
        """Every key's ``DUMP`` and remaining TTL (ms; -1: none)."""
        keys = [key async for key in self.r.scan_iter(count=1000)]
        dumped: dict[bytes, tuple[bytes, int]] = {}
        for start in range(0, len(keys), 1000):
            chunk = keys[start : start + 1000]
            async with self.r.pipeline(transaction=False) as pipe:
                for key in chunk:
                    pipe.dump(key).pttl(key)
                replies = await pipe.execute()
            for i, key in enumerate(chunk):
                data, ttl = replies[2 * i], replies[2 * i + 1]
                if data is not None:
                    dumped[key] = (data, int(ttl))
        return dumped

    def restored_bytes(
        self, before: dict[bytes, tuple[bytes, int]], after: dict[bytes, tuple[bytes, int]]
    ) -> int:
        """What the keys of ``after`` take beyond those of ``before``, each set restored
        alone into an empty redis-server (prefilled, so that its keyspace's tables do not
        grow while loading): the allocations the data needs, without the fragmentation,
        the freed buffers and the table resizes of a server that has been running."""
        server = RedisServer(self.work / self.name("redis-restore"))
        server.start()
        try:
            r = redis.Redis.from_url(server.url)
            try:
                filler = r.pipeline(transaction=False)
                for i in range(4 * max(len(after), 10_000)):
                    filler.set(f"filler:{i}", "x", px=10**9)
                filler.execute()

                def used() -> int:
                    info = r.info("memory")
                    return int(info["used_memory"]) - int(info.get("mem_clients_normal", 0))

                def load(dumped: dict[bytes, tuple[bytes, int]]) -> int:
                    start = used()
                    pipe = r.pipeline(transaction=False)
                    for key, (data, ttl) in dumped.items():
                        pipe.restore(key, max(ttl, 0), data, replace=True)
                    pipe.execute()
                    grown = used() - start
                    pipe = r.pipeline(transaction=False)
                    for key in dumped:
                        pipe.delete(key)
                    pipe.execute()
                    return grown

                return load(after) - load(before)
            finally:
                r.close()
        finally:
            server.stop()

    async def idle_conversations(self, stack: Stack) -> dict[str, Any]:
        count = self.args.idle_conversations
        await self.quiet()
        used_before, keys_before = await self.used_memory(), await self.key_sizes()
        dumped_before = await self.dump_all()
        jobs = [Job(n, handset(1, n)) for n in range(count)]
        await self.post(stack, jobs, "i", min(self.args.concurrency, 16))
        await self.quiet()
        used_after, keys_after = await self.used_memory(), await self.key_sizes()
        dumped_after = await self.dump_all()
        restored = await asyncio.to_thread(self.restored_bytes, dumped_before, dumped_after)
        by_kind: dict[str, float] = defaultdict(float)
        for key in keys_before.keys() | keys_after.keys():
            delta = keys_after.get(key, 0) - keys_before.get(key, 0)
            if delta:
                by_kind[key_kind(key)] += delta / count
        return {
            "conversations": count,
            "exchange": "one inbound message and its reply, no receipts",
            "method": (
                "every key DUMPed before and after, each set RESTOREd alone into an empty "
                "redis-server: the used_memory difference / conversations"
            ),
            "bytes_per_conversation": round(restored / count),
            "used_memory_delta_per_conversation": round((used_after - used_before) / count),
            "used_memory_note": (
                "the running server's own used_memory delta: moves by hundreds of bytes "
                "with table resizes, fragmentation and buffers freed meanwhile"
            ),
            "memory_usage_note": (
                "MEMORY USAGE is Redis's own estimate per key; it leaves out allocator "
                "rounding and the keyspace's bookkeeping, so it sums to less"
            ),
            "memory_usage_by_kind": {k: round(v) for k, v in sorted(by_kind.items()) if round(v)},
            "memory_usage_total": round(sum(by_kind.values())),
        }

    async def ceiling(self, processes: int, shared_port: bool) -> dict[str, Any]:
        port = free_port()
        servers: list[Proc] = []
        urls: list[str] = []
        try:
            for _ in range(processes):
                own = port if shared_port else free_port()
                command = [PY, str(ROOT / "bench" / "bare_server.py"), "--port", str(own)]
                if shared_port and processes > 1:
                    command.append("--reuse-port")
                server = self.procs.start(self.name("bare"), command, self.base_env)
                servers.append(server)
                await wait_http(f"http://127.0.0.1:{own}/healthz", server)
                if not urls or not shared_port:
                    urls.append(f"http://127.0.0.1:{own}/webhooks/messages")
            jobs = [
                Job(n, handset(0, n % self.args.conversations)) for n in range(self.args.messages)
            ]
            cpu_before = sum(cpu_seconds(s.pid) for s in servers)
            sent = await closed_loop(
                urls,
                jobs,
                tag="c",
                secret=WEBHOOK_SECRET,
                concurrency=self.args.concurrency,
                deadline=self.deadline(),
            )
            cpu = sum(cpu_seconds(s.pid) for s in servers) - cpu_before
        finally:
            self.procs.stop(*servers)
        return {
            "processes": processes,
            "shared_port": shared_port,
            "messages": len(sent),
            "webhooks_per_s": round(rate(sent)),
            "ack_p50_ms": ms(percentile([s.ack for s in sent], 0.5)),
            "ack_p99_ms": ms(percentile([s.ack for s in sent], 0.99)),
            "cpu_us_per_message": round(cpu / len(sent) * 1e6),
        }

    async def end_to_end(
        self, stack: Stack, ceiling: dict[str, Any], peaks: dict[int, int]
    ) -> dict[str, Any]:
        count = self.args.messages
        jobs = [Job(n, handset(0, n % self.args.conversations)) for n in range(count)]
        before = await self.accepted(stack)
        calls_before = await self.calls(stack)
        cpu_before = self.cpu(stack)
        deadline = self.deadline()
        async with self.rss_peak(stack.gateway_pids, peaks):
            sent = await closed_loop(
                stack.webhook_urls,
                jobs,
                tag="e",
                secret=WEBHOOK_SECRET,
                concurrency=self.args.concurrency,
                deadline=deadline,
            )
            await self.wait_accepted(stack, before + count, deadline)
        cpu_after = self.cpu(stack)
        replied = await self.replies(stack, count, "e")
        calls = await self.calls(stack) - calls_before
        figures = latencies(sent, replied, "e")
        replies_per_s = count / (max(replied.values()) - min(s.started for s in sent))
        cpu_us = {
            kind: round((cpu_after[kind] - cpu_before[kind]) / count * 1e6) for kind in cpu_before
        }
        return {
            "processes": len(stack.gateways),
            "shared_port": stack.shared_port,
            "messages": count,
            "conversations": self.args.conversations,
            "concurrency": self.args.concurrency,
            "webhooks_per_s": round(rate(sent)),
            **figures,
            "replies_per_s": round(replies_per_s),
            "ratio_to_ceiling": round(replies_per_s / ceiling["webhooks_per_s"], 3),
            "cpu_us_per_message": cpu_us,
            "gateway_budget_us_at_target": budget(ceiling["webhooks_per_s"], cpu_us),
            "provider_calls": calls,
            "messages_per_call": round(count / max(calls, 1), 1),
            "webhook_retries": sum(s.retries for s in sent),
        }

    async def half_load(
        self, stack: Stack, saturation: float, peaks: dict[int, int]
    ) -> dict[str, Any]:
        offered = max(1.0, saturation / 2)
        count = max(10, round(offered * self.args.half_seconds))
        jobs = [Job(n, handset(0, n % self.args.conversations)) for n in range(count)]
        before = await self.accepted(stack)
        deadline = self.deadline()
        async with self.rss_peak(stack.gateway_pids, peaks):
            sent, late_p99 = await open_loop(
                stack.webhook_urls,
                jobs,
                tag="h",
                secret=WEBHOOK_SECRET,
                rate=offered,
                deadline=deadline,
            )
            await self.wait_accepted(stack, before + count, deadline)
        replied = await self.replies(stack, count, "h")
        return {
            "offered_per_s": round(offered),
            "messages": count,
            "achieved_per_s": round(rate(sent)),
            "generator_late_p99_ms": ms(late_p99),
            **latencies(sent, replied, "h"),
            "webhook_retries": sum(s.retries for s in sent),
        }

    async def outbound(self) -> dict[str, Any]:
        calls, period = self.args.throttle
        sandbox, sandbox_url = await self.start_sandbox(self.args.throttle)
        stack = Stack(self.name("stack"), sandbox, sandbox_url)
        throttle = (str(calls), f"{period:g}")
        try:
            backlog = 100 * calls * (self.args.outbound_periods + 1)
            port = free_port()
            web = await self.start_gateway(sandbox_url, port, role="web", throttle=throttle)
            try:
                await self.queue_backlog(f"http://127.0.0.1:{port}", backlog)
            finally:
                self.procs.stop(web)
            queued = time.time()
            drain_deadline = time.monotonic() + max(
                self.args.phase_timeout, 4 * period * (self.args.outbound_periods + 1)
            )
            stack.gateways.append(
                await self.start_gateway(sandbox_url, port, role="all", throttle=throttle)
            )
            stack.urls.append(f"http://127.0.0.1:{port}")
            await self.wait_accepted(stack, backlog, drain_deadline)
            stats = await self.sandbox_get(f"{sandbox_url}/_sandbox/stats")
            sends = [c for c in stats["send_calls"] if c["time"] >= queued]
            ok = sorted(c["time"] for c in sends if c["status"] == 202)
            span = ok[-1] - ok[0] if len(ok) > 1 else math.nan
            used = capacity_used(ok, calls, period)
            peak = max(
                (sum(1 for t in ok[i:] if t < start + period) for i, start in enumerate(ok)),
                default=0,
            )
            # Free calls for the lone replies: the sandbox's and the gateway's windows empty.
            await asyncio.sleep(1.5 * period + 0.5)
            lone = [await self.lone_reply(stack, i) for i in range(self.args.lone_replies)]
            stats = await self.sandbox_get(f"{sandbox_url}/_sandbox/stats")
        finally:
            self.stop_stack(stack)
        refused = sum(1 for c in stats["send_calls"] if c["status"] == 429)
        return {
            "throttle_calls": calls,
            "throttle_period_s": period,
            "backlog": backlog,
            "provider_calls": len(ok),
            "messages_per_call": round(backlog / len(ok), 1),
            "drain_s": round(span, 2),
            "capacity_used": round(used, 4),
            # What each call lost (its mean gap to the call CALLS before, less the period)
            # is a fixed cost per call: at the connector's real limit it weighs this much.
            "late_per_call_ms": ms(period / used - period) if used == used else math.nan,
            "capacity_used_at_real_limit": (
                round(REAL_PERIOD / (REAL_PERIOD + period / used - period), 4)
                if used == used
                else math.nan
            ),
            # The same loss, period by period: the first window's burst goes at the
            # gateway's full pace, so the next windows free their calls at that pace and any
            # hiccup is lost; the calls then spread out and the loss falls to its fixed part.
            "lost_per_call_by_period_ms": loss_by_period(ok, calls, period),
            "peak_calls_in_a_period": peak,
            "rate_limited_429": refused,
            "lone_reply_ms": [ms(s) for s in lone],
            "lone_reply_p50_ms": ms(percentile(lone, 0.5)),
            "lone_reply_max_ms": ms(max(lone)) if lone else math.nan,
        }

    async def queue_backlog(self, api: str, count: int) -> None:
        """``count`` messages through ``POST /api/messages``, 100 recipients a request."""
        headers = {"Authorization": f"Bearer {API_TOKEN}"}
        batches = [list(range(start, min(start + 100, count))) for start in range(0, count, 100)]
        async with aiohttp.ClientSession(headers=headers) as http:

            async def queue(batch: list[int]) -> None:
                body = {"to": [handset(3, i) for i in batch], "content": f"Notice {batch[0]}"}
                async with http.post(f"{api}/api/messages", json=body) as response:
                    if response.status != 202:
                        raise RuntimeError(f"queueing: {response.status} {await response.text()}")

            for start in range(0, len(batches), 4):
                await asyncio.gather(*(queue(b) for b in batches[start : start + 4]))

    async def lone_reply(self, stack: Stack, i: int) -> float:
        """Seconds from one webhook to its reply accepted by the sandbox, nothing else going."""
        [sent] = await closed_loop(
            stack.webhook_urls,
            [Job(i, handset(2, i))],
            tag="l",
            secret=WEBHOOK_SECRET,
            concurrency=1,
            deadline=self.deadline(),
        )
        deadline = time.monotonic() + 10
        url = f"{stack.sandbox_url}/_sandbox/messages?destination=%2B{handset(2, i)[1:]}"
        while True:
            for message in await self.sandbox_get(url):
                match = _REPLY.search(message.get("content", ""))
                if match and match[1] == "l" and int(match[2]) == i:
                    accepted = datetime.fromisoformat(message["submitted"]).timestamp()
                    await asyncio.sleep(0.3)  # lone: the next one does not overlap
                    return accepted - sent.started
            if time.monotonic() > deadline:
                raise PhaseTimeout(f"lone reply l{i} not accepted within 10 s")
            await asyncio.sleep(0.01)

    # ------------------------------------------------------------------ everything

    async def run(self) -> dict[str, Any]:
        args = self.args
        result: dict[str, Any] = {
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "commit": git("rev-parse", "--short", "HEAD"),
            "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
            "cores": os.cpu_count(),
            "python": sys.version.split()[0],
            "settings": {
                "messages": args.messages,
                "conversations": args.conversations,
                "concurrency": args.concurrency,
                "partitions": args.partitions,
                "processes": args.processes,
                "half_seconds": args.half_seconds,
                "throttle": f"{args.throttle[0]}/{args.throttle[1]:g}",
                "outbound_periods": args.outbound_periods,
                "idle_conversations": args.idle_conversations,
                "handler": args.handler or "default chain (bench/gateway_bench.py BOT_CONFIG)",
            },
        }
        self.redis_server.start()
        self.redis = aioredis.Redis.from_url(self.redis_server.url)

        with self.timed("start"):
            stack = await self.start_stack(1)
        peaks: dict[int, int] = {}
        try:
            with self.timed("warm-up"):
                await self.warm_up(stack)
            idle_rss = max(rss_bytes(pid) for pid in stack.gateway_pids)
            with self.timed("idle conversations"):
                redis_idle = await self.idle_conversations(stack)
            with self.timed("ceiling"):
                result["ceiling"] = await self.ceiling(1, True)
            with self.timed("end to end"):
                result["end_to_end"] = await self.end_to_end(stack, result["ceiling"], peaks)
            with self.timed("half load"):
                saturation = result["end_to_end"]["replies_per_s"]
                result["half_load"] = await self.half_load(stack, saturation, peaks)
        finally:
            self.stop_stack(stack)
        result["memory"] = {
            "gateway_rss_idle_mb": round(idle_rss / 2**20, 1),
            "gateway_rss_load_mb": round(max(peaks.values()) / 2**20, 1),
            "redis_idle_conversation": redis_idle,
        }

        result["scale_out"] = None
        if args.processes > 1:
            await self.r.flushall()
            with self.timed(f"start {args.processes} processes"):
                stack = await self.start_stack(args.processes)
            peaks = {}
            try:
                with self.timed(f"warm-up, {args.processes} processes"):
                    await self.warm_up(stack)
                with self.timed(f"ceiling, {args.processes} processes"):
                    ceiling = await self.ceiling(args.processes, stack.shared_port)
                with self.timed(f"end to end, {args.processes} processes"):
                    end_to_end = await self.end_to_end(stack, ceiling, peaks)
                result["scale_out"] = {
                    "processes": args.processes,
                    "shared_port": stack.shared_port,
                    "port_note": (
                        "the gateways share one port (SO_REUSEPORT)"
                        if stack.shared_port
                        else "sinchbot serve cannot share its port (no SO_REUSEPORT): each "
                        "gateway on its own port, the load generator spreads its connections "
                        "over them (and so does the ceiling)"
                    ),
                    "ceiling": ceiling,
                    "end_to_end": end_to_end,
                    "gateway_rss_load_mb": round(max(peaks.values()) / 2**20, 1),
                }
            finally:
                self.stop_stack(stack)

        result["split"] = None
        if args.processes > 1:
            await self.r.flushall()
            workers = args.processes - 1
            label = f"1 web + {workers} worker{'s' if workers > 1 else ''}"
            with self.timed(f"start {label}"):
                stack = await self.start_stack(args.processes, split=True)
            peaks = {}
            try:
                with self.timed(f"warm-up, {label}"):
                    await self.warm_up(stack)
                with self.timed(f"end to end, {label}"):
                    ceiling = (result["scale_out"] or {}).get("ceiling") or result["ceiling"]
                    end_to_end = await self.end_to_end(stack, ceiling, peaks)
                with self.timed(f"half load, {label}"):
                    half = await self.half_load(stack, end_to_end["replies_per_s"], peaks)
                result["split"] = {
                    "label": label,
                    "processes": args.processes,
                    "end_to_end": end_to_end,
                    "half_load": half,
                    "gateway_rss_load_mb": round(max(peaks.values()) / 2**20, 1),
                }
            finally:
                self.stop_stack(stack)

        await self.r.flushall()
        with self.timed("outbound"):
            result["outbound"] = await self.outbound()
        result["targets"] = targets(result)
        result["seconds"] = self.seconds
        return result

    @contextlib.contextmanager
    def timed(self, phase: str) -> Iterator[None]:
        """Say which phase runs (on stderr) and keep how long it took."""
        print(f"benchmark: {phase}", file=sys.stderr, flush=True)
        start = time.monotonic()
        try:
            yield
        finally:
            self.seconds[phase] = round(time.monotonic() - start, 1)

    async def close(self) -> None:
        self.procs.stop_all()
        if self.redis is not None:
            with contextlib.suppress(Exception):
                await self.redis.aclose()
        self.redis_server.stop()


def budget(ceiling_per_s: float, cpu_us: dict[str, int]) -> int:
    """Gateway CPU µs per message that would still fit on this machine's cores at the
    end-to-end target (half the ceiling), after what the others spent on each message in
    the same run (Redis, the sandbox, the load generator). Negative: the target cannot be
    met on this machine even by a gateway that costs nothing."""
    goal = TARGETS["end_to_end_ratio"][2] * ceiling_per_s
    cores = os.cpu_count() or 1
    others = sum(v for kind, v in cpu_us.items() if kind != "gateway")
    return round(cores * 1e6 / goal - others)


def capacity_used(calls: Sequence[float], limit: int, period: float) -> float:
    """The share of a sliding-window limit (``limit`` calls in any ``period`` seconds) that
    calls at these arrival times used: each call is compared with the one ``limit`` calls
    before it. Under the limit that gap is at least ``period``, and exactly ``period`` when
    no capacity is left unused, whether the calls come in bursts or evenly spaced; the
    figure is ``period`` over the mean gap (NaN with ``limit`` calls or fewer)."""
    gaps = [calls[i] - calls[i - limit] for i in range(limit, len(calls))]
    return period * len(gaps) / sum(gaps) if gaps and sum(gaps) > 0 else math.nan


def loss_by_period(calls: Sequence[float], limit: int, period: float) -> list[float]:
    """For each group of ``limit`` calls after the first (a period's worth when backlogged),
    the mean of each call's gap to the call ``limit`` before it, less ``period``: what each
    call of that group lost against the window, in ms."""
    groups = [
        range(start, min(start + limit, len(calls))) for start in range(limit, len(calls), limit)
    ]
    return [
        ms(sum(calls[i] - calls[i - limit] for i in group) / len(group) - period)
        for group in groups
        if len(group) == limit
    ]


def finite(value: Any) -> Any:
    """``value`` with NaN and infinities (a figure that could not be measured) as ``None``."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite(v) for v in value]
    return value


def key_kind(key: str) -> str:
    """``sb:{p3}:tl:<conversation>`` → ``tl``; ``sb:{p3}:convs`` → ``convs``;
    ``sb:{throttle:…}:calls`` → ``throttle``; ``sb:meta`` → ``meta``."""
    tagged = _TAGGED.match(key)
    if tagged:
        return tagged[2] if _PARTITION.fullmatch(tagged[1]) else tagged[1].split(":")[0]
    parts = key.split(":")
    return parts[1] if len(parts) > 1 else key


def rate(sent: Sequence[Sent]) -> float:
    """Webhooks answered per second, from the first send to the last answer."""
    end = max(s.started + s.ack for s in sent)
    return len(sent) / (end - min(s.started for s in sent))


def latencies(sent: Iterable[Sent], replied: dict[int, float], tag: str) -> dict[str, float]:
    sent = list(sent)
    missing = [s.n for s in sent if s.n not in replied]
    if missing:
        raise RuntimeError(
            f"{len(missing)} replies to {tag} messages not found at the sandbox (first: "
            f"{tag}{missing[0]}): the fallback reply did not answer them"
        )
    acks = [s.ack for s in sent]
    replies = [replied[s.n] - s.started for s in sent]
    return {
        "ack_p50_ms": ms(percentile(acks, 0.5)),
        "ack_p99_ms": ms(percentile(acks, 0.99)),
        "reply_p50_ms": ms(percentile(replies, 0.5)),
        "reply_p99_ms": ms(percentile(replies, 0.99)),
    }


def configurations(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The gateway set-ups measured end to end, by name: one process, N processes with
    role ``all`` sharing the port, one ``web`` and N - 1 ``worker`` processes."""
    found = {"1 process": {"end_to_end": result["end_to_end"], "half_load": result["half_load"]}}
    if result.get("scale_out"):
        x = result["scale_out"]
        found[f"{x['processes']} processes"] = {"end_to_end": x["end_to_end"]}
    if result.get("split"):
        found[result["split"]["label"]] = result["split"]
    return found


def targets(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each target with its value: for the speed targets the best of the set-ups measured
    (the issue counts the best of the process counts), named in ``by``."""
    setups = configurations(result)
    ratio_by, ratio = max(
        ((name, s["end_to_end"]["ratio_to_ceiling"]) for name, s in setups.items()),
        key=lambda pair: pair[1],
    )
    ack_by, ack = min(
        ((name, s["half_load"]["ack_p99_ms"]) for name, s in setups.items() if "half_load" in s),
        key=lambda pair: pair[1],
    )
    by = {"end_to_end_ratio": ratio_by, "half_load_ack_p99_ms": ack_by}
    values = {
        "end_to_end_ratio": ratio,
        "half_load_ack_p99_ms": ack,
        "outbound_capacity_used": result["outbound"]["capacity_used"],
        "outbound_429s": result["outbound"]["rate_limited_429"],
        "lone_reply_max_ms": result["outbound"]["lone_reply_max_ms"],
        "gateway_rss_load_mb": max(
            result["memory"]["gateway_rss_load_mb"],
            (result["scale_out"] or {}).get("gateway_rss_load_mb", 0),
            (result["split"] or {}).get("gateway_rss_load_mb", 0),
        ),
        "redis_bytes_per_idle_conversation": result["memory"]["redis_idle_conversation"][
            "bytes_per_conversation"
        ],
    }
    checked = {}
    for name, (label, op, goal) in TARGETS.items():
        value = values[name]
        met = value >= goal if op == ">=" else value <= goal
        checked[name] = {"label": label, "target": f"{op} {goal}", "value": value, "met": met}
        if name in by:
            checked[name]["by"] = by[name]
    return checked


# --------------------------------------------------------------------------- the report


def report(result: dict[str, Any]) -> list[str]:
    """The human-readable figures, side by side for each set-up measured (one process,
    N processes, the role split)."""
    s = result["settings"]
    e, c, h, o = (result[k] for k in ("end_to_end", "ceiling", "half_load", "outbound"))
    x = result["scale_out"]
    sp = result.get("split")
    mem = result["memory"]
    redis_idle = mem["redis_idle_conversation"]
    t = result["targets"]

    def mark(name: str) -> str:
        target = t[name]
        by = f" ({target['by']})" if "by" in target else ""
        return f"target {target['target']:<7} {'met' if target['met'] else 'NOT MET'}{by}"

    def row(label: str, one: Any, many: Any = "", split: Any = "", note: str = "") -> str:
        return f"  {label:<34} {one!s:>16} {many!s:>16} {split!s:>18}  {note}".rstrip()

    def pair(figures: dict[str, Any] | None, a: str, b: str) -> str:
        return f"{figures[a]:g} / {figures[b]:g}" if figures else ""

    def cpu(figures: dict[str, Any] | None) -> str:
        return str(figures["cpu_us_per_message"]["gateway"]) if figures else ""

    def others(figures: dict[str, Any] | None) -> str:
        if not figures:
            return ""
        return "{redis} / {sandbox} / {load_generator}".format(**figures["cpu_us_per_message"])

    def calls(figures: dict[str, Any] | None) -> str:
        return f"{figures['provider_calls']} ({figures['messages_per_call']})" if figures else ""

    def get(figures: dict[str, Any] | None, key: str) -> Any:
        return figures[key] if figures else ""

    def share(figures: dict[str, Any] | None) -> str:
        return f"{figures['ratio_to_ceiling']:.0%}" if figures else ""

    xe = x["end_to_end"] if x else None
    xc = x["ceiling"] if x else None
    se = sp["end_to_end"] if sp else None
    sh = sp["half_load"] if sp else None
    dirty = " (uncommitted changes)" if result["dirty"] else ""
    split_offered = f"; {sp['label']}: offered {sh['offered_per_s']}/s" if sp and sh else ""
    lines = [
        f"sinchbot gateway benchmark, {result['date']}, commit {result['commit']}{dirty}, "
        f"{result['cores']} cores, Python {result['python']}",
        f"  {s['messages']} messages over {s['conversations']} conversations, "
        f"{s['concurrency']} in flight, {s['partitions']} partitions; handler: {s['handler']}",
        "",
        row("", "1 process", f"{x['processes']} processes" if x else "", sp["label"] if sp else ""),
        "ceiling: bare aiohttp, same webhook",
        row("webhooks/s", c["webhooks_per_s"], get(xc, "webhooks_per_s")),
        row("ack p50 / p99 ms", pair(c, "ack_p50_ms", "ack_p99_ms"),
            pair(xc, "ack_p50_ms", "ack_p99_ms")),
        "end to end: webhook → handler chain → reply accepted by the sandbox",
        row("webhooks/s", e["webhooks_per_s"], get(xe, "webhooks_per_s"), get(se, "webhooks_per_s")),
        row("ack p50 / p99 ms", pair(e, "ack_p50_ms", "ack_p99_ms"),
            pair(xe, "ack_p50_ms", "ack_p99_ms"), pair(se, "ack_p50_ms", "ack_p99_ms")),
        row("reply p50 / p99 ms", pair(e, "reply_p50_ms", "reply_p99_ms"),
            pair(xe, "reply_p50_ms", "reply_p99_ms"), pair(se, "reply_p50_ms", "reply_p99_ms")),
        row("replies/s", e["replies_per_s"], get(xe, "replies_per_s"), get(se, "replies_per_s")),
        row("ratio to the ceiling", share(e), share(xe), share(se), mark("end_to_end_ratio")),
        row("gateway CPU µs/message", cpu(e), cpu(xe), cpu(se)),
        row("  budget at the target", get(e, "gateway_budget_us_at_target"),
            get(xe, "gateway_budget_us_at_target"), get(se, "gateway_budget_us_at_target"),
            "µs a message the cores leave the gateway at 50 % of the ceiling"),
        row("  redis / sandbox / load gen", others(e), others(xe), others(se)),
        row("provider calls (messages/call)", calls(e), calls(xe), calls(se)),
    ]  # fmt: skip
    if x:
        lines.append(f"  {x['processes']} processes: {x['port_note']}")
    if sp:
        lines.append(
            f"  {sp['label']}: the web process takes every webhook, the workers handle them; "
            f"its ratio is to the {x['processes'] if x else 1}-process ceiling"
        )
    lines += [
        f"half load: offered {h['offered_per_s']}/s for {h['messages']} messages "
        f"(achieved {h['achieved_per_s']}/s, generator late p99 {h['generator_late_p99_ms']} ms)"
        + split_offered,
        row("ack p50 / p99 ms", pair(h, "ack_p50_ms", "ack_p99_ms"), "",
            pair(sh, "ack_p50_ms", "ack_p99_ms"), mark("half_load_ack_p99_ms")),
        row("reply p50 / p99 ms", pair(h, "reply_p50_ms", "reply_p99_ms"), "",
            pair(sh, "reply_p50_ms", "reply_p99_ms")),
        f"outbound under the throttle: sandbox and gateway {o['throttle_calls']} calls per "
        f"{o['throttle_period_s']:g} s, a backlog of {o['backlog']} messages",
        row("messages per call", o["messages_per_call"], "", "",
            f"{o['provider_calls']} calls in {o['drain_s']} s"),
        row("throttle capacity used", f"{o['capacity_used']:.1%}", "", "",
            mark("outbound_capacity_used")),
        row("  lost per call; at 100 calls/60 s",
            f"{o['late_per_call_ms']:g} ms; {o['capacity_used_at_real_limit']:.2%}", "", "",
            "the same loss per call at the connector's real limit"),
        row("  lost per call, period by period",
            " ".join(f"{v:g}" for v in o["lost_per_call_by_period_ms"]), "", "",
            "ms; the first window's burst, then the calls spread out"),
        row("most calls in any period", f"{o['peak_calls_in_a_period']} of {o['throttle_calls']}"),
        row("429s received", o["rate_limited_429"], "", "", mark("outbound_429s")),
        row("lone reply p50 / max ms", f"{o['lone_reply_p50_ms']:g} / {o['lone_reply_max_ms']:g}",
            "", "", mark("lone_reply_max_ms")),
        "memory",
        row("gateway RSS idle MB", mem["gateway_rss_idle_mb"]),
        row("gateway RSS under load MB", t["gateway_rss_load_mb"]["value"], "", "",
            mark("gateway_rss_load_mb")),
        row("Redis bytes per idle conversation", redis_idle["bytes_per_conversation"], "", "",
            mark("redis_bytes_per_idle_conversation")),
        f"    ({redis_idle['method']}; the running server's own delta "
        f"{redis_idle['used_memory_delta_per_conversation']}; "
        f"{redis_idle['conversations']} conversations, "
        f"{redis_idle['exchange']})",
        "    MEMORY USAGE by key kind, bytes per conversation: "
        + ", ".join(f"{k} {v}" for k, v in redis_idle["memory_usage_by_kind"].items())
        + f" (total {redis_idle['memory_usage_total']})",
        "",
        "phases (s): " + ", ".join(f"{k} {v:g}" for k, v in result["seconds"].items()),
        f"targets met: {sum(v['met'] for v in t.values())} of {len(t)}",
    ]  # fmt: skip
    return lines


# --------------------------------------------------------------------------- command line


def throttle_arg(text: str) -> tuple[int, float]:
    try:
        return parse_throttle(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add = parser.add_argument
    add("--messages", type=positive, default=20000, help="messages of the end-to-end phase")
    add("--conversations", type=positive, default=500, help="handsets they come from")
    add("--concurrency", type=positive, default=64, help="webhooks in flight (closed loop)")
    add("--partitions", type=positive, default=16, help="SINCHBOT_PARTITIONS")
    add("--processes", type=positive, default=1, help="N > 1: also end to end with N gateways")
    add("--half-seconds", type=float, default=10.0, help="length of the half-load phase")
    add("--warmup", type=positive, default=500, help="messages before measuring")
    add("--idle-conversations", type=positive, default=1000, help="for Redis bytes each")
    add("--throttle", type=throttle_arg, default="20/2", metavar="CALLS/SECONDS",
        help="the scaled provider limit of the outbound phase (sandbox and gateway)")  # fmt: skip
    add("--outbound-periods", type=positive, default=3,
        help="backlog: 100 messages * CALLS * (this + 1)")  # fmt: skip
    add("--lone-replies", type=positive, default=5, help="lone replies timed after the backlog")
    add("--phase-timeout", type=float, default=300.0, help="seconds any one phase may take")
    add("--handler", metavar="MODULE:ATTR", help="SINCHBOT_HANDLER instead of the chain")
    add("--keep", action="store_true", help="keep the work folder (logs, Redis data)")
    return parser.parse_args(argv)


async def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    work = Path(tempfile.mkdtemp(prefix="sinchbot-bench-"))
    bench = Bench(args, work)
    failed = True
    try:
        result = await bench.run()
        failed = False
    finally:
        await bench.close()
        if failed or args.keep:
            print(f"work folder (logs, Redis data) kept: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    print("\n".join(report(result)))
    print(json.dumps(finite(result), separators=(",", ":"), allow_nan=False))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(asyncio.run(main()))
    except (KeyboardInterrupt, asyncio.CancelledError):
        sys.exit(130)
