"""Commands: events posted into a conversation from outside it.

The management API (and so a plugin's routes and CLI) never changes a conversation's
session directly: that would race the worker that owns the conversation's partition. It
posts a *command* instead, an inbox entry handled like any other event of the conversation,
in order, by the partition's owner, and committed atomically with whatever the handler does
(replies, session, timers)::

    await post_command(store, partitions, conversation_key(None, "+61491570156"),
                       "appointments.create", {"id": "a1", "starts_at": "..."})

    @router.timer("appointments.create")
    async def create(ctx: Context, payload: dict[str, Any]) -> None: ...

A command is dispatched as a :class:`~bot.conversation.timers.TimerEvent` (a timer that is
due at once), so plugins handle both with ``@router.timer(name)``.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from bot.storage.keys import PartitionKeys, handset_of, partition_of
from bot.storage.store import Batch, Store

__all__ = ["command_fields", "post_command"]


def command_fields(
    conversation: str, name: str, payload: Any, *, command_id: str
) -> dict[str, str]:
    """The inbox entry of a command (the shape :class:`~bot.storage.events.InboxEvent`
    decodes as a ``timer`` entry of kind ``command``)."""
    now = time.time()
    ref = {
        "id": command_id,
        "name": name,
        "at": datetime.fromtimestamp(now, UTC).isoformat(),
        "payload": payload,
        "kind": "command",
    }
    return {
        "k": "timer",
        "c": conversation,
        "t": f"{now:.6f}",
        "e": json.dumps(ref, separators=(",", ":"), ensure_ascii=False),
    }


async def post_command(
    store: Store,
    partitions: int,
    conversation: str,
    name: str,
    payload: Any = None,
    *,
    command_id: str | None = None,
) -> str:
    """Append the command ``name`` with ``payload`` (any JSON value) to ``conversation``'s
    inbox; returns its id. Durable when this returns."""
    if not name:
        raise ValueError("a command needs a name")
    try:
        json.dumps(payload)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"a command's payload must be JSON-serialisable: {exc}") from exc
    command_id = command_id or uuid.uuid4().hex
    keys = PartitionKeys(partition_of(handset_of(conversation), partitions))
    batch = Batch()
    batch.xadd(keys.inbox, command_fields(conversation, name, payload, command_id=command_id))
    await batch.commit(store)
    return command_id
