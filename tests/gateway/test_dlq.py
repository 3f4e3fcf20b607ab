"""The dead-letter stream and ``sinchbot dlq`` against a real Redis."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis as sync_redis
from redis.asyncio import Redis

from bot import cli
from bot.storage.connection import connect, is_cluster_url, seed_nodes
from bot.storage.keys import DLQ, FORWARD_GROUP, INBOX_GROUP, OUTBOX_GROUP, PartitionKeys
from bot.storage.redis_server import RedisServer
from bot.streams import dlq

INBOX = PartitionKeys(3).inbox
CONV = "+61491570100:+61491570156"


def letter(n: int, **fields: str) -> dlq.DeadLetter:
    return dlq.DeadLetter.of(
        source=INBOX,
        entry=f"1700000000000-{n}",
        partition=3,
        group=INBOX_GROUP,
        kind="inbox",
        fields=fields or {"k": "message", "c": CONV, "e": json.dumps({"n": n})},
        reason=f"RuntimeError: failure {n}",
        deliveries=5,
    )


@pytest.mark.cluster
async def test_dead_letters_are_listed_oldest_first_with_where_they_came_from(
    redis: Redis,
) -> None:
    ids = await dlq.dead_letter(redis, [letter(0), letter(1)])
    entries = await dlq.list_dead(redis)
    assert [e.id for e in entries] == ids
    first = entries[0]
    assert (first.source, first.entry, first.partition, first.group, first.kind) == (
        INBOX,
        "1700000000000-0",
        3,
        INBOX_GROUP,
        "inbox",
    )
    assert (first.deliveries, first.reason) == (5, "RuntimeError: failure 0")
    assert first.fields == {"k": "message", "c": CONV, "e": '{"n": 0}'}
    assert first.at > 0
    assert first.to_json()["fields"]["c"] == CONV
    assert [e.id for e in await dlq.list_dead(redis, 1)] == ids[:1]
    assert await dlq.count(redis) == 2


@pytest.mark.cluster
async def test_replay_puts_the_original_fields_back_and_removes_the_letter(
    redis: Redis,
) -> None:
    ids = await dlq.dead_letter(redis, [letter(0), letter(1), letter(2)])
    assert await dlq.replay(redis, [ids[1], "1-1"]) == 1  # an unknown id is skipped
    [(_, fields)] = await redis.xrange(INBOX)
    assert fields == {b"k": b"message", b"c": CONV.encode(), b"e": b'{"n": 1}'}
    assert [e.id for e in await dlq.list_dead(redis)] == [ids[0], ids[2]]

    assert await dlq.replay(redis, "all") == 2
    assert await dlq.count(redis) == 0
    assert await redis.xlen(INBOX) == 3


async def test_a_letter_written_twice_is_replayed_once(redis: Redis) -> None:
    await dlq.dead_letter(redis, [letter(0), letter(0), letter(1)])
    assert await dlq.replay(redis, "all") == 2
    assert await redis.xlen(INBOX) == 2
    assert await dlq.count(redis) == 0


@pytest.mark.cluster
async def test_replay_all_goes_through_every_page(redis: Redis) -> None:
    await dlq.dead_letter(redis, [letter(n) for n in range(dlq.PAGE * 2 + 5)])
    assert await dlq.replay(redis, "all") == dlq.PAGE * 2 + 5
    assert await redis.xlen(INBOX) == dlq.PAGE * 2 + 5
    assert await dlq.count(redis) == 0


async def test_bytes_that_are_not_utf8_survive_the_round_trip(redis: Redis) -> None:
    raw = dlq.DeadLetter.of(
        source=INBOX,
        entry=b"1-0",
        partition=3,
        group=INBOX_GROUP,
        kind="inbox",
        fields={b"junk": b"\xff\xfe ok"},
        reason="undecodable",
    )
    await dlq.dead_letter(redis, [raw])
    assert await dlq.replay(redis, "all") == 1
    [(_, fields)] = await redis.xrange(INBOX)
    assert fields == {b"junk": b"\xff\xfe ok"}


async def test_letters_written_by_other_components_are_read_and_replayed(redis: Redis) -> None:
    """The forwarder writes the same shape (its own XADD); replay works on those too."""
    source = PartitionKeys(2).forward
    await redis.xadd(
        DLQ,
        {
            "source": source,
            "group": FORWARD_GROUP,
            "entry": "5-0",
            "partition": "2",
            "kind": "forward",
            "deliveries": "5",
            "reason": "HTTP 500",
            "fields": json.dumps({"id": "e1", "type": "message.received"}),
            "at": "1700000000.000",
        },
    )
    [entry] = await dlq.list_dead(redis)
    assert (entry.kind, entry.partition, entry.deliveries) == ("forward", 2, 5)
    assert await dlq.replay(redis, "all") == 1
    [(_, fields)] = await redis.xrange(source)
    assert fields == {b"id": b"e1", b"type": b"message.received"}


async def test_letters_in_the_short_shape_are_read_too(redis: Redis) -> None:
    """ "stream" and "error" instead of "source" and "reason", no partition or kind."""
    source = PartitionKeys(5).outbox
    await redis.xadd(
        DLQ,
        {
            "stream": source,
            "entry": "6-0",
            "group": OUTBOX_GROUP,
            "fields": json.dumps({"id": "g1"}),
            "error": "invalid destination",
            "at": "1700000000.000",
        },
    )
    [entry] = await dlq.list_dead(redis)
    assert (entry.source, entry.partition, entry.kind, entry.reason) == (
        source,
        5,
        "outbox",
        "invalid destination",
    )
    assert await dlq.replay(redis, [entry.id]) == 1
    [(_, fields)] = await redis.xrange(source)
    assert fields == {b"id": b"g1"}


@pytest.mark.cluster
async def test_purge_deletes_chosen_letters_or_all(redis: Redis) -> None:
    ids = await dlq.dead_letter(redis, [letter(n) for n in range(3)])
    assert await dlq.purge(redis, [ids[0]]) == 1
    assert await dlq.purge(redis, []) == 0
    assert [e.id for e in await dlq.list_dead(redis)] == ids[1:]
    assert await dlq.purge(redis, "all") == 2
    assert await dlq.count(redis) == 0


async def test_ids_that_are_not_stream_ids_are_refused(redis: Redis) -> None:
    with pytest.raises(ValueError, match="not a stream entry id: 'nope'"):
        await dlq.replay(redis, ["nope"])
    with pytest.raises(ValueError, match="not a stream entry id"):
        await dlq.purge(redis, ["1-2-3"])


# --------------------------------------------------------------------------- the CLI


@pytest.fixture
def env(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, redis_url: str
) -> Iterator[sync_redis.Redis]:
    """SINCHBOT_REDIS_URL pointing at the test Redis (flushed; a cluster for the tests marked
    ``cluster``), nothing else configured."""
    for name in list(os.environ):
        if name.startswith("SINCHBOT_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SINCHBOT_REDIS_URL", redis_url)
    client: Any = (
        sync_redis.RedisCluster(*seed_nodes(redis_url)[0])
        if is_cluster_url(redis_url)
        else sync_redis.Redis.from_url(redis_url)
    )
    client.flushdb()
    yield client
    client.close()


def seed(count: int) -> list[str]:
    """Dead letters written through the async API (the CLI runs its own event loop)."""

    async def write() -> list[str]:
        client = connect(os.environ["SINCHBOT_REDIS_URL"])
        try:
            return await dlq.dead_letter(client, [letter(n) for n in range(count)])
        finally:
            await client.aclose()

    return asyncio.run(write())


@pytest.mark.cluster
def test_cli_lists_dead_letters(env: sync_redis.Redis, capsys: pytest.CaptureFixture[str]) -> None:
    ids = seed(3)
    assert cli.main(["dlq", "list", "--count", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == [
        "ID",
        "PARTITION",
        "KIND",
        "FAILURES",
        "DEAD",
        "AT",
        "CONVERSATION",
        "REASON",
    ]
    assert lines[1].startswith(ids[0])
    assert "+********100:+********156" in lines[1]  # numbers masked in the table
    assert CONV not in lines[1]
    assert "RuntimeError: failure 0" in lines[1]
    assert lines[-1].startswith("the oldest 2 of 3 dead letters")

    assert cli.main(["dlq", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [e["id"] for e in listed] == ids
    assert listed[0]["fields"]["c"] == CONV


def test_cli_says_so_when_the_dlq_is_empty(
    env: sync_redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["dlq", "list"]) == 0
    assert capsys.readouterr().out == "no dead letters\n"


@pytest.mark.cluster
def test_cli_replays_and_purges(env: sync_redis.Redis, capsys: pytest.CaptureFixture[str]) -> None:
    ids = seed(4)
    assert cli.main(["dlq", "replay", ids[0]]) == 0
    assert capsys.readouterr().out == "replayed 1 dead letter\n"
    assert env.xlen(INBOX) == 1
    assert cli.main(["dlq", "purge", ids[1], ids[2]]) == 0
    assert capsys.readouterr().out == "deleted 2 dead letters\n"
    assert cli.main(["dlq", "replay", "--all"]) == 0
    assert capsys.readouterr().out == "replayed 1 dead letter\n"
    assert env.xlen(INBOX) == 2
    assert env.xlen(DLQ) == 0


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["dlq", "replay"], "give dead-letter IDs or --all"),
        (["dlq", "purge", "1-0", "--all"], "give dead-letter IDs or --all"),
        (["dlq", "replay", "nope"], "not a stream entry id: 'nope'"),
        (["dlq", "list", "--count", "0"], "expected a number >= 1"),
    ],
)
def test_cli_refuses_bad_arguments_in_one_line(
    env: sync_redis.Redis, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert cli.main(argv) in (1, 2)
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert message in err


def test_cli_needs_the_redis_url(
    env: sync_redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    monkeypatch.delenv("SINCHBOT_REDIS_URL")
    monkeypatch.setenv("SINCHBOT_DATA_DIR", str(tmp_path))
    assert cli.main(["dlq", "list"]) == 1
    assert capsys.readouterr().err == (
        "sinchbot: error: SINCHBOT_REDIS_URL is not set and no embedded Redis is running in "
        "SINCHBOT_DATA_DIR (the DLQ lives in the gateway's Redis)\n"
    )


def test_cli_finds_the_embedded_redis_of_a_running_gateway(
    env: sync_redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:

    monkeypatch.delenv("SINCHBOT_REDIS_URL")
    monkeypatch.setenv("SINCHBOT_DATA_DIR", str(tmp_path))
    with RedisServer(tmp_path / "redis"):  # what `sinchbot serve` starts with no URL
        assert cli.main(["dlq", "list"]) == 0
    assert "no dead letters" in capsys.readouterr().out.lower()


def test_cli_reports_an_unreachable_redis_in_one_line(
    env: sync_redis.Redis, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from bot.storage.redis_server import free_port

    monkeypatch.setenv("SINCHBOT_REDIS_URL", f"redis://:s3cret@127.0.0.1:{free_port()}/0")
    assert cli.main(["dlq", "list"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("sinchbot: error: Redis at 127.0.0.1:")
    assert err.count("\n") == 1
    assert "s3cret" not in err
