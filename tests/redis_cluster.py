"""A real Redis Cluster for tests: redis-server processes in cluster mode on 127.0.0.1,
formed with ``CLUSTER ADDSLOTS`` / ``MEET`` / ``REPLICATE`` (no redis-cli, no Docker).

:class:`LocalCluster` starts ``masters`` masters, each with ``replicas`` replicas, the slots
split evenly over the masters. Every process is a :class:`~bot.storage.redis_server.RedisServer`
(the binary the rest of the suite uses), so :meth:`LocalCluster.stop` stops exactly the
processes it started, and a node killed with SIGKILL (:meth:`LocalCluster.kill`) can be
started again on its port and data (it rejoins as a replica of whoever took its slots).

Redis 6.2 puts a node's cluster bus on its port + 10000, so ports are chosen below 55536
with both free.
"""

from __future__ import annotations

import contextlib
import random
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from bot.storage.connection import RedisClient, connect
from bot.storage.redis_server import RedisServer

SLOTS = 16384
BUS_OFFSET = 10000


def cluster_port(host: str = "127.0.0.1") -> int:
    """A port below 55536 that is free, with its cluster bus port (+10000) free too."""
    for _ in range(1000):
        port = random.randrange(20000, 45000)
        try:
            for candidate in (port, port + BUS_OFFSET):
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                    sock.bind((host, candidate))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


def wait_until(check: Any, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(redis.RedisError, OSError):
            if check():
                return
        if time.monotonic() > deadline:
            raise AssertionError(f"cluster: {what} not reached in {timeout} s")
        time.sleep(0.02)


@dataclass
class Node:
    server: RedisServer
    id: str = ""

    @property
    def port(self) -> int:
        return self.server.port

    def client(self, **options: Any) -> redis.Redis:
        return redis.Redis(host=self.server.host, port=self.server.port, **options)

    def command(self, *args: Any) -> Any:
        with self.client(socket_timeout=10) as client:
            return client.execute_command(*args)

    def info(self, section: str) -> dict[str, Any]:
        with self.client(socket_timeout=10) as client:
            return client.info(section)  # type: ignore[no-any-return]


class LocalCluster:
    """``masters`` masters with ``replicas`` replicas each, formed and ready (see the module
    docstring). ``node_timeout`` (ms) is how long a silent node takes to be marked failed."""

    def __init__(
        self,
        directory: Path,
        *,
        masters: int = 3,
        replicas: int = 1,
        node_timeout: int = 1000,
        appendfsync: str = "everysec",
    ) -> None:
        self.directory = directory
        self.node_timeout = node_timeout
        self.nodes: list[Node] = []
        self.masters_count = masters
        self.replicas_count = replicas
        self.appendfsync = appendfsync

    # ------------------------------------------------------------ life cycle

    def start(self) -> LocalCluster:
        total = self.masters_count * (1 + self.replicas_count)
        try:
            for i in range(total):
                server = RedisServer(
                    self.directory / f"node{i}",
                    port=cluster_port(),
                    appendfsync=self.appendfsync,
                    extra_args=[
                        "--cluster-enabled", "yes",
                        "--cluster-config-file", "nodes.conf",
                        "--cluster-node-timeout", str(self.node_timeout),
                        # Other slots go on being served while one has no master.
                        "--cluster-require-full-coverage", "no",
                    ],
                )  # fmt: skip
                self.nodes.append(Node(server.start()))
            self._form()
        except BaseException:
            self.stop()
            raise
        return self

    def _form(self) -> None:
        for node in self.nodes:
            node.id = node.command("CLUSTER MYID").decode()
        masters = self.nodes[: self.masters_count]
        for i, node in enumerate(masters):
            low, high = i * SLOTS // len(masters), (i + 1) * SLOTS // len(masters)
            node.command("CLUSTER ADDSLOTS", *range(low, high))
        first = self.nodes[0]
        for node in self.nodes[1:]:
            node.command("CLUSTER MEET", first.server.host, first.port)
        wait_until(
            lambda: all(len(n.command("CLUSTER NODES")) == len(self.nodes) for n in self.nodes),
            "every node knows every other",
        )
        for r, node in enumerate(self.nodes[self.masters_count :]):
            node.command("CLUSTER REPLICATE", masters[r % len(masters)].id)
        self.wait_healthy()

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Until every running node says the cluster is ok, every slot has a master and
        every running replica is in sync with its master."""

        def healthy() -> bool:
            for node in self.running_nodes():
                info = node.command("CLUSTER INFO")
                if info.get("cluster_state") != "ok" or int(info["cluster_slots_ok"]) != SLOTS:
                    return False
                replication = node.info("replication")
                if replication["role"] == "slave" and (
                    replication.get("master_link_status") != "up"
                    or replication.get("master_sync_in_progress")
                ):
                    return False
            return len(self.masters()) == self.masters_count

        wait_until(healthy, "a healthy cluster", timeout)

    def stop(self) -> None:
        """Stop every node, at once; one that has not exited a second after its SIGTERM is
        killed (a replica refuses SIGTERM while it writes its first append-only file, and
        the test's data is thrown away)."""
        with ThreadPoolExecutor(max_workers=max(1, len(self.nodes))) as pool:
            list(pool.map(lambda node: node.server.stop(timeout=1.0), self.nodes))

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------ looking

    @property
    def url(self) -> str:
        """``redis+cluster://`` with every node as a seed."""
        seeds = ",".join(f"127.0.0.1:{node.port}" for node in self.nodes)
        return f"redis+cluster://{seeds}"

    def client(self, **options: Any) -> RedisClient:
        return connect(self.url, **options)

    def running_nodes(self) -> list[Node]:
        return [node for node in self.nodes if node.server.running]

    def role(self, node: Node) -> str:
        return str(node.info("replication")["role"])

    def masters(self) -> list[Node]:
        return [n for n in self.running_nodes() if self.role(n) == "master" and self.slots_of(n)]

    def slots_of(self, node: Node) -> list[int]:
        """The slots ``node`` serves as a master (from its own view)."""
        owned: list[int] = []
        for low, high, *servers in node.command("CLUSTER SLOTS"):
            master = servers[0]
            if int(master[1]) == node.port:
                owned.extend(range(int(low), int(high) + 1))
        return owned

    def master_of_slot(self, slot: int) -> Node:
        for node in self.masters():
            if slot in self.slots_of(node):
                return node
        raise AssertionError(f"slot {slot} has no master")

    def replicas_of(self, master: Node) -> list[Node]:
        found = []
        for node in self.running_nodes():
            info = node.info("replication")
            if info["role"] == "slave" and int(info.get("master_port", 0)) == master.port:
                found.append(node)
        return found

    def key_slot(self, key: str) -> int:
        return int(self.running_nodes()[0].command("CLUSTER KEYSLOT", key))

    # ------------------------------------------------------------ breaking

    def kill(self, node: Node) -> None:
        """SIGKILL one node (its data folder stays; :meth:`restart` brings it back)."""
        node.server.kill()

    def restart(self, node: Node) -> None:
        """Start a killed node again on its port and data: it rejoins the cluster."""
        node.server.start()

    def failover(self, replica: Node) -> None:
        """Promote ``replica`` now (``CLUSTER FAILOVER FORCE``: its master may be dead) and
        wait until the cluster is healthy again."""
        replica.command("CLUSTER FAILOVER", "FORCE")
        wait_until(lambda: self.role(replica) == "master", "the replica's promotion")

    def migrate_slot(self, slot: int, target: Node, *, batch: int = 10) -> Iterator[int]:
        """Move ``slot`` to the master ``target`` the way redis-cli does (SETSLOT IMPORTING
        on the target, MIGRATING on the source, MIGRATE of the keys ``batch`` at a time,
        SETSLOT NODE on both), yielding the number of keys moved after each MIGRATE, so a
        caller can interleave traffic."""
        source = self.master_of_slot(slot)
        if source is target:
            return
        target.command("CLUSTER SETSLOT", slot, "IMPORTING", source.id)
        source.command("CLUSTER SETSLOT", slot, "MIGRATING", target.id)
        moved = 0
        while True:
            keys = source.command("CLUSTER GETKEYSINSLOT", slot, batch)
            if not keys:
                break
            source.command("MIGRATE", target.server.host, target.port, "", 0, 5000, "KEYS", *keys)
            moved += len(keys)
            yield moved
        for node in (target, source):
            node.command("CLUSTER SETSLOT", slot, "NODE", target.id)
        for node in self.running_nodes():
            if node not in (target, source) and self.role(node) == "master":
                node.command("CLUSTER SETSLOT", slot, "NODE", target.id)
        wait_until(
            lambda: all(self._owner_port(n, slot) == target.port for n in self.running_nodes()),
            f"every node to see slot {slot} on its new master",
        )

    @staticmethod
    def _owner_port(node: Node, slot: int) -> int:
        for low, high, *servers in node.command("CLUSTER SLOTS"):
            if int(low) <= slot <= int(high):
                return int(servers[0][1])
        return -1

    def flushall(self) -> None:
        for node in self.masters():
            node.command("FLUSHALL")
