"""The gateway as real processes (``python -m bot serve``), crashed and stopped for real.

Rows of the failure table (shared spec §A6) that need a process to die:

1. kill -9 after XREADGROUP, before the commit → a survivor takes the partitions over after
   the lease TTL; every message is handled and answered exactly once.
2. kill -9 between the provider's 202 and the record → every message delivered; the only
   duplicates are the crashed worker's in-flight batch, and the survivor logs them.
3. kill -9 in the webhook after XADD, before the 200 → the provider's retry is recognised:
   one inbound event, one reply.
4. redis-server kill -9 and restart under a running gateway → 503 while it is down, nothing
   acknowledged is lost, the workers reconnect and replies flow again.
15. SIGTERM under load → stops taking webhooks and reading, drains the batch in hand, exits
    0; the next start finishes what was accepted, nothing lost, nothing twice.

And ``sinchbot serve`` with no configuration at all: the demo answers a handset.

Each test uses its own redis-server under ``tmp_path`` and an in-test sandbox as the
provider, prints its figures, and kills every process it started in ``finally``.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis

from bot.sandbox import Sandbox, SandboxConfig
from bot.sender.throttle import Throttle, connection_id
from bot.storage.keys import INBOX_GROUP, PartitionKeys, conversation_key, partition_of
from bot.storage.redis_server import RedisServer
from bot.storage.store import text as as_text
from tests.gateway.process_handlers import TEXTS, ack_text
from tests.gateway.procutil import (
    SERVE,
    GatewayProcess,
    conversation,
    descendants,
    eventually,
    free_port,
    gateway_env,
    mo_payload,
    post_webhook,
)

pytestmark = pytest.mark.slow

SECRET = "hook-secret"
TOKEN = "api-token"
OURS = "+61491570157"
P = 4
LEASE = 1.5
ACK = "tests.gateway.process_handlers:Ack"
SLOW_ACK = "tests.gateway.process_handlers:SlowAck"


# ---------------------------------------------------------------------- fixtures, helpers


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test alone (it may be killed).

    Its data lives in memory (``/dev/shm``) when it can: while a slow fsync of the AOF is
    under way, Redis holds back further AOF writes for up to 2 s yet still answers, so on
    a busy disk a ``kill -9`` can lose writes already acknowledged (docs/operations.md,
    "Redis"). These tests are about the gateway's recovery, not the disk under Redis.
    """
    shm = Path("/dev/shm")
    base = Path(tempfile.mkdtemp(prefix="sinchbot-redis-", dir=shm)) if shm.is_dir() else tmp_path
    server = RedisServer(base / "redis")
    server.start()
    try:
        yield server
    finally:
        server.kill()
        if base != tmp_path:
            shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
async def rc(own_redis: RedisServer) -> AsyncIterator[Redis]:
    client = Redis.from_url(own_redis.url)
    yield client
    await client.aclose()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


def provider(gateway_port: int, **changes: Any) -> Sandbox:
    """The provider: pushes inbound messages and receipts to the gateway on
    ``gateway_port`` (with the shared secret in the URL, as a registered webhook would)."""
    gw = f"http://127.0.0.1:{gateway_port}"
    options: dict[str, Any] = {
        "port": 0,
        "step_delay": 0.01,
        "time_scale": 0.05,
        "webhook_url": f"{gw}/webhooks/messages?token={SECRET}",
        "receipt_url": f"{gw}/webhooks/receipts?token={SECRET}",
        **changes,
    }
    return Sandbox(SandboxConfig(**options))


def env_for(sb: Sandbox, redis_url: str, tmp_path: Path, **extra: object) -> dict[str, str]:
    """A production configuration of a gateway process against ``sb`` and our Redis."""
    values: dict[str, object] = {
        "redis_url": redis_url,
        "base_url": sb.url,
        "api_key": sb.api_key,
        "api_secret": sb.api_secret,
        "webhook_secret": SECRET,
        "api_token": TOKEN,
        "partitions": P,
        "lease_ttl": LEASE,
        "throttle_calls": 20,
        "throttle_period": 1.0,
        "handler": ACK,
        "data_dir": tmp_path / "data",
        **extra,
    }
    return gateway_env(**values)


def handsets(per_partition: int, partitions: int = P) -> list[str]:
    """Handset numbers, ``per_partition`` in each partition."""
    found: dict[int, list[str]] = {p: [] for p in range(partitions)}
    index = 0
    while any(len(numbers) < per_partition for numbers in found.values()):
        number = f"+6149157{index:04d}"
        index += 1
        numbers = found[partition_of(number, partitions)]
        if len(numbers) < per_partition:
            numbers.append(number)
    return [number for p in sorted(found) for number in found[p]]


def messages(numbers: Sequence[str], each: int, tag: str) -> dict[str, list[str]]:
    """``each`` distinct texts per handset."""
    return {n: [f"{tag} {n[-4:]} #{i}" for i in range(each)] for n in numbers}


@dataclass
class Tally:
    """Replies at the handsets against the messages sent."""

    messages: int = 0
    answered: int = 0
    missing: int = 0
    duplicates: int = 0
    unexpected: list[str] = field(default_factory=list)
    duplicate_ids: set[str] = field(default_factory=set)


def tally(sb: Sandbox, sent: Mapping[str, Sequence[str]]) -> Tally:
    result = Tally()
    ids: Counter[str] = Counter()
    for number, texts in sent.items():
        received = sb.handset(number).received
        got = Counter(m["content"] for m in received)
        ids.update(m["metadata"].get("gw_id", "") for m in received)
        wanted = {ack_text(t) for t in texts}
        result.unexpected += [c for c in got if c not in wanted]
        for text in texts:
            count = got[ack_text(text)]
            result.messages += 1
            result.answered += count > 0
            result.missing += count == 0
            result.duplicates += max(0, count - 1)
    result.duplicate_ids = {gw_id for gw_id, n in ids.items() if n > 1}
    return result


async def all_answered(sb: Sandbox, sent: Mapping[str, Sequence[str]]) -> bool:
    return tally(sb, sent).missing == 0


async def stream_lengths(rc: Redis, partitions: int = P) -> tuple[int, int]:
    """Entries left in the inbox and outbox streams (processed ones are deleted)."""
    pipe = rc.pipeline(transaction=False)
    for p in range(partitions):
        pipe.xlen(PartitionKeys(p).inbox)
        pipe.xlen(PartitionKeys(p).outbox)
    lengths = await pipe.execute()
    return sum(lengths[0::2]), sum(lengths[1::2])


async def settle(rc: Redis, sb: Sandbox, partitions: int = P) -> None:
    """Wait until the provider pushed everything and the gateway processed it all."""

    async def quiet() -> bool:
        await sb.wait_idle(timeout=20)
        return await stream_lengths(rc, partitions) == (0, 0)

    await eventually(quiet, timeout=30, interval=0.2, what="every stream processed")


async def holders(rc: Redis, partitions: int = P) -> dict[int, int | None]:
    """Partition → pid of the worker holding its lease (worker ids are host:pid:random)."""
    result: dict[int, int | None] = {}
    for p in range(partitions):
        value = await rc.get(PartitionKeys(p).lease)
        result[p] = int(as_text(value).rsplit(":", 2)[1]) if value else None
    return result


async def shared_by(rc: Redis, pids: set[int | None]) -> bool:
    """Every partition leased, and by exactly the processes ``pids``."""
    held = await holders(rc)
    return None not in held.values() and set(held.values()) == pids


async def send_all(sb: Sandbox, sent: Mapping[str, Sequence[str]]) -> None:
    """Every handset sends its texts (the sandbox pushes them to the gateway)."""
    await asyncio.gather(
        *(sb.handset(number).send(text) for number, texts in sent.items() for text in texts)
    )


async def check_sessions(
    http: aiohttp.ClientSession, url: str, sent: Mapping[str, Sequence[str]]
) -> None:
    """Each message changed its conversation's state exactly once, and is on the timeline
    exactly once."""
    for number, texts in sent.items():
        view = await conversation(http, url, conversation_key(OURS, number), token=TOKEN)
        assert view is not None, number
        assert Counter(view["data"][TEXTS]) == Counter(texts), number
        inbound = [e["data"]["text"] for e in view["timeline"] if e["kind"] == "inbound"]
        assert Counter(inbound) == Counter(texts), number


def figures(name: str, **values: object) -> None:
    shown = " ".join(
        f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items()
    )
    print(f"\n[{name}] {shown}")


# ---------------------------------------------------------------------- row 1


async def test_row1_kill_after_read_before_commit_survivor_answers_each_once(
    tmp_path: Path, own_redis: RedisServer, rc: Redis, http: aiohttp.ClientSession
) -> None:
    began = time.monotonic()
    sent = messages(handsets(3), 5, "r1")
    a_port, b_port = free_port(), free_port()
    async with provider(b_port) as sb:
        env = env_for(sb, own_redis.url, tmp_path)
        a = GatewayProcess("A", tmp_path, env, port=a_port)
        b = GatewayProcess("B", tmp_path, env, port=b_port)
        try:
            a.start(SINCHBOT_CRASH_AT="after_handle_before_commit")
            await a.wait_ready()
            b.start()
            await b.wait_ready()
            await eventually(lambda: shared_by(rc, {a.pid, b.pid}), what="A and B sharing")
            a_partitions = sorted(p for p, pid in (await holders(rc)).items() if pid == a.pid)

            await send_all(sb, sent)
            assert await a.wait_exit(20) == 137
            crashed = time.monotonic()
            assert "crash point after_handle_before_commit reached" in a.stderr()
            await eventually(lambda: all_answered(sb, sent), timeout=30, what="every reply")
            recovered = time.monotonic() - crashed
            await settle(rc, sb)

            result = tally(sb, sent)
            taken = sum(int(r["entries"]) for r in b.events("inbox: took over pending entries"))
            figures(
                "row 1",
                messages=result.messages,
                replies=result.answered + result.duplicates,
                duplicates=result.duplicates,
                a_partitions=a_partitions,
                taken_over=taken,
                recovery_s=recovered,
                total_s=time.monotonic() - began,
            )
            assert result.missing == 0
            assert result.duplicates == 0
            assert result.unexpected == []
            assert taken >= 1  # A had read entries it never committed; B handled them
            await check_sessions(http, b.url, sent)
        finally:
            a.close()
            b.close()


# ---------------------------------------------------------------------- row 2


async def test_row2_kill_between_send_and_record_resends_one_logged_batch(
    tmp_path: Path, own_redis: RedisServer, rc: Redis, http: aiohttp.ClientSession
) -> None:
    began = time.monotonic()
    sent = messages(handsets(3), 5, "r2")
    a_port, b_port = free_port(), free_port()
    async with provider(b_port) as sb:
        env = env_for(sb, own_redis.url, tmp_path)
        a = GatewayProcess("A", tmp_path, env, port=a_port)
        b = GatewayProcess("B", tmp_path, env, port=b_port)
        try:
            a.start(SINCHBOT_CRASH_AT="after_send_before_record")
            await a.wait_ready()
            b.start()
            await b.wait_ready()
            await eventually(lambda: shared_by(rc, {a.pid, b.pid}), what="A and B sharing")

            # Hold the shared throttle (as a 429 would) so the replies pile up and each
            # sender's first call carries a real batch: A dies with all of it on the wire.
            throttle = Throttle(rc, connection_id(sb.url, sb.api_key), calls=20, period=1.0)
            await throttle.pause(2.0)
            await send_all(sb, sent)
            assert await a.wait_exit(20) == 137
            crashed = time.monotonic()
            assert "crash point after_send_before_record reached" in a.stderr()
            await eventually(lambda: all_answered(sb, sent), timeout=30, what="every reply")
            await settle(rc, sb)  # B took A's partitions over and resent its batch
            recovered = time.monotonic() - crashed

            result = tally(sb, sent)
            warnings = b.events("possible duplicate send after a crash")
            logged = {gw_id for record in warnings for gw_id in record["gw_ids"]}
            calls = [c for c in sb.stats()["send_calls"] if c["status"] == 202]
            figures(
                "row 2",
                messages=result.messages,
                replies=result.answered + result.duplicates,
                duplicates=result.duplicates,
                logged_possible_duplicates=len(logged),
                provider_calls=len(calls),
                largest_batch=max(c["messages"] for c in calls),
                recovery_s=recovered,
                total_s=time.monotonic() - began,
            )
            assert result.missing == 0
            assert result.unexpected == []
            # The crashed batch reached the provider and was sent again: those are the only
            # duplicates, each sent twice, all of them named in the survivor's log.
            assert result.duplicates >= 1
            assert result.duplicates == len(result.duplicate_ids)
            assert result.duplicate_ids == logged
            assert result.duplicates <= max(c["messages"] for c in calls) <= 100
            assert await rc.exists(throttle.log_key)  # the throttle the gateways use
            assert all(r["dead"].split(":")[1] == str(a.pid) for r in warnings)
            await check_sessions(http, b.url, sent)
        finally:
            a.close()
            b.close()


# ---------------------------------------------------------------------- row 3


async def test_row3_kill_after_enqueue_before_answer_the_retry_is_deduplicated(
    tmp_path: Path, own_redis: RedisServer, rc: Redis, http: aiohttp.ClientSession
) -> None:
    began = time.monotonic()
    handset = handsets(1)[0]
    port = free_port()
    async with provider(port) as sb:
        g = GatewayProcess("G", tmp_path, env_for(sb, own_redis.url, tmp_path), port=port)
        try:
            g.start(SINCHBOT_CRASH_AT="after_enqueue_before_answer")
            await g.wait_ready()
            payload = mo_payload(handset, "only once")

            first = await post_webhook(http, g.url, payload, secret=SECRET)
            assert first.status == 0  # no answer: for the provider, a failed push
            assert await g.wait_exit(10) == 137
            assert "crash point after_enqueue_before_answer reached" in g.stderr()
            assert await stream_lengths(rc) == (1, 0)  # durable, though never acknowledged

            g.start()  # the same port, no crash point: the provider retries here
            await g.wait_ready()
            retries = [await post_webhook(http, g.url, payload, secret=SECRET) for _ in range(3)]
            assert [(r.status, r.outcome) for r in retries] == [(200, "duplicate")] * 3

            sent = {handset: ["only once"]}
            await eventually(lambda: all_answered(sb, sent), timeout=30, what="the reply")
            await settle(rc, sb)
            result = tally(sb, sent)
            key = conversation_key(OURS, handset)
            view = await conversation(http, g.url, key, token=TOKEN)
            assert view is not None
            timeline = [e["kind"] for e in view["timeline"]]
            figures(
                "row 3",
                messages=1,
                posts=1 + len(retries),
                replies=result.answered + result.duplicates,
                duplicates=result.duplicates,
                timeline=timeline,
                total_s=time.monotonic() - began,
            )
            assert result.missing == 0
            assert result.duplicates == 0
            assert timeline.count("inbound") == 1
            assert timeline.count("outbound") == 1
            assert timeline.count("sent") == 1
            assert view["data"][TEXTS] == ["only once"]
            assert sum(r["event"] == "webhook duplicate" for r in g.logs(2)) == 3
        finally:
            g.close()


# ---------------------------------------------------------------------- row 4


async def test_row4_redis_killed_and_restarted_nothing_acknowledged_is_lost(
    tmp_path: Path, own_redis: RedisServer, http: aiohttp.ClientSession
) -> None:
    began = time.monotonic()
    numbers = handsets(3)
    before = messages(numbers, 3, "before")  # accepted, then Redis dies at once
    during = messages(numbers[:5], 1, "during")  # refused with 503, retried after
    after = messages(numbers, 1, "after")  # sent once Redis is back
    everything = {n: before[n] + during.get(n, []) + after[n] for n in numbers}
    port = free_port()
    # Real push retry delays: receipts pushed while Redis is down are retried later.
    async with provider(port, time_scale=1.0, callback_attempts=8, callback_backoff=0.25) as sb:
        g = GatewayProcess("G", tmp_path, env_for(sb, own_redis.url, tmp_path), port=port)
        try:
            g.start()
            await g.wait_ready()
            pid = g.pid

            async def post_all(batch: Mapping[str, Sequence[str]]) -> list[int]:
                answers = await asyncio.gather(
                    *(
                        post_webhook(http, g.url, payloads[(n, t)], secret=SECRET)
                        for n, texts in batch.items()
                        for t in texts
                    )
                )
                return [a.status for a in answers]

            payloads = {(n, t): mo_payload(n, t) for n, texts in everything.items() for t in texts}
            assert set(await post_all(before)) == {200}
            own_redis.kill()
            down = time.monotonic()
            answered_at_kill = tally(sb, before).answered

            refused = [
                await post_webhook(http, g.url, payloads[(n, t)], secret=SECRET)
                for n, texts in during.items()
                for t in texts
            ]
            assert {a.status for a in refused} == {503}
            assert all(a.headers.get("Retry-After") for a in refused)
            assert all(a.body == {"error": "temporarily unavailable"} for a in refused)
            async with http.get(f"{g.url}/readyz") as response:
                assert response.status == 503
            # Stay down longer than a lease, so the leases expire and must be taken again.
            await asyncio.sleep(max(0.0, LEASE + 0.5 - (time.monotonic() - down)))
            await asyncio.to_thread(own_redis.start)
            outage = time.monotonic() - down

            async def retried() -> bool:  # the provider retries what got a 503
                return set(await post_all(during)) == {200}

            await eventually(retried, timeout=20, interval=0.2, what="the retries accepted")
            assert set(await post_all(after)) == {200}
            try:
                await eventually(
                    lambda: all_answered(sb, everything), timeout=30, what="every reply"
                )
            except AssertionError as exc:
                missing = {n: t for n, t in everything.items() if not all_answered(sb, {n: t})}
                raise AssertionError(
                    f"{exc}; unanswered handsets {sorted(missing)}; gateway log:\n{g.story()}"
                ) from None
            recovered = time.monotonic() - down
            async with Redis.from_url(own_redis.url) as rc:
                await settle(rc, sb)
            result = tally(sb, everything)
            errors = [r for r in g.logs() if "redis" in str(r.get("event", "")).lower()]
            figures(
                "row 4",
                messages=result.messages,
                accepted_before_kill=sum(len(t) for t in before.values()),
                answered_at_kill=answered_at_kill,
                refused_503=len(refused),
                replies=result.answered + result.duplicates,
                duplicates=result.duplicates,
                redis_log_lines=len(errors),
                outage_s=outage,
                recovery_s=recovered,
                total_s=time.monotonic() - began,
            )
            assert result.missing == 0
            assert result.duplicates == 0
            assert result.unexpected == []
            assert g.running and g.pid == pid  # the same process reconnected
            async with http.get(f"{g.url}/readyz") as response:
                assert response.status == 200
            await check_sessions(http, g.url, everything)
        finally:
            g.close()


# ---------------------------------------------------------------------- row 15


async def test_row15_sigterm_under_load_drains_exits_0_and_the_next_start_finishes(
    tmp_path: Path, own_redis: RedisServer, rc: Redis, http: aiohttp.ClientSession
) -> None:
    began = time.monotonic()
    partitions = 2
    numbers = handsets(10, partitions)
    load = messages(numbers, 30, "load")  # 600: several batches per partition
    late = messages(numbers, 5, "late")  # posted while the gateway stops
    everything = {n: load[n] + late[n] for n in numbers}
    payloads = {(n, t): mo_payload(n, t) for n, texts in everything.items() for t in texts}
    port = free_port()
    async with provider(port) as sb:
        env = env_for(sb, own_redis.url, tmp_path, handler=SLOW_ACK, partitions=partitions)
        g = GatewayProcess("G", tmp_path, env, port=port)
        try:
            g.start()
            await g.wait_ready()
            limit = asyncio.Semaphore(50)

            async def post(number: str, text: str) -> int:
                async with limit:
                    answer = await post_webhook(
                        http, g.url, payloads[(number, text)], secret=SECRET
                    )
                    return answer.status

            statuses = await asyncio.gather(
                *(post(n, t) for n, texts in load.items() for t in texts)
            )
            assert set(statuses) == {200}

            def replies() -> int:
                return sum(len(sb.handset(n).received) for n in numbers)

            await eventually(lambda: replies() > 0, timeout=20, what="the first replies")
            g.signal()  # SIGTERM while it works
            stopping = time.monotonic()

            # The provider keeps pushing while the gateway stops.
            outcome: dict[tuple[str, str], int] = {}
            for number, texts in late.items():
                for text in texts:
                    outcome[(number, text)] = await post(number, text) if g.running else 0
            exit_code = await g.wait_exit(40)
            drained = time.monotonic() - stopping
            replies_at_exit = replies()
            pending = 0
            for p in range(partitions):
                summary: Any = await rc.xpending(PartitionKeys(p).inbox, INBOX_GROUP)
                pending += int(summary["pending"])
            left_in, left_out = await stream_lengths(rc, partitions)
            inflight = [key async for key in rc.scan_iter(match="sb:inflight:*")]

            g.start()  # the next start (provider retries what was not accepted)
            await g.wait_ready()
            retried = [key for key, status in outcome.items() if status != 200]
            for number, text in retried:
                assert await post(number, text) == 200
            await eventually(lambda: all_answered(sb, everything), timeout=30, what="every reply")
            await settle(rc, sb, partitions)
            result = tally(sb, everything)
            figures(
                "row 15",
                messages=result.messages,
                accepted_while_stopping=sum(s == 200 for s in outcome.values()),
                refused_while_stopping=len(retried),
                replies_before_exit=replies_at_exit,
                left_in_inbox=left_in,
                left_in_outbox=left_out,
                replies=result.answered + result.duplicates,
                duplicates=result.duplicates,
                drain_s=drained,
                total_s=time.monotonic() - began,
            )
            assert exit_code == 0
            assert pending == 0  # whatever was read was handled and committed
            assert inflight == []  # the batch on the wire was recorded
            assert left_in > 0  # it stopped reading with work left...
            assert 0 < replies_at_exit < result.messages
            assert result.missing == 0  # ...which the next start finished
            assert result.duplicates == 0
            assert result.unexpected == []
            assert g.events("worker stopped", run=1)
            await check_sessions(http, g.url, everything)
        finally:
            g.close()


# ---------------------------------------------------------------------- zero configuration


async def test_sinchbot_serve_without_configuration_answers_a_handset(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    began = time.monotonic()
    script = shutil.which("sinchbot", path=str(Path(sys.executable).parent))
    command = [script, "serve"] if script else list(SERVE)
    sandbox_port = free_port()
    env = gateway_env(sandbox_port=sandbox_port)
    del env["SINCHBOT_LOG_FORMAT"]  # a new user's environment: nothing set
    g = GatewayProcess("demo", tmp_path, env, command=command)
    embedded: list[int] = []
    try:
        g.start()
        ready = await g.wait_ready()
        assert g.pid is not None
        embedded = descendants(g.pid)
        banner = g.stdout()
        assert "zero-configuration demo mode" in banner
        assert f"sandbox on http://127.0.0.1:{sandbox_port}" in banner
        assert "accepting unauthenticated webhooks (sandbox demo mode)" in banner
        assert f"data in {Path('.sinchbot') / 'redis'}" in banner

        handset = "+61491570158"  # not the demo's handset (its sample reminder is waiting)
        url = f"http://127.0.0.1:{sandbox_port}/_sandbox/handsets/{handset}/messages"
        async with http.post(url, json={"content": "hi"}) as response:
            assert response.status == 201
        key = conversation_key(OURS, handset)
        view: dict[str, Any] = {}

        async def complete() -> bool:
            nonlocal view
            view = await conversation(http, g.url, key) or {}
            receipts = [
                e["data"]["status"] for e in view.get("timeline", []) if e["kind"] == "receipt"
            ]
            return "delivered" in receipts

        await eventually(complete, timeout=30, interval=0.2, what="the reply's receipts")
        kinds = [e["kind"] for e in view["timeline"]]
        assert kinds[:3] == ["inbound", "outbound", "sent"]
        assert '"hi"' in view["timeline"][1]["data"]["text"]  # the demo's fallback
        [record] = view["messages"].values()
        assert record["status"] == "delivered"
        async with http.get(
            f"http://127.0.0.1:{sandbox_port}/_sandbox/handsets/{handset}/messages"
        ) as r:
            received = await r.json()
        exit_code = await g.terminate()
        figures(
            "zero-config",
            messages=1,
            replies=len(received if isinstance(received, list) else received.get("messages", [])),
            timeline=kinds,
            ready_s=ready,
            total_s=time.monotonic() - began,
        )
        assert exit_code == 0
        assert list((tmp_path / ".sinchbot" / "redis").glob("appendonly*"))
        assert embedded, "the embedded redis-server runs as a child of the gateway"
        await eventually(
            lambda: not any(Path(f"/proc/{pid}").exists() for pid in embedded),
            timeout=10,
            what="the embedded redis-server gone",
        )
    finally:
        g.close()
