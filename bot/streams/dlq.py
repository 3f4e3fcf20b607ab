"""The dead-letter stream: entries that failed too often, kept for inspection and replay.

An inbox, outbox or forward entry that fails ``max_deliveries`` times (or cannot even be
decoded) is copied to the :data:`~bot.storage.keys.DLQ` stream and only then acknowledged
and deleted in its partition: two idempotent steps, since the DLQ is not in the partition's
hash slot (a crash between them leaves a harmless duplicate in the DLQ, never a loss).
The partition's stream keeps flowing.

Each DLQ entry has these fields:

``source``       the stream the entry came from (e.g. ``sb:{p3}:in``)
``group``        the consumer group that failed on it (``engine``, ``sender``, ``forwarder``)
``entry``        its id in ``source``
``partition``    its partition
``kind``         what it is (``inbox``, ``outbox``, ``forward``)
``deliveries``   how many times it failed
``reason``       the last error (bounded)
``fields``       the original fields, a JSON object of strings (bytes that are not UTF-8
                 survive as surrogate escapes)
``at``           when it was dead-lettered (seconds since the epoch)

Write them with :class:`DeadLetter` and :func:`dead_letter`. Letters in a shorter shape
(``stream`` and ``error`` instead of ``source`` and ``reason``, no ``partition`` or ``kind``)
are read too.

:func:`replay` appends the original fields to the source stream again, as a new entry at
the end of the partition (the ingress dedupe is not re-checked), and deletes the DLQ entry;
``sinchbot dlq list|replay|purge`` is the command line for it.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from redis.asyncio.client import Pipeline
from redis.asyncio.cluster import ClusterPipeline

from bot.storage.connection import RedisClient
from bot.storage.keys import DLQ, FORWARD_GROUP, INBOX_GROUP, OUTBOX_GROUP
from bot.storage.store import text, text_map

MAX_REASON = 1000
"""Characters of the error kept with a dead letter."""
DLQ_MAXLEN = 100_000
"""The DLQ is trimmed (approximately) beyond this many entries, so a flood of bad input
cannot fill Redis; the trim is logged by nobody, so alert on the DLQ's length instead."""
PAGE = 100
_ENTRY_ID = re.compile(r"^\d+(-\d+)?$")
_PARTITION_TAG = re.compile(r"\{p(\d+)\}")
_KINDS = {INBOX_GROUP: "inbox", OUTBOX_GROUP: "outbox", FORWARD_GROUP: "forward"}

All = Literal["all"]


def _str(value: bytes | str) -> str:
    return value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else value


def _bytes(value: str) -> bytes:
    return value.encode("utf-8", "surrogateescape")


@dataclass(frozen=True)
class DeadLetter:
    """An entry to dead-letter: where it came from, what it was and why it failed."""

    source: str
    entry: str
    partition: int
    group: str
    kind: str
    fields: Mapping[str, str]
    reason: str
    deliveries: int = 0
    at: float = field(default_factory=time.time)

    @classmethod
    def of(
        cls,
        *,
        source: str,
        entry: bytes | str,
        partition: int,
        group: str,
        kind: str,
        fields: Mapping[bytes, bytes] | Mapping[str, str],
        reason: str,
        deliveries: int = 0,
    ) -> DeadLetter:
        """Build one from a raw stream entry (bytes or str fields)."""
        return cls(
            source=source,
            entry=_str(entry),
            partition=partition,
            group=group,
            kind=kind,
            fields={_str(k): _str(v) for k, v in fields.items()},
            reason=reason,
            deliveries=deliveries,
        )

    def to_fields(self) -> dict[str, str]:
        return {
            "source": self.source,
            "group": self.group,
            "entry": self.entry,
            "partition": str(self.partition),
            "kind": self.kind,
            "deliveries": str(self.deliveries),
            "reason": self.reason[:MAX_REASON],
            "fields": json.dumps(dict(self.fields), separators=(",", ":")),
            "at": f"{self.at:.3f}",
        }


@dataclass(frozen=True)
class DeadEntry(DeadLetter):
    """A dead letter as stored, with its id in the DLQ."""

    id: str = ""

    @classmethod
    def from_stream(cls, entry_id: bytes | str, raw: Mapping[Any, Any]) -> DeadEntry:
        data = text_map(raw)
        try:
            fields = json.loads(data.get("fields", "{}"))
        except json.JSONDecodeError:
            fields = {}
        if not isinstance(fields, dict):
            fields = {}
        # Older or hand-written letters may say "stream" and "error", and omit the
        # partition and kind: read what can be known.
        source = data.get("source") or data.get("stream", "")
        group = data.get("group", "")
        tag = _PARTITION_TAG.search(source)
        return cls(
            id=text(entry_id),
            source=source,
            entry=data.get("entry", ""),
            partition=_int(data.get("partition") or (tag.group(1) if tag else None), -1),
            group=group,
            kind=data.get("kind") or _KINDS.get(group, ""),
            fields={str(k): str(v) for k, v in fields.items()},
            reason=data.get("reason") or data.get("error", ""),
            deliveries=_int(data.get("deliveries"), 0),
            at=_float(data.get("at")),
        )

    def to_json(self) -> dict[str, Any]:
        """A JSON-friendly view (``sinchbot dlq list --json``)."""
        return {
            "id": self.id,
            "source": self.source,
            "entry": self.entry,
            "partition": self.partition,
            "group": self.group,
            "kind": self.kind,
            "deliveries": self.deliveries,
            "reason": self.reason,
            "at": self.at,
            "fields": dict(self.fields),
        }


def _int(value: str | None, default: int) -> int:
    try:
        return int(value or "")
    except ValueError:
        return default


def _float(value: str | None) -> float:
    try:
        return float(value or "")
    except ValueError:
        return 0.0


def add(pipe: Pipeline | ClusterPipeline | RedisClient, letter: DeadLetter) -> Any:
    """Queue (on a pipeline) or send the ``XADD`` of one dead letter."""
    return pipe.xadd(DLQ, letter.to_fields(), maxlen=DLQ_MAXLEN, approximate=True)  # type: ignore[arg-type]


async def dead_letter(redis: RedisClient, letters: Sequence[DeadLetter]) -> list[str]:
    """Write dead letters in one round trip; returns their DLQ ids."""
    if not letters:
        return []
    async with redis.pipeline(transaction=False) as pipe:
        for letter in letters:
            add(pipe, letter)
        ids = await pipe.execute()
    return [text(i) for i in ids]


async def count(redis: RedisClient) -> int:
    """Entries in the DLQ."""
    return int(await redis.xlen(DLQ))


async def list_dead(redis: RedisClient, count: int = 100, *, start: str = "-") -> list[DeadEntry]:
    """The oldest ``count`` dead letters from ``start`` (a DLQ id, inclusive)."""
    raw: Any = await redis.xrange(DLQ, min=start, max="+", count=count)
    return [DeadEntry.from_stream(entry_id, fields) for entry_id, fields in raw]


def _check_ids(ids: Sequence[str]) -> None:
    for entry_id in ids:
        if not _ENTRY_ID.match(entry_id):
            raise ValueError(f"not a stream entry id: {entry_id!r} (ids look like 1712345678901-0)")


async def _pages(redis: RedisClient, ids: Sequence[str] | All) -> AsyncIterator[list[DeadEntry]]:
    """The chosen dead letters (all of them, or those of ``ids`` that exist), a page at a
    time."""
    if ids == "all":
        start = "-"
        while True:
            page = await list_dead(redis, PAGE, start=start)
            if page:
                yield page
            if len(page) < PAGE:
                return
            start = "(" + page[-1].id
    _check_ids(ids)
    for offset in range(0, len(ids), PAGE):
        chosen: list[DeadEntry] = []
        async with redis.pipeline(transaction=False) as pipe:
            for entry_id in ids[offset : offset + PAGE]:
                pipe.xrange(DLQ, min=entry_id, max=entry_id, count=1)
            for found in await pipe.execute():
                chosen.extend(DeadEntry.from_stream(i, f) for i, f in found)
        if chosen:
            yield chosen


async def replay(redis: RedisClient, entry_ids: Sequence[str] | All) -> int:
    """Append dead letters to their source streams again (as new entries, at the end),
    then delete them from the DLQ. Returns how many were replayed; unknown ids are skipped,
    and so are letters without a source. A letter written twice for one entry (a crash
    between the two steps of dead-lettering) is replayed once. The ingress dedupe is not
    re-checked."""
    replayed = 0
    seen: set[tuple[str, str]] = set()
    async for page in _pages(redis, entry_ids):
        usable = [e for e in page if e.source and e.fields]
        fresh = []
        for entry in usable:
            if (entry.source, entry.entry) not in seen:
                seen.add((entry.source, entry.entry))
                fresh.append(entry)
        async with redis.pipeline(transaction=False) as pipe:
            for entry in fresh:
                pipe.xadd(entry.source, {_bytes(k): _bytes(v) for k, v in entry.fields.items()})
            await pipe.execute()
        if usable:
            await redis.xdel(DLQ, *[e.id for e in usable])
        replayed += len(fresh)
    return replayed


async def purge(redis: RedisClient, entry_ids: Sequence[str] | All) -> int:
    """Delete dead letters for good. Returns how many were deleted."""
    if entry_ids == "all":
        deleted = await count(redis)
        await redis.delete(DLQ)
        return deleted
    if not entry_ids:
        return 0
    _check_ids(entry_ids)
    return int(await redis.xdel(DLQ, *entry_ids))
