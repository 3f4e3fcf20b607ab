"""Reading a cluster's topology from redis-py's parsed CLUSTER NODES (no server needed: the
doctor's test reads a real cluster)."""

from __future__ import annotations

from bot.storage.topology import SLOTS, parse_cluster_nodes, partition_slot, ranges


def node(node_id: str, flags: str, master: str = "-", slots: list[list[str]] | None = None) -> dict:
    return {
        "node_id": node_id,
        "flags": flags,
        "master_id": master,
        "slots": slots or [],
        "connected": True,
    }


def test_ranges_are_compact() -> None:
    assert ranges([]) == ""
    assert ranges([5, 1, 2, 3, 9, 10]) == "1-3, 5, 9-10"


def test_a_failing_master_leaves_its_slots_and_partitions_unserved() -> None:
    view = parse_cluster_nodes(
        {
            "10.0.0.1:7000@17000": node("a", "myself,master", slots=[["0", "8191"]]),
            "10.0.0.2:7000@17000": node("b", "master,fail", slots=[["8192", "16383"]]),
            "10.0.0.3:7000@17000": node("c", "slave", master="a"),
            "10.0.0.4:7000@17000": node("d", "slave,fail?", master="b"),
        }
    )
    a, b = view.masters
    assert (a.address, b.address) == ("10.0.0.1:7000", "10.0.0.2:7000")
    assert b.failing and not a.failing
    assert [r.address for r in view.replicas_of(a)] == ["10.0.0.3:7000"]
    assert view.replicas_of(b) == []  # its replica is failing too
    assert view.served == 8192 < SLOTS
    unserved = view.unserved_partitions(16)
    assert unserved == [p for p in range(16) if partition_slot(p) >= 8192]
    assert sorted(view.partitions_of(a, 16) + unserved) == list(range(16))
