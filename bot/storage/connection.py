"""Opening the gateway's Redis: one server, or a Redis Cluster, chosen by the URL's scheme.

``redis://`` and ``rediss://`` (TLS) open one server (:class:`redis.asyncio.Redis`);
``redis+cluster://`` and ``rediss+cluster://`` open a cluster (:class:`ClusterClient`, on
:class:`redis.asyncio.cluster.RedisCluster`): the client follows ``MOVED`` and ``ASK``
redirections and discovers the topology again after a failover or a slot migration. The
address of one node is enough; several seed nodes are separated by commas, so the client
starts while some of them are down::

    redis+cluster://10.0.0.1:6379
    rediss+cluster://:password@10.0.0.1:6379,10.0.0.2:6379,10.0.0.3:6379

Every command and script the gateway sends touches the keys of one hash slot (the key schema
in :mod:`bot.storage.keys`), so nothing is cross-slot on a cluster. Pipelines are not
transactions: on a cluster a pipeline is split by node and sent to the nodes concurrently,
each command still answered in order.

A cluster that cannot serve a slot (its master died and no replica has taken over yet), or
whose nodes are all unreachable, raises :class:`ClusterUnavailable`, a
:class:`redis.exceptions.ConnectionError`: everything that treats "Redis down" already
handles it (the webhooks answer 503, the consumers back off and go on).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeAlias
from urllib.parse import unquote, urlsplit

from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, ClusterPipeline, PipelineCommand, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import (
    ConnectionError,
    MovedError,
    NoScriptError,
    RedisClusterException,
    RedisClusterUnreachableError,
    RedisError,
    SlotNotCoveredError,
)
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.typing import ScriptTextT

__all__ = [
    "CLUSTER_SCHEMES",
    "ClusterClient",
    "ClusterUnavailable",
    "NotReplicated",
    "RedisClient",
    "connect",
    "is_cluster",
    "is_cluster_url",
    "node_key",
    "one_connection",
    "seed_nodes",
]

RedisClient: TypeAlias = Redis | RedisCluster
"""The gateway's Redis: one server or a cluster (every part takes either)."""

CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}
"""URL schemes that open a cluster, and the scheme of one of its nodes."""

CLUSTER_MAX_CONNECTIONS = 10_000
"""Connections per cluster node the client may open (each partition's reader blocks one
while it waits for new entries; redis-py's default of 100 per node is too few for many
partitions on one node)."""


class ClusterUnavailable(ConnectionError):
    """The cluster cannot serve a slot (no master has it: a failover is under way) or no
    node could be reached. A :class:`~redis.exceptions.ConnectionError`: retry later."""


class NotReplicated(RedisError):
    """Fewer replicas than asked acknowledged a write in time (``WAIT``): it is on the
    master, which may still lose it in a failover. Answer as for an outage (503)."""


_UNAVAILABLE = (SlotNotCoveredError, RedisClusterUnreachableError)
"""redis-py's cluster errors that mean "not available right now" (they are not
``RedisError`` subclasses; a cross-slot command, a bug, stays what it is)."""


def _unavailable(exc: RedisClusterException) -> ClusterUnavailable:
    return ClusterUnavailable(f"Redis Cluster unavailable: {exc}")


class ClusterPipelineClient(ClusterPipeline):
    """A cluster pipeline whose unavailability errors are :class:`ClusterUnavailable`, and
    which loads a script a node does not know and sends its calls again.

    A single server's pipeline checks its scripts before it sends them (redis-py's
    ``Pipeline.load_scripts``); a cluster pipeline does not, and a node may not know a
    script (it is new, restarted, or was a replica until a failover). A call refused with
    ``NOSCRIPT`` did not run, so sending it again once the script is loaded on every master
    is safe; it then runs after the pipeline's other commands (no pipeline of the gateway
    depends on the order between a script call and a later command).
    """

    def __init__(self, client: RedisCluster, transaction: bool | None = None) -> None:
        super().__init__(client, transaction)
        self._queued: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def execute_command(self, *args: Any, **kwargs: Any) -> ClusterPipeline:
        self._queued.append((args, dict(kwargs)))
        return super().execute_command(*args, **kwargs)

    async def execute(
        self, raise_on_error: bool = True, allow_redirections: bool = True
    ) -> list[Any]:
        queued, self._queued = self._queued, []
        try:
            results = await super().execute(False, allow_redirections)
            missing = [
                index
                for index, result in enumerate(results)
                if isinstance(result, NoScriptError)
                and str(queued[index][0][0]).upper() == "EVALSHA"
            ]
            client = self.cluster_client
            if missing and isinstance(client, ClusterClient) and not self._transaction:
                await client.load_scripts({str(queued[index][0][1]) for index in missing})
                again = ClusterPipelineClient(client)  # type: ignore[abstract]
                for index in missing:
                    args, kwargs = queued[index]
                    again.execute_command(*args, **kwargs)
                for index, result in zip(missing, await again.execute(False), strict=True):
                    results[index] = result
        except _UNAVAILABLE as exc:
            raise _unavailable(exc) from exc
        if raise_on_error:
            for index, result in enumerate(results):
                if isinstance(result, Exception):
                    name = str(queued[index][0][0]) if index < len(queued) else "?"
                    result.args = (
                        f"Command # {index + 1} ({name}) of pipeline caused error: "
                        f"{result.args[0] if result.args else type(result).__name__}",
                        *result.args[1:],
                    )
                    raise result
        return results


class ClusterClient(RedisCluster):
    """:class:`~redis.asyncio.cluster.RedisCluster` whose "slot not covered" and "cluster
    unreachable" errors are :class:`ClusterUnavailable` (a ``ConnectionError``), as a
    single server's outage is, so that the gateway's handling of a Redis outage covers a
    failover too."""

    _script_texts: dict[str, Any]

    def register_script(self, script: ScriptTextT) -> Any:
        """:meth:`RedisCluster.register_script`, remembered so that a pipeline can load it
        on a node that does not know it."""
        registered: AsyncScript = super().register_script(script)
        if not hasattr(self, "_script_texts"):
            self._script_texts = {}
        self._script_texts[registered.sha] = registered.script
        return registered

    async def load_scripts(self, shas: set[str]) -> None:
        """Load the registered scripts of ``shas`` on every master (unknown ones are
        left: their calls fail again with ``NOSCRIPT``)."""
        texts = getattr(self, "_script_texts", {})
        for sha in sorted(shas):
            if sha in texts:
                await self.script_load(texts[sha])

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().execute_command(*args, **kwargs)
        except _UNAVAILABLE as exc:
            raise _unavailable(exc) from exc

    async def initialize(self, *args: Any, **kwargs: Any) -> RedisCluster:
        try:
            await super().initialize(*args, **kwargs)
        except _UNAVAILABLE as exc:
            raise _unavailable(exc) from exc
        return self

    def pipeline(
        self, transaction: Any | None = None, shard_hint: Any | None = None
    ) -> ClusterPipeline:
        if shard_hint:
            raise RedisClusterException("shard_hint is not supported by a cluster pipeline")
        return ClusterPipelineClient(self, transaction)  # type: ignore[abstract]


def is_cluster_url(url: str) -> bool:
    """Whether ``url`` names a Redis Cluster (``redis+cluster://``, ``rediss+cluster://``)."""
    return urlsplit(url).scheme.lower() in CLUSTER_SCHEMES


def is_cluster(redis: RedisClient) -> bool:
    """Whether ``redis`` is a cluster client."""
    return isinstance(redis, RedisCluster)


def seed_nodes(url: str) -> list[tuple[str, int]]:
    """The ``(host, port)`` seed nodes of a cluster URL, in order (port 6379 by default).

    Raises:
        ValueError: not a cluster URL, no host, or a port that is not a number.
    """
    parts = urlsplit(url)
    if parts.scheme.lower() not in CLUSTER_SCHEMES:
        raise ValueError(f"not a cluster URL (scheme {parts.scheme!r})")
    hosts = parts.netloc.rpartition("@")[2]
    nodes: list[tuple[str, int]] = []
    for item in hosts.split(","):
        item = item.strip()
        if not item:
            continue
        if item.startswith("["):  # [ipv6]:port
            host, _, rest = item[1:].partition("]")
            port_text = rest.removeprefix(":")
        else:
            host, _, port_text = item.rpartition(":") if ":" in item else (item, "", "")
        if not host:
            raise ValueError(f"no host in {item!r}")
        if port_text and not port_text.isdigit():
            raise ValueError(f"port of {item!r} is not a number")
        nodes.append((unquote(host), int(port_text) if port_text else 6379))
    if not nodes:
        raise ValueError("no host in the cluster URL")
    return nodes


def _node_url(url: str, host: str, port: int) -> str:
    """The cluster URL rewritten as the plain URL of one node (credentials, path and query
    kept), which redis-py parses."""
    parts = urlsplit(url)
    userinfo, at, _ = parts.netloc.rpartition("@")
    shown = f"[{host}]" if ":" in host else host
    netloc = f"{userinfo}{at}{shown}:{port}"
    query = f"?{parts.query}" if parts.query else ""
    return f"{CLUSTER_SCHEMES[parts.scheme.lower()]}://{netloc}{parts.path}{query}"


def connect(
    url: str,
    *,
    socket_timeout: float | None = 5.0,
    socket_connect_timeout: float | None = 2.0,
    retries: int = 2,
    health_check_interval: float = 0,
    decode_responses: bool = False,
    retry_backoff: tuple[float, float] = (0.05, 0.5),
) -> RedisClient:
    """A client for ``url``: a cluster client for ``redis+cluster://`` and
    ``rediss+cluster://``, else one server's.

    Nothing connects yet. ``retries`` quick retries (exponential backoff from
    ``retry_backoff[0]`` up to ``retry_backoff[1]`` seconds) follow a connection error or a
    timeout; on a cluster they also follow a failover (the topology is read again first).

    Raises:
        ValueError: the URL cannot be parsed.
    """
    base, cap = retry_backoff
    retry = Retry(ExponentialBackoff(cap=cap, base=base), retries)
    if not is_cluster_url(url):
        return Redis.from_url(
            url,
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_connect_timeout,
            retry=retry,
            health_check_interval=health_check_interval,
            decode_responses=decode_responses,
        )
    nodes = seed_nodes(url)
    first, rest = nodes[0], nodes[1:]
    client = ClusterClient.from_url(
        _node_url(url, *first),
        startup_nodes=[ClusterNode(host, port) for host, port in rest],
        socket_timeout=socket_timeout,
        socket_connect_timeout=socket_connect_timeout,
        retry=retry,
        health_check_interval=health_check_interval,
        decode_responses=decode_responses,
        # Serve the slots that have a master while a failover replaces another one.
        require_full_coverage=False,
        max_connections=CLUSTER_MAX_CONNECTIONS,
    )
    assert isinstance(client, ClusterClient)
    return client


async def node_key(redis: RedisClient, key: str) -> str:
    """The name of the master that serves ``key``, by the client's view of the topology
    (``""`` for one server): keys with the same name can go on one connection.

    Raises:
        ClusterUnavailable: no master serves the key's slot.
    """
    if not isinstance(redis, RedisCluster):
        return ""
    try:
        await redis.initialize()  # the first topology, or a refresh asked for
        node = redis.get_node_from_key(key)
    except _UNAVAILABLE as exc:
        raise _unavailable(exc) from exc
    return node.name if node is not None else ""


async def one_connection(
    redis: RedisClient, key: str, commands: Sequence[Sequence[Any]]
) -> list[Any]:
    """Send ``commands`` in order on ONE connection to the master that serves ``key`` (the
    server itself, for one server) and return their replies, errors as exceptions.

    What ``WAIT`` needs: it covers the writes sent before it on its own connection. A
    cluster pipeline may retry a node's commands on another connection or node; this does
    not: a redirection comes back as its ``MovedError`` / ``AskError`` / ``TryAgainError``
    reply (that command did not run), and a connection error is raised.
    """
    if not isinstance(redis, RedisCluster):
        pipe = redis.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command)
        return list(await pipe.execute(raise_on_error=False))
    try:
        await redis.initialize()  # the first topology, or a refresh asked for below
        node = redis.get_node_from_key(key)
    except _UNAVAILABLE as exc:
        raise _unavailable(exc) from exc
    if node is None:
        raise ClusterUnavailable(f"Redis Cluster unavailable: no master serves {key!r}")
    queued = [PipelineCommand(index, *command) for index, command in enumerate(commands)]
    try:
        await node.execute_pipeline(queued)
    except (ConnectionError, RedisTimeoutError, OSError):
        # The master is gone (a failover is under way): read the topology again.
        redis._request_refresh(last_failed_node_name=node.name)
        raise
    results = [command.result for command in queued]
    if any(isinstance(r, MovedError | ConnectionError | RedisTimeoutError) for r in results):
        redis._request_refresh()
    return results
