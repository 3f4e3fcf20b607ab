"""Batched, atomic writes to Redis: one Lua call applies a whole batch of operations.

Every part of the message path (the engine committing a batch of handled events, the
sender recording a sent batch, the receipt merger) describes its writes as a :class:`Batch`
of small operations and commits them in **one** script call. The script first checks every
guard — a partition lease still held by this worker (fencing), session versions unchanged
(optimistic concurrency) — and only then applies every effect, so a batch is all or nothing
and a stale worker can never write.

Keys are passed in ``KEYS`` (so the script is valid on Redis Cluster as long as a batch
stays within one hash slot, which the key schema in :mod:`bot.storage.keys` guarantees per
partition).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bot.core import fastjson
from bot.storage.connection import RedisClient

# Progress ranks of an outbound message for the monotonic merge (queued is 0): an error ending outranks
# "delivered" so that, for a multipart message, a later part's success never hides an
# earlier part's failure; within a rank, the first final status sticks.
RANK_SENT = 1
RANK_ENROUTE = 2
RANK_SUBMITTED = 3
RANK_DELIVERED = 4
RANK_ERROR = 5

_SCRIPT = r"""
local ops = cjson.decode(ARGV[1])
for i, op in ipairs(ops) do
  local o = op[1]
  if o == 'fence' then
    if redis.call('GET', KEYS[op[2]]) ~= op[3] then return {'fenced', i} end
  elseif o == 'version' then
    local v = redis.call('HGET', KEYS[op[2]], 'v')
    if (v or '0') ~= op[3] then return {'stale', i} end
  end
end
local out = {}
for i, op in ipairs(ops) do
  local o = op[1]
  local k = KEYS[op[2]]
  if o == 'xadd' then
    local args = {k}
    if op[4] > 0 then table.insert(args, 'MAXLEN'); table.insert(args, '~'); table.insert(args, op[4]) end
    table.insert(args, '*')
    for _, v in ipairs(op[3]) do table.insert(args, v) end
    table.insert(out, redis.call('XADD', unpack(args)))
    if op[5] > 0 then redis.call('PEXPIRE', k, op[5]) end
  elseif o == 'rpush' then
    redis.call('RPUSH', k, unpack(op[3]))
    if op[4] > 0 then redis.call('LTRIM', k, -op[4], -1) end
    if op[5] > 0 then redis.call('PEXPIRE', k, op[5]) end
  elseif o == 'touch' then
    -- op = {'touch', k, member, score, prune below}
    redis.call('ZADD', k, op[4], op[3])
    redis.call('ZREMRANGEBYSCORE', k, '-inf', op[5])
  elseif o == 'xack' then
    redis.call('XACK', k, op[3], unpack(op[4]))
    if op[5] then redis.call('XDEL', k, unpack(op[4])) end
  elseif o == 'hset' then
    redis.call('HSET', k, unpack(op[3]))
    if op[4] > 0 then redis.call('PEXPIRE', k, op[4]) end
  elseif o == 'version' then
    local v = tonumber(redis.call('HGET', k, 'v') or '0') + 1
    redis.call('HSET', k, 'v', v, unpack(op[4]))
    if op[5] > 0 then redis.call('PEXPIRE', k, op[5]) end
  elseif o == 'set' then
    if op[4] > 0 then redis.call('SET', k, op[3], 'PX', op[4]) else redis.call('SET', k, op[3]) end
  elseif o == 'zadd' then
    redis.call('ZADD', k, op[3], op[4])
  elseif o == 'zrem' then
    redis.call('ZREM', k, unpack(op[3]))
  elseif o == 'zprune' then
    redis.call('ZREMRANGEBYSCORE', k, '-inf', op[3])
  elseif o == 'del' then
    redis.call('DEL', k)
  elseif o == 'hdel' then
    redis.call('HDEL', k, unpack(op[3]))
  elseif o == 'merge' then
    -- monotonic receipt merge: op = {'merge', k, rank, fields, ttl}
    local cur = tonumber(redis.call('HGET', k, 'rank') or '0')
    if op[3] > cur then
      redis.call('HSET', k, 'rank', op[3], unpack(op[4]))
      table.insert(out, 1)
    else
      table.insert(out, 0)
    end
    if op[5] > 0 then redis.call('PEXPIRE', k, op[5]) end
  elseif o == 'rec' then
    -- a message record (bot/receipts/records.py): op = {'rec', k, rank (-1: no rank,
    -- always applied), hash fields, packed fields, ttl}. A record of an earlier version
    -- (a hash) gets the hash fields; else the packed record (a JSON object in a string)
    -- gets the packed ones, its TTL kept when ttl is 0.
    local kind = redis.call('TYPE', k)['ok']
    local applied = 1
    if kind == 'hash' then
      if op[3] >= 0 then
        if op[3] > tonumber(redis.call('HGET', k, 'rank') or '0') then
          redis.call('HSET', k, 'rank', op[3], unpack(op[4]))
        else
          applied = 0
        end
      else
        redis.call('HSET', k, unpack(op[4]))
      end
    else
      local rec = {}
      if kind == 'string' then
        local ok, found = pcall(cjson.decode, redis.call('GET', k))
        if ok and type(found) == 'table' then rec = found end
      end
      if op[3] < 0 or op[3] > tonumber(rec['r'] or '0') then
        for name, value in pairs(op[5]) do rec[name] = value end
        if op[3] >= 0 then rec['r'] = tostring(op[3]) end
        if op[6] > 0 then
          redis.call('SET', k, cjson.encode(rec), 'PX', op[6])
        else
          redis.call('SET', k, cjson.encode(rec), 'KEEPTTL')
        end
      else
        applied = 0
      end
    end
    if op[3] >= 0 then table.insert(out, applied) end
    if op[6] > 0 then redis.call('PEXPIRE', k, op[6]) end
  end
end
return {'ok', out}
"""


def text(value: bytes | str | None) -> str:
    """A Redis reply value as ``str`` (``""`` for None)."""
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else value


def text_map(raw: Any) -> dict[str, str]:
    """A Redis hash or stream entry's fields as ``str`` → ``str``."""
    return {text(k): text(v) for k, v in (raw or {}).items()}


class CommitConflict(Exception):
    """A guard failed: the lease moved to another worker (``fenced``) or a session changed
    underneath (``stale``). Nothing of the batch was written."""

    def __init__(self, reason: str, index: int) -> None:
        super().__init__(f"commit refused: {reason} (operation {index})")
        self.reason = reason
        self.index = index


def _flat(fields: Mapping[str, Any]) -> list[str]:
    flat: list[str] = []
    for name, value in fields.items():
        flat.append(name)
        flat.append(value if isinstance(value, str) else fastjson.dumps(value))
    return flat


@dataclass
class Batch:
    """Operations to apply atomically. Build with the methods, then :meth:`commit`."""

    keys: list[str] = field(default_factory=list)
    ops: list[list[Any]] = field(default_factory=list)
    _index: dict[str, int] = field(default_factory=dict)
    _merged: dict[tuple[str, int, str], list[Any]] = field(default_factory=dict)
    """The one ``rpush`` / ``touch`` operation of a list / of a sorted set's member."""

    def __len__(self) -> int:
        return len(self.ops)

    def _k(self, key: str) -> int:
        index = self._index.get(key)
        if index is None:
            self.keys.append(key)
            index = self._index[key] = len(self.keys)
        return index

    # guards -------------------------------------------------------------

    def fence(self, lease_key: str, owner: str) -> Batch:
        """Refuse the whole batch unless ``lease_key`` still holds ``owner``."""
        self.ops.append(["fence", self._k(lease_key), owner])
        return self

    def write_versioned(
        self, key: str, expected: int, fields: Mapping[str, Any], ttl_ms: int = 0
    ) -> Batch:
        """Write a versioned hash (a session) only if its version is still ``expected``;
        the version becomes ``expected + 1``."""
        self.ops.append(["version", self._k(key), str(expected), _flat(fields), ttl_ms])
        return self

    # effects ------------------------------------------------------------

    def xadd(
        self, stream: str, fields: Mapping[str, Any], *, maxlen: int = 0, ttl_ms: int = 0
    ) -> Batch:
        """Append to a stream (``maxlen`` trims approximately; ``ttl_ms`` expires the stream)."""
        self.ops.append(["xadd", self._k(stream), _flat(fields), maxlen, ttl_ms])
        return self

    def rpush(self, key: str, values: Sequence[str], *, maxlen: int = 0, ttl_ms: int = 0) -> Batch:
        """Append to a list, keeping its last ``maxlen`` items (``ttl_ms`` expires it).

        The pushes to one list in a batch are one ``RPUSH`` (at the first one's place, the
        values in order), trimmed and expired once."""
        if not values:
            return self
        index = self._k(key)
        op = self._merged.get(("rpush", index, ""))
        if op is None:
            op = self._merged["rpush", index, ""] = ["rpush", index, [], maxlen, ttl_ms]
            self.ops.append(op)
        op[2].extend(values)
        op[3], op[4] = maxlen, ttl_ms
        return self

    def touch(self, key: str, member: str, score: float, *, prune_below: float) -> Batch:
        """Score ``member`` of a sorted set used as an activity index (the highest score
        this batch gives it) and remove the members scored below ``prune_below``: one
        ``ZADD`` and one ``ZREMRANGEBYSCORE`` per member in a batch, however often it is
        touched."""
        index = self._k(key)
        op = self._merged.get(("touch", index, member))
        if op is None:
            op = self._merged["touch", index, member] = ["touch", index, member, score, prune_below]
            self.ops.append(op)
        op[3], op[4] = max(op[3], score), max(op[4], prune_below)
        return self

    def xack(self, stream: str, group: str, ids: Sequence[str], *, delete: bool = True) -> Batch:
        """Acknowledge stream entries (and delete them: a processed entry is history)."""
        if ids:
            self.ops.append(["xack", self._k(stream), group, list(ids), delete])
        return self

    def hset(self, key: str, fields: Mapping[str, Any], ttl_ms: int = 0) -> Batch:
        self.ops.append(["hset", self._k(key), _flat(fields), ttl_ms])
        return self

    def hdel(self, key: str, names: Sequence[str]) -> Batch:
        if names:
            self.ops.append(["hdel", self._k(key), list(names)])
        return self

    def set(self, key: str, value: str, ttl_ms: int = 0) -> Batch:
        self.ops.append(["set", self._k(key), value, ttl_ms])
        return self

    def zadd(self, key: str, score: float, member: str) -> Batch:
        self.ops.append(["zadd", self._k(key), score, member])
        return self

    def zrem(self, key: str, members: Sequence[str]) -> Batch:
        """Remove sorted-set members (absent ones are ignored)."""
        if members:
            self.ops.append(["zrem", self._k(key), list(members)])
        return self

    def zprune(self, key: str, below: float) -> Batch:
        """Remove sorted-set members scored below ``below``."""
        self.ops.append(["zprune", self._k(key), below])
        return self

    def delete(self, key: str) -> Batch:
        self.ops.append(["del", self._k(key)])
        return self

    def merge_receipt(
        self, key: str, rank: int, fields: Mapping[str, Any], ttl_ms: int = 0
    ) -> Batch:
        """Monotonic merge into a message record: applied only when ``rank`` is higher
        than the record's current rank (see the ``RANK_*`` constants)."""
        self.ops.append(["merge", self._k(key), rank, _flat(fields), ttl_ms])
        return self

    def record(
        self,
        key: str,
        rank: int,
        hash_fields: Mapping[str, str],
        packed_fields: Mapping[str, str],
        ttl_ms: int = 0,
    ) -> Batch:
        """Write into a message record (:mod:`bot.receipts.records`): a record written by
        an earlier version (a hash) gets ``hash_fields``, any other (a JSON object in a
        string, created when absent) ``packed_fields``. With ``rank`` 0 or more this is a
        monotonic merge like :meth:`merge_receipt` (applied only above the record's rank,
        which becomes ``rank``); with ``rank`` -1 the fields are always written. ``ttl_ms``
        0 keeps the record's TTL."""
        self.ops.append(
            ["rec", self._k(key), rank, _flat(hash_fields), dict(packed_fields), ttl_ms]
        )
        return self

    async def commit(self, store: Store) -> list[Any]:
        """Apply every operation atomically. Returns the results of ``xadd`` (entry ids)
        and ``merge_receipt`` and ranked ``record`` (1 applied, 0 kept) in order. Raises :class:`CommitConflict`."""
        if not self.ops:
            return []
        return await store.run(self)


class Store:
    """The gateway's Redis: the connection and the batch script."""

    def __init__(self, redis: RedisClient) -> None:
        self.redis = redis
        self._script: Any = redis.register_script(_SCRIPT)

    async def run(self, batch: Batch) -> list[Any]:
        result = await self._script(keys=batch.keys, args=[fastjson.dumps(batch.ops)])
        status = result[0].decode() if isinstance(result[0], bytes) else result[0]
        if status != "ok":
            raise CommitConflict(status, int(result[1]))
        return [r.decode() if isinstance(r, bytes) else r for r in result[1]]
