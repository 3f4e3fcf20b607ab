"""``sinchbot doctor``: diagnose a configuration before (or while) ``sinchbot serve`` runs.

Each check looks at one thing the gateway depends on and says, in one line, that it is
fine (``ok:``), worth a look (``warn:``) or will break (``error:``), with what to do about
it. The checks, in order:

1. configuration: the settings load, ``SINCHBOT_CONFIG`` parses, the event handler or the
   enabled plugins and the built-in handlers' tables load as ``serve`` would load them;
2. Redis: ``SINCHBOT_REDIS_URL`` (or a running ``serve``'s embedded redis-server) answers
   PING, and its data suits the settings (partition count; dead letters waiting); for a
   cluster (``redis+cluster://``) its topology: each master's slots, partitions and
   replicas (a warning for a master without a replica, an error for slots without a
   master), and an error for a plain URL naming a cluster node;
3. credentials: a harmless provider call (the sender-ID listing) with a short timeout;
4. webhooks: the provider's webhook subscriptions push inbound messages and receipts to
   this gateway's ``/webhooks/messages`` and ``/webhooks/receipts`` (else the exact
   ``sinchbot webhooks subscribe`` command that fixes it);
5. security: webhooks are authenticated in production, the management API has a token.

Secrets are never printed: Redis URLs lose their password, keys and tokens are only said
to be set or not.
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import ipaddress
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal
from urllib.parse import parse_qs, urlsplit

from bot.cli.base import EXIT_ERROR, EXIT_OK, command
from bot.core.config import ConfigError, Settings, env_var, load_settings
from bot.ingress.webhook_auth import SECRET_HEADER, TOKEN_PARAM
from bot.ingress.webhooks import MESSAGES_PATH, RECEIPTS_PATH
from bot.sinch.client import SinchClient
from bot.sinch.models import Webhook

if TYPE_CHECKING:
    from bot.storage.topology import ClusterView

__all__ = ["Finding", "Report", "diagnose"]

Level = Literal["ok", "warn", "error"]

REDIS_TIMEOUT: Final = 3.0
"""Seconds a Redis connection and PING may take."""
PROVIDER_CONNECT_TIMEOUT: Final = 5.0
PROVIDER_TIMEOUT: Final = 10.0
"""Seconds a provider call may take (at most; lower settings win)."""
MIN_SECRET_LENGTH: Final = 16


@dataclass(frozen=True)
class Finding:
    """One line of the diagnosis."""

    level: Level
    check: str
    """Which check: ``configuration``, ``plugins``, ``redis``, ``credentials``,
    ``webhooks`` or ``security``."""
    message: str

    @property
    def line(self) -> str:
        return f"{self.level}: {' '.join(self.message.split())}"


@dataclass
class Report:
    """The findings, in the order the checks made them."""

    findings: list[Finding] = field(default_factory=list)

    def add(self, level: Level, check: str, message: str) -> None:
        self.findings.append(Finding(level, check, message))

    @property
    def ok(self) -> bool:
        """No error (warnings allowed)."""
        return all(f.level != "error" for f in self.findings)


# --------------------------------------------------------------------------- helpers


def safe_url(url: str) -> str:
    """``url`` without credentials or query (where a Redis password may hide)."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rpartition("@")[2]
    return f"{parts.scheme}://{netloc}{parts.path}"


def _reason(exc: BaseException) -> str:
    """The root cause of a connection failure, short: ``Connection refused``."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and not isinstance(current, TimeoutError):
            if current.errno and current.errno > 0:
                return os.strerror(current.errno)
            if current.strerror:
                return str(current.strerror)
        current = current.__cause__ or current.__context__
    if isinstance(exc, TimeoutError) or "timeout" in type(exc).__name__.lower():
        return "timed out"
    return " ".join(str(exc).split()) or type(exc).__name__


def _is_local(host: str | None) -> bool:
    """Whether ``host`` is this machine or a private network (unreachable from the
    provider)."""
    if not host:
        return True
    name = host.strip("[]").lower()
    if name == "localhost" or name.endswith((".localhost", ".local")):
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    return address.is_loopback or address.is_private or address.is_link_local


def _endpoint(url: str) -> tuple[str, str, int, str]:
    """Scheme, host, port and path of a URL, for comparing webhook targets."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError:
        port = -1
    return scheme, (parts.hostname or "").lower(), port, parts.path.rstrip("/") or "/"


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


# --------------------------------------------------------------------------- 1. configuration


def _load_settings(report: Report, overrides: dict[str, Any]) -> Settings | None:
    """The settings; each invalid one is an error, and the other checks go on with its
    default (``None`` when even that fails)."""
    env_file = " and ./.env" if Path(".env").is_file() else ""
    try:
        settings = load_settings(**overrides)
    except ConfigError as exc:
        report.add("error", "configuration", f"{exc}: fix the variables named")
    else:
        report.add("ok", "configuration", f"settings load (from the environment{env_file})")
        return settings
    from pydantic import ValidationError

    try:
        Settings(**overrides)
    except ValidationError as exc:
        bad = {str(e["loc"][0]) for e in exc.errors() if e["loc"]}
    except Exception:
        bad = set()
    defaults = {
        name: Settings.model_fields[name].get_default(call_default_factory=True)
        for name in bad
        if name in Settings.model_fields
    }
    try:
        settings = load_settings(**{**overrides, **defaults})
    except ConfigError:
        report.add("warn", "configuration", "the other checks are skipped until that is fixed")
        return None
    names = ", ".join(env_var(name) for name in sorted(defaults))
    report.add("warn", "configuration", f"the checks below use the default of {names}")
    return settings


def check_configuration(report: Report, settings: Settings) -> None:
    """``SINCHBOT_CONFIG``, the event handler or the plugins and built-in handlers."""
    from bot.app.gateway import load_handler
    from bot.core.botconfig import BotConfig, load_config
    from bot.demo.provider import is_zero_config

    try:
        config = load_config(settings.config)
    except ConfigError as exc:
        report.add("error", "configuration", f"{exc}: fix the file or SINCHBOT_CONFIG")
        config = BotConfig()  # still check SINCHBOT_PLUGINS and the handler
    else:
        if settings.config is None:
            report.add("ok", "configuration", "no SINCHBOT_CONFIG: the bot runs with the defaults")
        else:
            report.add("ok", "configuration", f"SINCHBOT_CONFIG {settings.config} parses")
    if settings.handler:
        try:
            handler = load_handler(settings.handler)
        except ValueError as exc:
            report.add("error", "plugins", f"{exc}: fix SINCHBOT_HANDLER")
        else:
            report.add(
                "ok",
                "plugins",
                f"SINCHBOT_HANDLER {settings.handler} loads ({type(handler).__name__}); "
                "plugins are not used with it",
            )
        return
    _check_assembly(report, settings, config, demo=is_zero_config(settings))


def _check_assembly(report: Report, settings: Settings, config: Any, *, demo: bool) -> None:
    """Assemble the bot as ``serve`` does (nothing connects), to hear what it says."""
    import structlog.testing
    from redis.asyncio import Redis

    from bot.app.assembly import assemble, enabled_plugins

    names = enabled_plugins(settings, config, demo=demo)
    try:
        with structlog.testing.capture_logs():  # assembly logs; doctor reports
            bot = assemble(settings, config, demo=demo, provider=None, redis=Redis())
    except ConfigError as exc:
        report.add("error", "configuration", f"{exc}: fix the config file")
        return
    except Exception as exc:
        report.add(
            "error",
            "plugins",
            f"the bot cannot be assembled: {type(exc).__name__}: {exc}: "
            "fix SINCHBOT_PLUGINS or the config file (SINCHBOT_DEBUG=1 sinchbot serve shows more)",
        )
        return
    for problem in bot.plugins.problems:
        report.add(
            "error",
            "plugins",
            f"{problem}: serve leaves it out; fix SINCHBOT_PLUGINS or the config file",
        )
    loaded = [p.name for p in bot.plugins.loaded]
    source = (
        "SINCHBOT_PLUGINS"
        if settings.plugins is not None
        else ("the config file" if config.plugins is not None else "the demo's defaults")
    )
    if not names:
        report.add(
            "ok",
            "plugins",
            "no plugins enabled (SINCHBOT_PLUGINS or the config file's plugins list adds some)",
        )
    elif loaded:
        report.add("ok", "plugins", f"{', '.join(loaded)} load (enabled by {source})")


# --------------------------------------------------------------------------- 2. Redis


async def check_redis(report: Report, settings: Settings) -> None:
    """PING the gateway's Redis and look at its data."""
    from bot.storage.redis_server import RedisServerError, find_redis_server, running_url

    url = settings.redis_url
    fix = "check SINCHBOT_REDIS_URL"
    if url is None:
        directory = settings.data_dir / "redis"
        url = running_url(directory)
        if url is None:
            try:
                binary = find_redis_server()
            except RedisServerError as exc:
                report.add(
                    "error",
                    "redis",
                    f"no SINCHBOT_REDIS_URL and {exc}: serve cannot start its embedded Redis",
                )
                return
            report.add(
                "ok",
                "redis",
                f"no SINCHBOT_REDIS_URL: embedded Redis will be started by serve "
                f"({binary}, data in {directory})",
            )
            return
        fix = (
            f"the embedded Redis of a serve recorded in {directory / 'redis.url'} is gone; "
            "start serve again (it starts a new one)"
        )
    await _ping(report, settings, url, fix, embedded=settings.redis_url is None)


async def _ping(report: Report, settings: Settings, url: str, fix: str, *, embedded: bool) -> None:
    from redis.asyncio.cluster import RedisCluster
    from redis.exceptions import (
        AuthenticationError,
        RedisClusterException,
        RedisError,
        ResponseError,
    )

    from bot.storage.connection import ClusterUnavailable, connect
    from bot.storage.keys import DLQ, META, WORKERS
    from bot.storage.topology import read_topology
    from bot.streams.leases import META_PARTITIONS

    shown = safe_url(url)
    try:
        client = connect(
            url,
            socket_connect_timeout=REDIS_TIMEOUT,
            socket_timeout=REDIS_TIMEOUT,
            retries=0,
        )
    except ValueError as exc:
        report.add("error", "redis", f"SINCHBOT_REDIS_URL {shown} is not a Redis URL ({exc})")
        return
    topology: ClusterView | None = None
    try:
        try:
            await asyncio.wait_for(client.ping(), REDIS_TIMEOUT + 1)
            info = await client.info("server")
            if isinstance(client, RedisCluster):
                topology = await read_topology(client)
            elif (await client.info("cluster")).get("cluster_enabled"):
                report.add(
                    "error",
                    "redis",
                    f"redis at {shown} is a node of a Redis Cluster: name the cluster in "
                    f"SINCHBOT_REDIS_URL ({_cluster_url(shown)})",
                )
                return
            replicas = None
            if topology is None and settings.redis_wait_replicas:
                replicas = int((await client.info("replication")).get("connected_slaves", 0))
            recorded = await client.hget(META, META_PARTITIONS)
            seconds, micros = await client.time()
            now_ms = int(seconds) * 1000 + int(micros) // 1000
            workers = await client.zcount(WORKERS, now_ms, "+inf")
            dead = await client.xlen(DLQ)
        except (AuthenticationError, ResponseError) as exc:
            text = " ".join(str(exc).split())
            report.add(
                "error",
                "redis",
                f"redis at {shown} refused us ({text}): check the password in SINCHBOT_REDIS_URL",
            )
            return
        except ClusterUnavailable as exc:
            report.add("error", "redis", f"redis cluster at {shown} unavailable ({exc}): {fix}")
            return
        except RedisClusterException as exc:
            report.add(
                "error",
                "redis",
                f"redis at {shown} is not a cluster ({exc}): SINCHBOT_REDIS_URL names a cluster "
                "(redis+cluster://); for one server use redis://",
            )
            return
        except (RedisError, OSError, TimeoutError) as exc:
            # A stale URL file of a serve that died: the next serve starts a new server.
            level: Level = "warn" if embedded else "error"
            report.add(level, "redis", f"redis at {shown} unreachable ({_reason(exc)}): {fix}")
            return
    finally:
        await client.aclose()
    version = info.get("redis_version", "?") if isinstance(info, dict) else "?"
    where = "the embedded redis-server of a running serve" if embedded else "redis"
    if topology is not None:
        where = "redis cluster"
    running = f", {_plural(int(workers), 'worker')} running" if workers else ""
    report.add("ok", "redis", f"{where} at {shown} answers (Redis {version}{running})")
    if topology is not None:
        _report_topology(report, settings, topology)
    elif replicas is not None and replicas < settings.redis_wait_replicas:
        report.add(
            "error",
            "redis",
            f"SINCHBOT_REDIS_WAIT_REPLICAS={settings.redis_wait_replicas} but redis at "
            f"{shown} has {_plural(replicas, 'replica')}: every webhook answers 503; "
            "add replicas or lower it",
        )
    if recorded is not None:
        count = int(recorded)
        if count != settings.partitions:
            report.add(
                "error",
                "redis",
                f"the data in Redis was written with {count} partitions but "
                f"SINCHBOT_PARTITIONS is {settings.partitions}: serve refuses to start; "
                f"set SINCHBOT_PARTITIONS={count}",
            )
    if dead:
        report.add(
            "warn",
            "redis",
            f"{_plural(int(dead), 'dead letter')} waiting: see `sinchbot dlq list`, "
            "then `sinchbot dlq replay` or `sinchbot dlq purge`",
        )


def _cluster_url(shown: str) -> str:
    """``redis+cluster://host:port`` for the plain URL ``shown``."""
    parts = urlsplit(shown)
    scheme = "rediss+cluster" if parts.scheme == "rediss" else "redis+cluster"
    return f"{scheme}://{parts.netloc}"


def _report_topology(report: Report, settings: Settings, view: ClusterView) -> None:
    """The cluster's masters, their slots, partitions and replicas; a master without a
    replica is a warning, slots without a master an error."""
    from bot.storage.topology import SLOTS, ranges

    masters = view.masters
    replicas = [n for n in view.replicas if not n.failing]
    report.add(
        "ok" if view.served == SLOTS else "error",
        "redis",
        f"cluster topology: {_plural(len(masters), 'master')}, "
        f"{_plural(len(replicas), 'replica')}, {view.served} of {SLOTS} slots served",
    )
    for master in masters:
        partitions = view.partitions_of(master, settings.partitions)
        held = f"partitions {ranges(partitions)}" if partitions else "no partition"
        if master.failing:
            report.add(
                "error",
                "redis",
                f"cluster master {master.address} is failing: its slots "
                f"{ranges(s for low, high in master.slots for s in range(low, high + 1))} "
                f"({held}) wait for a replica to take over; their webhooks answer 503",
            )
            continue
        own = view.replicas_of(master)
        slots = ranges(s for low, high in master.slots for s in range(low, high + 1))
        wait = settings.redis_wait_replicas
        if len(own) < wait:
            report.add(
                "error",
                "redis",
                f"SINCHBOT_REDIS_WAIT_REPLICAS={wait} but cluster master {master.address} has "
                f"{_plural(len(own), 'replica')}: the webhooks of {held} answer 503 until it "
                "has enough",
            )
        if own:
            names = ", ".join(r.address for r in own)
            report.add(
                "ok",
                "redis",
                f"cluster master {master.address}: slots {slots} ({held}), "
                f"{_plural(len(own), 'replica')} ({names})",
            )
        else:
            report.add(
                "warn",
                "redis",
                f"cluster master {master.address} has no replica: if it fails, {held} "
                f"(slots {slots}) stop until it is back; give it one "
                f"(CLUSTER REPLICATE {master.id} on a new node)",
            )
    unserved = view.unserved_partitions(settings.partitions)
    if view.served < SLOTS:
        report.add(
            "error",
            "redis",
            f"{SLOTS - view.served} of {SLOTS} slots have no master"
            + (f" (partitions {ranges(unserved)})" if unserved else "")
            + ": their webhooks answer 503 until a master serves them "
            "(CLUSTER ADDSLOTS, or a replica's failover)",
        )
    for node in view.nodes:
        if node.failing and not (node.master and node.slots):
            report.add("warn", "redis", f"cluster node {node.address} is failing or unreachable")


# --------------------------------------------------------------------------- 3-5. provider


def _client(settings: Settings) -> SinchClient:
    assert settings.api_key is not None
    assert settings.api_secret is not None
    return SinchClient(
        api_key=settings.api_key.get_secret_value(),
        api_secret=settings.api_secret.get_secret_value(),
        base_url=settings.api_base_url,
        auth=settings.auth,
        hmac_algorithm=settings.hmac_algorithm,
        account=settings.account,
        connect_timeout=min(settings.connect_timeout, PROVIDER_CONNECT_TIMEOUT),
        request_timeout=min(settings.request_timeout, PROVIDER_TIMEOUT),
        rcs_path=settings.rcs_path,
        default_region=settings.default_region,
    )


def _provider_failure(report: Report, settings: Settings, exc: Exception, what: str) -> bool:
    """Report a provider call's failure; whether further calls are pointless."""
    from bot.sinch.errors import (
        AuthenticationError,
        SinchAPIError,
        SinchTimeoutError,
        SinchTransportError,
    )

    url = settings.api_base_url
    if isinstance(exc, AuthenticationError):
        report.add(
            "error",
            "credentials",
            f"the provider at {url} refused the credentials ({exc.status_code}): "
            "check SINCHBOT_API_KEY / SINCHBOT_API_SECRET"
            + (" and SINCHBOT_HMAC_ALGORITHM" if settings.auth == "hmac" else ""),
        )
        return True
    if isinstance(exc, SinchTimeoutError):
        report.add(
            "error",
            "credentials",
            f"the provider at {url} did not answer in time: check SINCHBOT_BASE_URL and the network",
        )
        return True
    if isinstance(exc, SinchTransportError):
        report.add(
            "error",
            "credentials",
            f"cannot reach the provider at {url} ({_reason(exc)}): "
            "check SINCHBOT_BASE_URL and the network",
        )
        return True
    if isinstance(exc, SinchAPIError):
        report.add(
            "warn",
            "credentials" if what == "sender IDs" else "webhooks",
            f"the provider at {url} answered the {what} listing with HTTP "
            f"{exc.status_code}: {exc.message}",
        )
        return False
    raise exc


def check_credentials_setup(report: Report, settings: Settings) -> bool:
    """Whether there are credentials to try (else say what serve will do)."""
    key = bool(settings.api_key and settings.api_key.get_secret_value())
    secret = bool(settings.api_secret and settings.api_secret.get_secret_value())
    if key != secret:
        have, missing = (
            ("SINCHBOT_API_KEY", "SINCHBOT_API_SECRET")
            if key
            else ("SINCHBOT_API_SECRET", "SINCHBOT_API_KEY")
        )
        consequence = (
            "serve will not start"
            if settings.base_url
            else "serve ignores it and runs the sandbox (demo mode)"
        )
        report.add(
            "error", "credentials", f"{have} is set but {missing} is not: {consequence}; set both"
        )
        return False
    if not key:
        if settings.base_url:
            report.add(
                "error",
                "credentials",
                "SINCHBOT_BASE_URL is set without SINCHBOT_API_KEY and SINCHBOT_API_SECRET: "
                "serve will not start; set both, or unset SINCHBOT_BASE_URL for the demo",
            )
        else:
            report.add(
                "warn",
                "credentials",
                "no SINCHBOT_API_KEY: serve runs the sandbox (demo mode) on port "
                f"{settings.sandbox_port}; set SINCHBOT_API_KEY and SINCHBOT_API_SECRET "
                "for the real provider",
            )
        return False
    return True


async def check_provider(report: Report, settings: Settings) -> None:
    """Credentials (a harmless call), then the webhook subscriptions and signature key."""
    from bot.sinch.errors import SinchError

    url = settings.api_base_url
    async with _client(settings) as client:
        try:
            senders = await client.sender_ids()
        except SinchError as exc:
            if _provider_failure(report, settings, exc, "sender IDs"):
                return
        else:
            default = senders.default_sender.number if senders.default_sender else None
            numbers = _plural(len(senders.senders), "sender ID")
            report.add(
                "ok",
                "credentials",
                f"the provider at {url} accepts the credentials ({numbers}"
                + (f", default {default})" if default else ")"),
            )
        try:
            hooks = await client.all_webhooks()
        except SinchError as exc:
            if _provider_failure(report, settings, exc, "webhook"):
                return
        else:
            check_webhooks(report, settings, hooks)
        if settings.webhook_public_key:
            await _check_signature_key(report, settings, client)


def _provider_is_local(settings: Settings) -> bool:
    return _is_local(urlsplit(settings.api_base_url).hostname)


def check_public_url(report: Report, settings: Settings) -> None:
    """Whether the provider can reach the gateway at ``SINCHBOT_PUBLIC_URL``."""
    if _provider_is_local(settings):
        return  # a sandbox on this machine reaches a local gateway
    if settings.public_url is None:
        report.add(
            "warn",
            "webhooks",
            f"SINCHBOT_PUBLIC_URL is not set, so webhooks are checked against "
            f"{settings.gateway_url}, which the provider cannot reach: set it to the "
            "gateway's public https:// URL",
        )
        return
    parts = urlsplit(settings.public_url)
    if _is_local(parts.hostname):
        report.add(
            "warn",
            "webhooks",
            f"SINCHBOT_PUBLIC_URL {settings.public_url} is a local address the provider "
            "cannot reach: set it to the gateway's public https:// URL",
        )
    elif parts.scheme == "http":
        report.add(
            "warn",
            "webhooks",
            f"SINCHBOT_PUBLIC_URL {settings.public_url} is plain http: use https so "
            "webhooks and their secret travel encrypted",
        )


def _subscribe_command(settings: Settings, paths: Sequence[str]) -> str:
    base = settings.gateway_url
    words = ["sinchbot webhooks subscribe"]
    if MESSAGES_PATH in paths:
        words.append(f"--messages-url {base}{MESSAGES_PATH}")
    if RECEIPTS_PATH in paths:
        words.append(f"--receipts-url {base}{RECEIPTS_PATH}")
    if settings.webhook_secret is not None:
        words.append(f'--header {SECRET_HEADER}="$SINCHBOT_WEBHOOK_SECRET"')
    return " ".join(words)


def check_webhooks(report: Report, settings: Settings, hooks: Sequence[Webhook]) -> None:
    """The message and receipt webhooks point at this gateway, with the events, template
    and secret it needs."""
    from bot.sinch.templates import DR_EVENTS, MO_EVENTS

    base = settings.gateway_url
    missing: list[str] = []
    found: list[str] = []
    for path, events, marker, kind in (
        (MESSAGES_PATH, MO_EVENTS, "reply_id", "messages"),
        (RECEIPTS_PATH, DR_EVENTS, "delivery_report_id", "receipts"),
    ):
        want = _endpoint(base + path)
        ours = [h for h in hooks if _endpoint(h.url) == want]
        elsewhere = [
            h for h in hooks if _endpoint(h.url)[3].endswith(path) and _endpoint(h.url) != want
        ]
        for hook in elsewhere:
            report.add(
                "warn",
                "webhooks",
                f"webhook {hook.id} pushes {kind} to {safe_url(hook.url)}, not to this gateway "
                f"({base}): if it is stale, `sinchbot webhooks delete {hook.id}`",
            )
        if not ours:
            missing.append(path)
            continue
        clean = [
            _check_hook(report, settings, h, [str(e) for e in events], marker, kind) for h in ours
        ]
        if any(clean):
            found.append(kind)
    if missing:
        kinds = " or ".join("message" if p == MESSAGES_PATH else "receipt" for p in missing)
        report.add(
            "warn",
            "webhooks",
            f"no {kinds} webhook points at {base}: run `{_subscribe_command(settings, missing)}`",
        )
    if found:
        paths = " and ".join(f"{base}/webhooks/{kind}" for kind in found)
        report.add("ok", "webhooks", f"the provider pushes {' and '.join(found)} to {paths}")


def _check_hook(
    report: Report, settings: Settings, hook: Webhook, events: list[str], marker: str, kind: str
) -> bool:
    """Report what is wrong with one of our webhooks; whether nothing is."""
    problems = len(report.findings)
    redo = (
        f"`sinchbot webhooks delete {hook.id}` and subscribe again "
        f"(`sinchbot doctor` prints the command once it is gone)"
    )
    lacking = [e for e in events if e not in set(hook.events)]
    if lacking:
        report.add(
            "warn",
            "webhooks",
            f"the {kind} webhook {hook.id} lacks the events {', '.join(lacking)}: {redo}",
        )
    if hook.template and marker not in hook.template:
        report.add(
            "warn",
            "webhooks",
            f"the {kind} webhook {hook.id}'s template has no {marker}, so redelivered "
            f"pushes cannot be recognised: {redo}",
        )
    if settings.webhook_secret is None or settings.webhook_public_key:
        return len(report.findings) == problems
    secret = settings.webhook_secret.get_secret_value()
    sent = [v for k, v in (hook.headers or {}).items() if k.lower() == SECRET_HEADER.lower()]
    sent += parse_qs(urlsplit(hook.url).query).get(TOKEN_PARAM, [])
    if not sent:
        report.add(
            "warn",
            "webhooks",
            f"the {kind} webhook {hook.id} sends no {SECRET_HEADER} header: the gateway "
            f"refuses its pushes (401); {redo}",
        )
    elif not any(hmac.compare_digest(v.encode(), secret.encode()) for v in sent):
        report.add(
            "warn",
            "webhooks",
            f"the {kind} webhook {hook.id} sends another secret than "
            f"SINCHBOT_WEBHOOK_SECRET: the gateway refuses its pushes (403); {redo}",
        )
    return len(report.findings) == problems


async def _check_signature_key(report: Report, settings: Settings, client: SinchClient) -> None:
    """The configured public key is the provider's enabled signature key."""
    from bot.sinch.errors import NotFoundError, PermissionDeniedError, SinchError
    from bot.sinch.signatures import load_public_key

    assert settings.webhook_public_key is not None
    try:
        ours = load_public_key(settings.webhook_public_key)
    except ValueError:
        return  # check_security reports it
    try:
        enabled = await client.request("GET", "/v1/iam/signature_keys/enabled")
    except NotFoundError:
        report.add(
            "warn",
            "security",
            "no signature key is enabled at the provider, so webhooks come unsigned: "
            "enable the key of SINCHBOT_WEBHOOK_PUBLIC_KEY or use SINCHBOT_WEBHOOK_SECRET",
        )
        return
    except PermissionDeniedError:
        report.add(
            "warn",
            "security",
            "signed webhooks are not enabled for this account, so webhooks come unsigned: "
            "use SINCHBOT_WEBHOOK_SECRET instead",
        )
        return
    except SinchError:
        return
    try:
        theirs = load_public_key(str((enabled or {}).get("public_key", "")))
    except ValueError:
        return
    if ours.public_numbers() != theirs.public_numbers():
        report.add(
            "error",
            "security",
            f"SINCHBOT_WEBHOOK_PUBLIC_KEY is not the provider's enabled signature key "
            f"({enabled.get('key_id')}): signed webhooks will be refused; copy that key's "
            "public_key",
        )
    else:
        report.add(
            "ok",
            "security",
            f"SINCHBOT_WEBHOOK_PUBLIC_KEY is the provider's enabled signature key "
            f"({enabled.get('key_id')})",
        )


def check_security(report: Report, settings: Settings, *, demo: bool) -> None:
    """Webhook authentication and the management API's token."""
    if demo:
        if _is_local(settings.host):
            report.add(
                "ok",
                "security",
                "demo mode: webhooks from the in-process sandbox and the API are open, "
                f"on {settings.host} only",
            )
        else:
            report.add(
                "warn",
                "security",
                f"demo mode listens on {settings.host} with webhooks and the API open: "
                "use SINCHBOT_HOST=127.0.0.1, or configure the provider for production",
            )
        return
    key_ok = False
    if settings.webhook_public_key:
        from bot.sinch.signatures import load_public_key

        try:
            load_public_key(settings.webhook_public_key)
        except ValueError as exc:
            report.add(
                "error",
                "security",
                f"SINCHBOT_WEBHOOK_PUBLIC_KEY is unusable ({exc}): serve will not start; "
                "copy the public_key of the provider's signature key",
            )
            return
        key_ok = True
    secret = settings.webhook_secret.get_secret_value() if settings.webhook_secret else ""
    if not key_ok and not secret:
        report.add(
            "error",
            "security",
            "production without SINCHBOT_WEBHOOK_SECRET or SINCHBOT_WEBHOOK_PUBLIC_KEY: the "
            "gateway refuses every webhook; set SINCHBOT_WEBHOOK_SECRET to a long random value "
            f"and subscribe with --header {SECRET_HEADER}=...",
        )
    else:
        by = " and ".join(
            name
            for name, on in (
                ("SINCHBOT_WEBHOOK_SECRET", bool(secret)),
                ("RSA signatures (SINCHBOT_WEBHOOK_PUBLIC_KEY)", key_ok),
            )
            if on
        )
        report.add("ok", "security", f"webhooks are authenticated by {by}")
        if secret and len(secret) < MIN_SECRET_LENGTH:
            report.add(
                "warn",
                "security",
                f"SINCHBOT_WEBHOOK_SECRET is shorter than {MIN_SECRET_LENGTH} characters: "
                "use a long random value",
            )
    token = settings.api_token.get_secret_value() if settings.api_token else ""
    if not token:
        report.add(
            "warn",
            "security",
            "no SINCHBOT_API_TOKEN: the management API (/api/) is disabled; set one to use it",
        )
    elif len(token) < MIN_SECRET_LENGTH:
        report.add(
            "warn",
            "security",
            f"SINCHBOT_API_TOKEN is shorter than {MIN_SECRET_LENGTH} characters: "
            "use a long random value",
        )
    else:
        report.add("ok", "security", "SINCHBOT_API_TOKEN protects the management API")


# --------------------------------------------------------------------------- running


def diagnose(overrides: dict[str, Any] | None = None) -> Report:
    """Run every check (the settings from the environment and ``.env``, with
    ``overrides``); the findings in order."""
    report = Report()
    settings = _load_settings(report, dict(overrides or {}))
    if settings is None:
        return report
    from bot.demo.provider import is_zero_config

    demo = is_zero_config(settings)
    check_configuration(report, settings)
    provider = check_credentials_setup(report, settings)
    if not demo:
        check_public_url(report, settings)

    async def go() -> None:
        await check_redis(report, settings)
        if provider:
            await check_provider(report, settings)

    asyncio.run(go())
    # Credentials and webhook checks come before security in the output, as listed.
    check_security(report, settings, demo=demo)
    _order(report)
    return report


_ORDER: Final = ("configuration", "plugins", "redis", "credentials", "webhooks", "security")


def _order(report: Report) -> None:
    """Group the findings by check, in the documented order (stable within a check)."""
    report.findings.sort(key=lambda f: _ORDER.index(f.check) if f.check in _ORDER else 99)


def _doctor(args: argparse.Namespace) -> int:
    overrides = {
        name: getattr(args, name)
        for name in ("base_url", "api_key", "api_secret")
        if getattr(args, name, None) is not None
    }
    report = diagnose(overrides)
    if getattr(args, "json", False):
        body = {"ok": report.ok, "findings": [asdict(f) for f in report.findings]}
        print(json.dumps(body, indent=2, ensure_ascii=False))
    else:
        for finding in report.findings:
            print(finding.line)
    sys.stdout.flush()
    return EXIT_OK if report.ok else EXIT_ERROR


def _add_doctor(commands: Any) -> None:
    parser = command(
        commands,
        "doctor",
        help="check the configuration, Redis, credentials and webhooks, and say what to fix",
        description=(
            "Check what `sinchbot serve` depends on: the settings and the config file, the\n"
            "plugins, Redis (PING), the provider's credentials (a harmless call), the webhook\n"
            "subscriptions and webhook security. One line per finding: ok:, warn: or\n"
            "error:, with what to fix. Exit status 1 when there is an error."
        ),
        examples=[
            "sinchbot doctor",
            "sinchbot doctor --json",
            "SINCHBOT_REDIS_URL=redis://redis:6379/0 sinchbot doctor",
        ],
    )
    parser.set_defaults(handler=_doctor)
