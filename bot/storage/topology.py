"""A Redis Cluster's topology as the gateway sees it: which master serves which slots (and so
which partitions), its replicas, the slots nobody serves.

Read from ``CLUSTER NODES`` of one node (:func:`read_topology`); ``sinchbot doctor`` prints
it and warns about a master without a replica (its failure stops its partitions until it is
back) and about slots without a master (their webhooks answer 503).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot

from bot.storage.keys import PartitionKeys

__all__ = [
    "SLOTS",
    "ClusterView",
    "NodeView",
    "parse_cluster_nodes",
    "partition_slot",
    "ranges",
    "read_topology",
]

SLOTS = 16384
"""Hash slots of a Redis Cluster."""


def partition_slot(partition: int) -> int:
    """The hash slot of every key of ``partition`` (its tag ``{pN}``)."""
    return int(key_slot(PartitionKeys(partition).inbox.encode()))


def ranges(numbers: Iterable[int]) -> str:
    """``0-5460, 5462``: sorted numbers as ranges."""
    values = sorted(set(numbers))
    parts: list[str] = []
    start = previous = None
    for value in [*values, None]:
        if value is not None and previous is not None and value == previous + 1:
            previous = value
            continue
        if start is not None:
            parts.append(str(start) if start == previous else f"{start}-{previous}")
        start = previous = value
    return ", ".join(parts)


@dataclass(frozen=True)
class NodeView:
    """One node of the cluster."""

    address: str
    """``host:port`` as the cluster announces it."""
    id: str
    master: bool
    """A master (with or without slots), else a replica."""
    master_id: str | None
    """A replica's master."""
    failing: bool
    """Marked ``fail`` (or ``fail?``) or disconnected by the node we asked."""
    slots: tuple[tuple[int, int], ...]
    """Slot ranges a master serves (inclusive)."""

    @property
    def slot_count(self) -> int:
        return sum(high - low + 1 for low, high in self.slots)

    def serves(self, slot: int) -> bool:
        return any(low <= slot <= high for low, high in self.slots)


@dataclass(frozen=True)
class ClusterView:
    """The cluster's nodes as one node sees them."""

    nodes: tuple[NodeView, ...]

    @property
    def masters(self) -> list[NodeView]:
        """Masters that serve slots, by address."""
        return sorted((n for n in self.nodes if n.master and n.slots), key=lambda n: n.address)

    @property
    def replicas(self) -> list[NodeView]:
        return [n for n in self.nodes if not n.master]

    def replicas_of(self, master: NodeView) -> list[NodeView]:
        """The replicas of ``master`` that are not failing, by address."""
        return sorted(
            (n for n in self.replicas if n.master_id == master.id and not n.failing),
            key=lambda n: n.address,
        )

    @property
    def served(self) -> int:
        """Slots served by a master that is not failing."""
        return sum(m.slot_count for m in self.masters if not m.failing)

    def unserved_slots(self) -> list[int]:
        """Slots no live master serves."""
        live = [m for m in self.masters if not m.failing]
        return [slot for slot in range(SLOTS) if not any(m.serves(slot) for m in live)]

    def master_of(self, slot: int) -> NodeView | None:
        for master in self.masters:
            if master.serves(slot):
                return master
        return None

    def partitions_of(self, master: NodeView, partitions: int) -> list[int]:
        """The partitions whose slot ``master`` serves."""
        return [p for p in range(partitions) if master.serves(partition_slot(p))]

    def unserved_partitions(self, partitions: int) -> list[int]:
        live = [m for m in self.masters if not m.failing]
        return [p for p in range(partitions) if not any(m.serves(partition_slot(p)) for m in live)]


def _slot_ranges(raw: Sequence[Any]) -> tuple[tuple[int, int], ...]:
    found: list[tuple[int, int]] = []
    for item in raw:
        if isinstance(item, list | tuple):
            if len(item) == 2:
                found.append((int(item[0]), int(item[1])))
            elif len(item) == 1:
                found.append((int(item[0]), int(item[0])))
        elif isinstance(item, str | bytes) and not str(item).startswith("["):
            low, _, high = str(item).partition("-")  # a migrating slot is "[...]"
            found.append((int(low), int(high or low)))
    return tuple(sorted(found))


def parse_cluster_nodes(
    reply: Mapping[str, Mapping[str, Any]], *, host: str | None = None
) -> ClusterView:
    """The view in redis-py's parsed ``CLUSTER NODES`` reply (address → fields); ``host``
    names the node that answered, if it does not know its own address yet (a node that
    never met another one)."""
    nodes = []
    for address, fields in reply.items():
        flags = set(str(fields.get("flags", "")).split(","))
        if address.startswith(":") and host and "myself" in flags:
            address = f"{host}{address}"
        master_id = str(fields.get("master_id") or "-")
        nodes.append(
            NodeView(
                address=address.split("@")[0],
                id=str(fields.get("node_id", "")),
                master="master" in flags,
                master_id=None if master_id == "-" else master_id,
                failing=bool(flags & {"fail", "fail?", "noaddr"})
                or not fields.get("connected", True),
                slots=_slot_ranges(fields.get("slots") or []),
            )
        )
    return ClusterView(tuple(sorted(nodes, key=lambda n: n.address)))


async def read_topology(redis: RedisCluster) -> ClusterView:
    """The topology as one node of the cluster sees it now."""
    node = redis.get_default_node()
    reply = await redis.execute_command("CLUSTER NODES", target_nodes=node)
    return parse_cluster_nodes(reply, host=node.host if node is not None else None)
