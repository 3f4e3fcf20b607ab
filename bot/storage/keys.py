"""Every Redis key the gateway uses, in one place.

A conversation is (our number, handset number). Its events map to a fixed partition by the
handset number, so delivery reports (which carry the handset but not always our number)
land in the same partition as the messages they report on. Every key of a partition —
its inbox and outbox streams, and the sessions, message records, timelines and dedupe
markers of its conversations — carries the partition's Redis Cluster hash tag ``{p<N>}``,
so one Lua script can update them atomically on a single node or in a cluster.
"""

from __future__ import annotations

import base64
import hashlib
import zlib
from dataclasses import dataclass

PREFIX = "sb"

INBOX_GROUP = "engine"
OUTBOX_GROUP = "sender"
FORWARD_GROUP = "forwarder"

WORKERS = f"{PREFIX}:workers"
"""Sorted set: worker id → heartbeat deadline (ms since the epoch, Redis clock)."""
META = f"{PREFIX}:meta"
"""Hash: settings that must never change under running data (the partition count)."""
DLQ = f"{PREFIX}:dlq"
"""Stream of entries that failed too often, with where they came from and why."""

DAY_MS = 86_400_000
"""A day in milliseconds: the span of one :meth:`PartitionKeys.provider_ids` hash."""


EVENT_DIGEST_BYTES = 12
"""Bytes of BLAKE2b naming a provider event in its dedupe marker (:func:`event_digest`)."""


def event_digest(event_id: str) -> str:
    """A provider event id as its dedupe marker names it: 16 characters, the base64url of a
    96-bit BLAKE2b digest of the id.

    The provider's ids are 36 characters (a UUID) or longer (a content hash); the digest
    keeps every marker's key at 30 characters or fewer, which Redis stores in a 32-byte
    allocation instead of 48 to 56 (about 16-24 B less per event, docs/operations.md,
    Sizing). Two different events of one partition would have to share a digest within the
    dedupe TTL to be taken for copies of each other: with 96 bits, a chance of about
    6e-12 for 10^9 events in one partition's window."""
    digest = hashlib.blake2b(event_id.encode(), digest_size=EVENT_DIGEST_BYTES).digest()
    return base64.urlsafe_b64encode(digest).decode()


def partition_of(handset: str, partitions: int) -> int:
    """The partition of every event involving ``handset``: stable across processes and
    restarts (CRC-32, not Python's salted ``hash``)."""
    return zlib.crc32(handset.encode()) % partitions


def conversation_key(our_number: str | None, handset: str) -> str:
    """``<our number>:<handset>``; ``default`` stands for the account's shared pool."""
    return f"{our_number or 'default'}:{handset}"


def handset_of(conversation: str) -> str:
    """The handset number of a conversation key."""
    return conversation.rsplit(":", 1)[-1]


def our_number_of(conversation: str) -> str | None:
    """Our number of a conversation key; ``None`` for the account's shared pool."""
    our = conversation.rsplit(":", 1)[0] if ":" in conversation else ""
    return None if our in ("", "default") else our


@dataclass(frozen=True)
class PartitionKeys:
    """The keys of one partition (all in one hash slot)."""

    partition: int

    @property
    def tag(self) -> str:
        return f"{{p{self.partition}}}"

    @property
    def inbox(self) -> str:
        return f"{PREFIX}:{self.tag}:in"

    @property
    def outbox(self) -> str:
        return f"{PREFIX}:{self.tag}:out"

    @property
    def forward(self) -> str:
        return f"{PREFIX}:{self.tag}:fwd"

    @property
    def lease(self) -> str:
        return f"{PREFIX}:{self.tag}:lease"

    @property
    def conversations(self) -> str:
        """Sorted set: conversation key → last activity (ms)."""
        return f"{PREFIX}:{self.tag}:convs"

    @property
    def timers(self) -> str:
        """Sorted set: pending timer (:func:`timer_member`) → due time (ms since the epoch)."""
        return f"{PREFIX}:{self.tag}:timers"

    @property
    def timer_data(self) -> str:
        """Hash: pending timer (:func:`timer_member`) → its ``TimerRef`` as JSON."""
        return f"{PREFIX}:{self.tag}:timerdata"

    def seen(self, event_id: str) -> str:
        """Dedupe marker of one provider event: ``sb:{pN}:ev:<digest>`` (:func:`event_digest`),
        a string set with ``NX PX`` the dedupe TTL."""
        return f"{PREFIX}:{self.tag}:ev:{event_digest(event_id)}"

    def seen_legacy(self, event_id: str) -> str:
        """Dedupe marker of one provider event as earlier versions wrote it
        (``sb:{pN}:seen:<event id>``): still honoured until it expires, never written."""
        return f"{PREFIX}:{self.tag}:seen:{event_id}"

    def session(self, conversation: str) -> str:
        return f"{PREFIX}:{self.tag}:sess:{conversation}"

    def timeline(self, conversation: str) -> str:
        """A conversation's timeline: a list of JSON entries (see
        :mod:`bot.receipts.timeline`)."""
        return f"{PREFIX}:{self.tag}:tlog:{conversation}"

    def timeline_stream(self, conversation: str) -> str:
        """The timeline as earlier versions wrote it (a stream): read until it expires."""
        return f"{PREFIX}:{self.tag}:tl:{conversation}"

    def message(self, message_ref: str) -> str:
        """Record of one outbound message, by our id (``gw_id``): a JSON object in a string
        (a hash when an earlier version wrote it; see :mod:`bot.receipts.records`)."""
        return f"{PREFIX}:{self.tag}:msg:{message_ref}"

    def provider_ids(self, day: int) -> str:
        """Hash: provider ``message_id`` → our id, of the messages sent on ``day`` (days
        since the epoch, UTC)."""
        return f"{PREFIX}:{self.tag}:mids:{day}"

    def provider_id(self, message_id: str) -> str:
        """Provider ``message_id`` → our id, as earlier versions wrote it (one string per
        message): read until it expires, never written."""
        return f"{PREFIX}:{self.tag}:mid:{message_id}"

    def failures(self) -> str:
        """Hash: entry id → handler failures so far."""
        return f"{PREFIX}:{self.tag}:fails"

    @property
    def deferred(self) -> str:
        """Sorted set: ``gw_id`` of a send held back by quiet hours → release time (ms since
        the epoch, Redis clock domain)."""
        return f"{PREFIX}:{self.tag}:deferred"

    @property
    def deferred_data(self) -> str:
        """Hash: ``gw_id`` of a deferred send → its outbox entry fields (a JSON array
        ``[name, value, ...]``)."""
        return f"{PREFIX}:{self.tag}:deferreddata"

    @property
    def optout(self) -> str:
        """Hash: handset number → its opt-out as JSON (``at``, ``via``, ``word``...): the
        partition's part of the suppression list (:mod:`bot.outbox.suppression`)."""
        return f"{PREFIX}:{self.tag}:optout"


def timer_member(conversation: str, timer_id: str) -> str:
    """``<conversation>|<timer key>``: a timer's member in :attr:`PartitionKeys.timers` and
    field in :attr:`PartitionKeys.timer_data` (``timer_id`` is the timer's
    :attr:`~bot.storage.timers.TimerRef.key`, unique per conversation; a conversation key
    never contains ``|``)."""
    return f"{conversation}|{timer_id}"


def alive(worker: str) -> str:
    """Liveness key of a worker (expires when it stops heartbeating)."""
    return f"{PREFIX}:alive:{worker}"


def inflight(worker: str) -> str:
    """Our ids of the batch a worker's sender has on the wire right now."""
    return f"{PREFIX}:inflight:{worker}"
