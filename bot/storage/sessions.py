"""Where conversation sessions live: the seam, and its Redis implementation.

A :class:`Session` is a conversation's stored state (its state name, its data, its pending
timers) with the version it was read at. The inbox consumer loads the sessions of a batch's
conversations at once and writes the changed ones in the batch's one atomic commit, each
write expecting the version it read (so a stale writer is refused, never merged).

:class:`SessionStore` is that contract as a small abstract base (as python-telegram-bot's
persistence is), so a test or another backend plugs in without touching the pipeline;
:class:`RedisSessions` is the implementation the gateway runs: one hash per conversation
(``sb:{pN}:sess:<conversation>``: ``v``, ``state``, ``data``, ``timers``), loaded with one
pipelined ``HGETALL`` per batch and written as a versioned write of the commit's script.
"""

from __future__ import annotations

import json
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
    """A conversation's state, as stored: ``state`` (a name or ``None``) and ``data`` (any
    JSON object). ``version`` is what was read; a save expects it unchanged."""

    conversation: str
    version: int = 0
    state: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    timers: dict[str, str] = field(default_factory=dict)
    """Pending timers of the conversation: id → due time (ISO 8601). A fired timer counts
    only while it is still listed here with the same due time (it may have been cancelled or
    replaced after it was fired into the inbox)."""
    dirty: bool = False

    @classmethod
    def from_hash(cls, conversation: str, raw: dict[bytes, bytes]) -> Session:
        fields = {k.decode(): v.decode() for k, v in raw.items()}
        return cls(
            conversation=conversation,
            version=int(fields.get("v", "0")),
            state=fields.get("state") or None,
            data=json.loads(fields.get("data", "{}")),
            timers=json.loads(fields.get("timers", "{}")),
        )

    def copy(self) -> Session:
        """An independent copy (its ``data`` copied as JSON: cheaper than ``copy.deepcopy``
        for what a session can hold)."""
        return Session(
            conversation=self.conversation,
            version=self.version,
            state=self.state,
            data=fastjson.loads(fastjson.dumps(self.data)) if self.data else {},
            timers=dict(self.timers),
            dirty=self.dirty,
        )

    def to_hash(self) -> dict[str, str]:
        return {
            "state": self.state or "",
            "data": json.dumps(self.data, separators=(",", ":")),
            "timers": json.dumps(self.timers, separators=(",", ":")),
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
