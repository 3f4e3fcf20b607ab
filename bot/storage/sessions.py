"""Where conversation sessions live: the seam, and its Redis implementation.

A :class:`Session` is a conversation's stored state (each flow's state and data, its pending
timers) with the version it was read at. The inbox consumer loads the sessions of a batch's
conversations at once and writes the changed ones in the batch's one atomic commit, each
write expecting the version it read (so a stale writer is refused, never merged).

:class:`SessionStore` is that contract as a small abstract base (as python-telegram-bot's
persistence is), so a test or another backend plugs in without touching the pipeline;
:class:`RedisSessions` is the implementation the gateway runs: one hash per conversation
(``sb:{pN}:sess:<conversation>``: ``v``, ``flows``, ``timers``, and the pre-namespace
``state`` and ``data``), loaded with one
pipelined ``HGETALL`` per batch and written as a versioned write of the commit's script.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from bot.core import fastjson
from bot.storage.connection import RedisClient
from bot.storage.keys import PartitionKeys
from bot.storage.store import Batch

__all__ = ["RedisSessions", "Session", "SessionStore"]


@dataclass
class Session:
    """A conversation's state, as stored. ``version`` is what was read; a save expects it
    unchanged.

    Each plugin (each root router of the engine) keeps its own part in ``flows``: its name
    → ``{"state": ..., "data": {...}, "expiry": ...}`` (a JSON object; keys left out when
    empty; see :mod:`bot.conversation.context`). ``state`` and ``data`` are the shape of
    sessions written before flows had namespaces (one state, one data object shared by every
    plugin): the engine moves them into ``flows`` when it loads such a session, and the next
    save stores them empty.
    """

    conversation: str
    version: int = 0
    state: str | None = None
    """The pre-namespace state (``None`` once migrated)."""
    data: dict[str, Any] = field(default_factory=dict)
    """The pre-namespace shared data (empty once migrated)."""
    timers: dict[str, str] = field(default_factory=dict)
    """Pending timers of the conversation: id → due time (ISO 8601). A fired timer counts
    only while it is still listed here with the same due time (it may have been cancelled or
    replaced after it was fired into the inbox)."""
    flows: dict[str, Any] = field(default_factory=dict)
    """Each flow's state and data, by the name of the plugin (root router) owning it."""
    dirty: bool = False

    @classmethod
    def from_hash(cls, conversation: str, raw: dict[bytes, bytes]) -> Session:
        """The session stored as ``raw`` (an ``HGETALL`` answer; empty: a new session)."""
        fields = {k.decode(): v.decode() for k, v in raw.items()}
        flows = fields.get("flows")
        return cls(
            conversation=conversation,
            version=int(fields.get("v", "0")),
            state=fields.get("state") or None,
            data=fastjson.loads(fields.get("data") or "{}"),
            timers=fastjson.loads(fields.get("timers") or "{}"),
            flows=fastjson.loads(flows) if flows else {},
        )

    def copy(self) -> Session:
        """An independent copy (``data`` and ``flows`` copied as JSON: cheaper than
        ``copy.deepcopy`` for what a session can hold)."""
        return Session(
            conversation=self.conversation,
            version=self.version,
            state=self.state,
            data=fastjson.loads(fastjson.dumps(self.data)) if self.data else {},
            timers=dict(self.timers),
            flows=fastjson.loads(fastjson.dumps(self.flows)) if self.flows else {},
            dirty=self.dirty,
        )

    def to_hash(self) -> dict[str, str]:
        """The hash fields to write (every field, so a migrated session's old ``state`` and
        ``data`` are overwritten empty)."""
        return {
            "state": self.state or "",
            "data": fastjson.dumps(self.data),
            "timers": fastjson.dumps(self.timers),
            "flows": fastjson.dumps(self.flows),
        }


class SessionStore(ABC):
    """Loads and saves conversation sessions for the inbox consumer."""

    @abstractmethod
    async def load(self, keys: PartitionKeys, conversations: Sequence[str]) -> dict[str, Session]:
        """The sessions of ``conversations`` of the partition ``keys`` (a new, empty session,
        version 0, for a conversation that has none), in one round trip where the backend
        allows it."""

    @abstractmethod
    def save(self, batch: Batch, keys: PartitionKeys, session: Session, *, ttl_ms: int) -> None:
        """Add ``session``'s write to ``batch``: applied with the batch's commit, and only if
        the stored version is still ``session.version`` (else the whole commit is refused as
        stale); the session then lives ``ttl_ms`` from this write."""


class RedisSessions(SessionStore):
    """Sessions as one Redis hash per conversation, in the conversation's partition."""

    def __init__(self, redis: RedisClient) -> None:
        self.redis = redis

    async def load(self, keys: PartitionKeys, conversations: Sequence[str]) -> dict[str, Session]:
        if not conversations:
            return {}
        async with self.redis.pipeline(transaction=False) as pipe:
            for conversation in conversations:
                pipe.hgetall(keys.session(conversation))
            raws = await pipe.execute()
        return {
            conversation: Session.from_hash(conversation, raw or {})
            for conversation, raw in zip(conversations, raws, strict=True)
        }

    def save(self, batch: Batch, keys: PartitionKeys, session: Session, *, ttl_ms: int) -> None:
        batch.write_versioned(
            keys.session(session.conversation), session.version, session.to_hash(), ttl_ms=ttl_ms
        )
