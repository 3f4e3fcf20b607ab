"""One partition's stream as its lease holder reads it: fenced take-over and reads, the wait
for new entries, failure counts and dead letters.

A :class:`StreamSpec` names what a consumer reads (the inbox, the outbox or the forward
stream of a partition, and the consumer group); a :class:`PartitionStream` is that stream of
one partition, read by one worker (its consumer name is the worker id):

- :meth:`~PartitionStream.take_over` claims every pending entry of the group, whoever read
  it (``XAUTOCLAIM … 0 0-0 JUSTID``, following the cursor: no minimum idle time, because we
  hold the lease), forgets the consumers left with nothing pending (workers that are gone),
  and loads the partition's failure counts. What a crashed or departed owner had read and
  not finished is ours now.
- :meth:`~PartitionStream.read` returns our own pending entries first (the claimed ones, and
  any a read whose reply was lost left there), in id order, then new ones (``XREADGROUP …
  >``). A cursor moves past what was returned, so an entry still being worked on is not
  returned twice; :meth:`~PartitionStream.take_over` rewinds it.
- :meth:`~PartitionStream.wait` blocks (``XREAD BLOCK``) until the stream has an entry
  after the newest one seen, or until an event is set (a drain, say).

Claims and reads are **fenced**: a small script checks the partition's lease first and
raises :class:`Fenced` when it is not ours, so a worker that lost its lease cannot take
entries away from the new owner. Every command and script touches only the partition's
own keys (its stream, lease and failures hash share the hash tag ``{pN}``), so each is valid
on Redis Cluster.

Failure counts live in the partition's failures hash (:meth:`PartitionKeys.failures
<bot.storage.keys.PartitionKeys.failures>`), one field per entry with the stream's prefix
(``in:``, ``out:``, ``fwd:``), written in the same commit as the outcome that counted them
and removed with the entry's acknowledgement (:meth:`~PartitionStream.ack`). An entry that
failed too often is copied to the dead-letter stream (:func:`write_letters`) and only then
acknowledged, by the next commit: two steps, since the dead-letter stream is not in the
partition's hash slot (:mod:`bot.streams.dlq`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from redis.exceptions import RedisError, ResponseError

from bot.core.logs import mask_text
from bot.storage.connection import RedisClient
from bot.storage.keys import PartitionKeys
from bot.storage.store import Batch, text, text_map
from bot.streams import dlq

__all__ = [
    "CLAIM_COUNT",
    "CLAIM_ROUNDS",
    "Entry",
    "Fenced",
    "Letter",
    "PartitionStream",
    "StreamScripts",
    "StreamSpec",
    "TakeOver",
    "write_letters",
]

log = structlog.get_logger(__name__)

Fields = dict[bytes, bytes]

CLAIM_COUNT = 100
"""Pending entries claimed per ``XAUTOCLAIM`` call during a take-over."""
CLAIM_ROUNDS = 10
"""``XAUTOCLAIM`` calls per script call (bounds the time the script holds Redis)."""

# Read up to ARGV[3] entries, if the lease is still ours: our own pending entries after
# ARGV[4] first (a read whose reply was lost, e.g. retried by the client after a dropped
# connection, left them there), else new ones. With nothing to read, return the newest id in
# the stream: any entry added later has a greater id (wait for it with XREAD).
_READ = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {'fenced'} end
local mine = redis.call('XREADGROUP', 'GROUP', ARGV[2], ARGV[1], 'COUNT', ARGV[3], 'STREAMS', KEYS[2], ARGV[4])
if mine and mine[1] and #mine[1][2] > 0 then return {'ok', mine[1][2]} end
local r = redis.call('XREADGROUP', 'GROUP', ARGV[2], ARGV[1], 'COUNT', ARGV[3], 'STREAMS', KEYS[2], '>')
if r then return {'ok', r[1][2]} end
local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
if last[1] then return {'idle', last[1][1]} end
return {'idle', '0-0'}
"""

# Claim every pending entry of the group for ARGV[1], if the lease is still ours: up to
# ARGV[5] rounds of ARGV[4] from cursor ARGV[3]; returns the next cursor ('0-0': done), how
# many were claimed and the other consumers that had entries pending (named on the first
# call, cursor '0-0'). When done, forget the consumers with nothing pending (workers that
# are gone).
_CLAIM = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {'fenced'} end
local holders = {}
if ARGV[3] == '0-0' then
  for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[2], ARGV[2])) do
    local name, pending
    for i = 1, #c, 2 do
      if c[i] == 'name' then name = c[i + 1] elseif c[i] == 'pending' then pending = c[i + 1] end
    end
    if name ~= ARGV[1] and pending > 0 then table.insert(holders, name) end
  end
end
local cursor = ARGV[3]
local claimed = 0
for round = 1, tonumber(ARGV[5]) do
  local r = redis.call('XAUTOCLAIM', KEYS[2], ARGV[2], ARGV[1], 0, cursor, 'COUNT', ARGV[4], 'JUSTID')
  cursor = r[1]
  claimed = claimed + #r[2]
  if cursor == '0-0' then break end
end
if cursor == '0-0' then
  for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[2], ARGV[2])) do
    local name, pending
    for i = 1, #c, 2 do
      if c[i] == 'name' then name = c[i + 1] elseif c[i] == 'pending' then pending = c[i + 1] end
    end
    if name ~= ARGV[1] and pending == 0 then
      redis.call('XGROUP', 'DELCONSUMER', KEYS[2], ARGV[2], name)
    end
  end
end
return {'ok', cursor, claimed, holders}
"""

# Forget our consumer in the group once it holds nothing pending (a clean hand-over).
_LEAVE = """
if #redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2]) == 0 then
  return redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
end
return -1
"""


class Fenced(Exception):
    """The partition's lease is no longer ours: stop without acknowledging anything."""


@dataclass(frozen=True)
class StreamSpec:
    """Which stream of each partition a consumer reads, and how it names its entries
    elsewhere (the failures hash, the dead-letter stream, the logs)."""

    kind: str
    """What an entry is: the dead letters' ``kind`` and the logs' prefix (``inbox``...)."""
    group: str
    """The consumer group."""
    stream: Callable[[PartitionKeys], str]
    """The partition's stream key."""
    failure_prefix: str
    """Prefix of an entry's field in the partition's failures hash (``in:``...)."""
    noun: str
    """How the logs name one entry (``inbox entry``, ``forward event``...)."""

    def failure_field(self, entry_id: str) -> str:
        """Field of an entry in its partition's failures hash (failures so far)."""
        return self.failure_prefix + entry_id

    def failure_fields(self, entry_ids: Iterable[str]) -> list[str]:
        return [self.failure_prefix + entry_id for entry_id in entry_ids]


@dataclass(frozen=True)
class Entry:
    """One stream entry as read: its id and raw fields (none: deleted while pending)."""

    id: str
    fields: Fields

    @property
    def gone(self) -> bool:
        """Deleted from the stream while pending: nothing to do but acknowledge it."""
        return not self.fields

    def text_fields(self) -> dict[str, str]:
        return text_map(self.fields)


@dataclass(frozen=True)
class TakeOver:
    """What a take-over found."""

    claimed: int
    """Pending entries claimed (ours already included)."""
    holders: list[str]
    """Other consumers that had entries pending (the workers we took them from)."""
    state: dict[str, str]
    """The partition's failures hash as it was (counts of every stream, the commit
    counter)."""


@dataclass(frozen=True)
class Letter:
    """An entry to dead-letter, and what to say about it in the log."""

    partition: int
    entry_id: str
    fields: Mapping[bytes, bytes] | Mapping[str, str]
    reason: str
    deliveries: int = 0
    details: Mapping[str, Any] = field(default_factory=dict)
    """Extra fields of the log line (ids of the message, why...)."""


class StreamScripts:
    """The scripts of :class:`PartitionStream`, registered once per consumer."""

    def __init__(self, redis: RedisClient) -> None:
        self.read: Any = redis.register_script(_READ)
        self.claim: Any = redis.register_script(_CLAIM)
        self.leave: Any = redis.register_script(_LEAVE)


def _pairs(flat: Sequence[Any] | None) -> Fields:
    flat = flat or []
    return {flat[i]: flat[i + 1] for i in range(0, len(flat), 2)}


async def write_letters(redis: RedisClient, spec: StreamSpec, letters: Sequence[Letter]) -> None:
    """Copy entries of ``spec``'s streams (of any partitions) to the dead-letter stream in
    one round trip, and log each at error level. The caller acknowledges them afterwards."""
    if not letters:
        return
    await dlq.dead_letter(
        redis,
        [
            dlq.DeadLetter.of(
                source=spec.stream(PartitionKeys(letter.partition)),
                entry=letter.entry_id,
                partition=letter.partition,
                group=spec.group,
                kind=spec.kind,
                fields=letter.fields,
                reason=letter.reason,
                deliveries=letter.deliveries,
            )
            for letter in letters
        ],
    )
    for letter in letters:
        log.error(
            f"{spec.noun} dead-lettered",
            partition=letter.partition,
            entry=letter.entry_id,
            deliveries=letter.deliveries,
            reason=mask_text(letter.reason[:300]),
            **letter.details,
        )


class PartitionStream:
    """``spec``'s stream of ``partition``, read by worker ``me`` (see the module docstring).

    Not shared between tasks: one partition task reads it."""

    def __init__(
        self,
        redis: RedisClient,
        scripts: StreamScripts,
        spec: StreamSpec,
        partition: int,
        me: str,
    ) -> None:
        self.redis = redis
        self.scripts = scripts
        self.spec = spec
        self.partition = partition
        self.me = me
        self.keys = PartitionKeys(partition)
        self.name = spec.stream(self.keys)
        """The stream's key."""
        self.cursor = "0"
        """Our own pending entries after this id are read before new ones."""
        self.last: bytes | str = "0-0"
        """The newest id in the stream at the last read that found nothing."""
        self.failures: dict[str, int] = {}
        """Failures so far by entry id (mirrors the failures hash; loaded by the take-over)."""
        self._lettered: set[str] = set()
        self._rewinds = 0

    # ------------------------------------------------------------ reading

    async def ensure_group(self) -> None:
        """Create the consumer group (and the stream) unless it exists."""
        try:
            await self.redis.xgroup_create(self.name, self.spec.group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def take_over(self) -> TakeOver:
        """Claim every pending entry of the group, whoever read it, and load the failure
        counts; the next reads return the claimed entries first, oldest first.

        Raises:
            Fenced: the lease is not ours.
        """
        cursor = "0-0"
        claimed = 0
        holders: list[str] = []
        while True:
            reply = await self.scripts.claim(
                keys=[self.keys.lease, self.name],
                args=[self.me, self.spec.group, cursor, CLAIM_COUNT, CLAIM_ROUNDS],
            )
            if text(reply[0]) == "fenced":
                raise Fenced
            cursor = text(reply[1])
            claimed += int(reply[2])
            holders += [text(name) for name in reply[3] or []]
            if cursor == "0-0":
                break
        state = text_map(await self.redis.hgetall(self.keys.failures()))
        prefix = self.spec.failure_prefix
        self.failures = {
            name.removeprefix(prefix): int(count)
            for name, count in state.items()
            if name.startswith(prefix)
        }
        self.cursor = "0"
        return TakeOver(claimed, sorted(set(holders)), state)

    async def read(self, count: int) -> list[Entry]:
        """Up to ``count`` entries: our own pending ones after :attr:`cursor` first, else
        new ones; none when there is nothing to read (then :meth:`wait`).

        Raises:
            Fenced: the lease is not ours.
        """
        rewinds = self._rewinds
        reply = await self.scripts.read(
            keys=[self.keys.lease, self.name],
            args=[self.me, self.spec.group, max(1, count), self.cursor],
        )
        status = text(reply[0])
        if status == "fenced":
            raise Fenced
        if status != "ok":
            self.last = reply[1]
            return []
        entries = [Entry(text(raw[0]), _pairs(raw[1])) for raw in reply[1]]
        if entries and rewinds == self._rewinds:  # a rewind during the read wins
            self.cursor = entries[-1].id
        return entries

    def rewind(self) -> None:
        """Read our own pending entries from the oldest again (after leaving some pending
        on purpose: a failure to retry in stream order, a buffer dropped)."""
        self.cursor = "0"
        self._rewinds += 1

    async def wait(self, seconds: float, interrupt: asyncio.Event) -> None:
        """Wait until the stream has an entry after the newest one seen, ``seconds``
        passed, or ``interrupt`` is set. Raises a Redis error, if any."""
        if interrupt.is_set():
            return
        read = asyncio.ensure_future(
            self.redis.xread({self.name: self.last}, count=1, block=max(1, round(seconds * 1000)))
        )
        woken = asyncio.ensure_future(interrupt.wait())
        try:
            await asyncio.wait({read, woken}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in (read, woken):
                waiting.cancel()
            await asyncio.gather(read, woken, return_exceptions=True)
        if read.done() and not read.cancelled():
            read.result()

    async def leave(self) -> None:
        """Forget our consumer in the group if it holds nothing pending (after a clean
        hand-over; the next owner's take-over would forget it anyway)."""
        with contextlib.suppress(RedisError):
            await self.scripts.leave(keys=[self.name], args=[self.spec.group, self.me])

    # ------------------------------------------------------------ committing

    def fence(self, batch: Batch) -> Batch:
        """Add the lease check to ``batch``: refused as ``fenced`` once the lease moved."""
        return batch.fence(self.keys.lease, self.me)

    def ack(self, batch: Batch, entry_ids: Sequence[str]) -> Batch:
        """Acknowledge and delete entries in ``batch``, with their failure counts."""
        batch.xack(self.name, self.spec.group, entry_ids)
        return batch.hdel(self.keys.failures(), self.spec.failure_fields(entry_ids))

    def add_failure(self, batch: Batch, entry_id: str) -> int:
        """Count one more failure of an entry in ``batch``; returns the count it writes
        (remember it with :meth:`settle` once the batch is committed)."""
        count = self.failures.get(entry_id, 0) + 1
        batch.hset(self.keys.failures(), {self.spec.failure_field(entry_id): str(count)})
        return count

    def settle(self, done: Iterable[str], failed: Mapping[str, int] | None = None) -> None:
        """A commit went through: forget the entries ``done``, remember the counts of those
        that ``failed``."""
        for entry_id in done:
            self.failures.pop(entry_id, None)
            self._lettered.discard(entry_id)
        self.failures.update(failed or {})

    async def dead_letter(self, letters: Sequence[Letter]) -> int:
        """Copy entries to the dead-letter stream, once each (the next commit acknowledges
        them); returns how many were written now."""
        fresh = [letter for letter in letters if letter.entry_id not in self._lettered]
        await write_letters(self.redis, self.spec, fresh)
        self._lettered.update(letter.entry_id for letter in fresh)
        return len(fresh)
