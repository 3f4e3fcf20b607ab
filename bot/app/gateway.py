"""The gateway server: one aiohttp application that owns every resource of a
``sinchbot serve`` process, started and stopped in order by a cleanup context.

Start: Redis (the configured one, or an embedded redis-server, which a supervisor restarts if
it dies) → the provider (the real API, or an in-process sandbox in zero-configuration mode)
→ the worker registry (heartbeat and partition leases) → the inbox consumer, the timer pump,
the sender and the forwarder. Stop (SIGTERM or Ctrl-C): the HTTP site closes first (no new
webhooks), then the consumers finish the batch in hand and commit it, the sender records the
batch on the wire, leases are released, and the resources close in reverse order.
"""

from __future__ import annotations

import asyncio
import importlib
import secrets
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import urlsplit

import structlog
from aiohttp import web

from bot.api.routes import Api, ApiDeps, api_routes
from bot.app.assembly import Bot, assemble
from bot.app.hosts import host_guard
from bot.app.metrics import METRICS_PATH, GatewayMetrics
from bot.app.plugins import Handler, Plugin, PluginHost
from bot.conversation.context import Clock, utc_now
from bot.core.botconfig import BotConfig, load_config
from bot.core.config import Settings
from bot.core.logs import add_secret
from bot.demo.provider import SANDBOX_KEY, InProcessSandbox, Sandbox, is_zero_config
from bot.demo.simulator import simulator_routes
from bot.demo.start import DEMO_HANDSET, begin, demo_config, try_it
from bot.inbox.handling import EventHandler, GatewayLimits, RecordingHandler
from bot.inbox.timers import TimerPump
from bot.inbox.worker import InboxConsumer
from bot.ingress.admission import Ingress
from bot.ingress.webhook_auth import WebhookAuth
from bot.ingress.webhooks import webhook_routes
from bot.outbox.deferred import DeferredPump
from bot.outbox.quiet_hours import QuietHours
from bot.receipts.forwarding import Forwarder
from bot.sender.loop import Sender
from bot.sender.throttle import Throttle, connection_id
from bot.sinch.client import SinchClient
from bot.storage.connection import RedisClient, connect
from bot.storage.redis_server import RedisServer, RedisSupervisor
from bot.storage.store import Store
from bot.streams.leases import WorkerRegistry
from bot.web.routes import web_routes

log = structlog.get_logger(__name__)

Role = Literal["all", "web", "worker"]


def load_handler(spec: str | None) -> EventHandler:
    """The event handler named ``module:attribute`` (a class or an instance)."""
    if not spec:
        return RecordingHandler()
    module_name, _, attribute = spec.partition(":")
    if not attribute:
        raise ValueError(f"SINCHBOT_HANDLER must be 'module:attribute', got {spec!r}")
    try:
        target = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"SINCHBOT_HANDLER {spec!r} cannot be loaded: {exc}") from exc
    handler = target() if isinstance(target, type) else target
    if not callable(getattr(handler, "handle", None)):
        raise ValueError(f"SINCHBOT_HANDLER {spec!r} has no handle(ctx) method")
    return handler  # type: ignore[no-any-return]


def _unguarded(handler: Handler) -> Handler:
    return handler


async def _no_body(_request: web.Request) -> Any:
    raise RuntimeError("a plugin host without the API reads no request body")


@dataclass
class Endpoints:
    """Where things are, for the start-up banner."""

    gateway: str
    redis: str
    provider: str
    sandbox: bool
    embedded_redis: bool


class Gateway:
    """Everything one ``sinchbot serve`` process runs, built from settings."""

    def __init__(
        self,
        settings: Settings,
        *,
        handler: EventHandler | None = None,
        role: Role = "all",
        config: BotConfig | None = None,
        clock: Clock = utc_now,
        plugins: Mapping[str, Plugin] | None = None,
    ) -> None:
        """Build every part from ``settings``.

        Args:
            handler: The event handler; default: ``SINCHBOT_HANDLER`` if set, else the
                conversation engine assembled from the config file and the plugins.
            config: The bot's configuration (default: read from ``SINCHBOT_CONFIG``).
            clock: The engine's clock (the testing kit moves it).
            plugins: Plugins to choose from instead of the installed entry points.
        """
        self.settings = settings
        self.role = role
        self.demo = is_zero_config(settings)
        self.clock = clock
        # The demo runs its own sample configuration unless a config file is given.
        self.demo_config = config is None and settings.config is None and self.demo
        if config is None:
            config = demo_config() if self.demo_config else load_config(settings.config)
        self.config = config
        self.ttl_ms = round(settings.timeline_ttl * 1000)
        self.api_sends: Counter[str] = Counter()
        """Messages queued through the management API, by outcome (for metrics)."""
        # Never logged, wherever they would appear (a URL, an error message...).
        add_secret(
            *(
                secret.get_secret_value() if secret else None
                for secret in (
                    settings.api_key,
                    settings.api_secret,
                    settings.webhook_secret,
                    settings.api_token,
                    settings.forward_secret,
                )
            ),
            urlsplit(settings.redis_url).password if settings.redis_url else None,
        )
        # Read at scrape time; built first so the parts below can report to it.
        self.metrics = GatewayMetrics(self)

        self.embedded_redis: RedisServer | None = None
        self.redis_supervisor: RedisSupervisor | None = None
        if settings.redis_url:
            redis_url = settings.redis_url
        else:
            self.embedded_redis = RedisServer(
                settings.data_dir / "redis", owner_url=settings.gateway_url
            )
            self.redis_supervisor = RedisSupervisor(self.embedded_redis)
            redis_url = self.embedded_redis.url
        # Few, fast retries: a webhook must answer 503 promptly while Redis is down.
        # One server, or a cluster for redis+cluster:// (bot.storage.connection).
        self.redis: RedisClient = connect(
            redis_url,
            socket_timeout=5,
            socket_connect_timeout=2,
            retries=2,
            retry_backoff=(0.05, 0.5),
            health_check_interval=15,
        )
        self.store = Store(self.redis)

        self.demo_provider = InProcessSandbox(settings) if self.demo else None
        self.sandbox: Sandbox | None = None
        """The demo's in-process sandbox (``None`` with a real provider)."""
        if self.demo_provider is not None:
            self.sandbox = self.demo_provider.sandbox
            self.client = self.demo_provider.client
        else:
            self.client = SinchClient.from_settings(settings)

        self.bot: Bot | None = None
        if handler is None and settings.handler is None:
            self.bot = assemble(
                settings,
                self.config,
                demo=self.demo,
                provider=self.client,
                redis=self.redis,
                clock=clock,
                available=plugins,
            )
            handler = self.bot.handler
            self.bot.engine.on_error = self.metrics.handler_error
            self.metrics.know_routers(router.name for router in self.bot.engine.routers)
        self.handler = handler or load_handler(settings.handler)

        key = settings.api_key.get_secret_value() if settings.api_key else SANDBOX_KEY
        self.throttle = Throttle(
            self.redis,
            connection_id(self.client.base_url, key, settings.account),
            calls=settings.throttle_calls,
            period=settings.throttle_period,
            # The longest a call can take: its process counts it as in flight until then.
            in_flight=settings.connect_timeout + settings.request_timeout + 5.0,
        )
        self.registry = WorkerRegistry(
            self.redis, partitions=settings.partitions, lease_ttl=settings.lease_ttl
        )
        policy = QuietHours.from_config(self.config.quiet_hours)
        self.quiet_hours = policy if policy.active else None
        self.limits = GatewayLimits(
            timeline_max=settings.timeline_max,
            ttl_ms=self.ttl_ms,
            forward=bool(settings.forward_url_list),
            quiet_hours=self.quiet_hours,
            clock=clock,
        )
        self.inbox = InboxConsumer(
            self.store,
            self.registry,
            self.handler,
            limits=self.limits,
            max_deliveries=settings.max_deliveries,
            on_handled=self.metrics.handled,
            concurrency=settings.inbox_concurrency or None,
        )
        self.timers = TimerPump(self.store, self.registry, skew=self.skew)
        # Always running: sends deferred under an earlier configuration still get released.
        self.deferred = DeferredPump(self.store, self.registry, skew=self.skew)
        self.sender = Sender(
            self.store,
            self.client,
            self.throttle,
            # Drain only the partitions whose leases we hold: a conversation's messages
            # then leave in order, even when a crashed worker's partitions move.
            registry=self.registry,
            ttl_ms=self.ttl_ms,
            timeline_max=settings.timeline_max,
            max_deliveries=settings.max_deliveries,
        )
        forward_secret = (
            settings.forward_secret.get_secret_value() if settings.forward_secret else None
        )
        self.forwarder = Forwarder(
            self.store,
            settings.forward_url_list,
            forward_secret,
            registry=self.registry,
            max_deliveries=settings.max_deliveries,
        )
        self.ingress = Ingress(
            self.store,
            settings.partitions,
            settings.dedupe_ttl,
            wait_replicas=settings.redis_wait_replicas,
            wait_timeout=settings.redis_wait_timeout,
        )
        self.webhook_auth = WebhookAuth(
            settings.webhook_public_key,
            settings.webhook_secret.get_secret_value() if settings.webhook_secret else None,
            settings.webhook_max_skew,
            allow_unauthenticated=self.demo,
        )
        self._started = False

    def skew(self) -> float:
        """Seconds the engine's clock runs ahead of real time (0 but in tests that move
        the clock): timers and deferred sends are due by the engine's clock."""
        if self.clock is utc_now:
            return 0.0
        return (self.clock() - datetime.now(UTC)).total_seconds()

    @property
    def endpoints(self) -> Endpoints:
        return Endpoints(
            gateway=self.settings.gateway_url,
            redis=self.embedded_redis.url if self.embedded_redis else "configured",
            provider=self.client.base_url,
            sandbox=self.sandbox is not None,
            embedded_redis=self.embedded_redis is not None,
        )

    @property
    def runs_workers(self) -> bool:
        return self.role in ("all", "worker")

    @property
    def serves_http(self) -> bool:
        return self.role in ("all", "web")

    async def ready(self) -> bool:
        """Started, and (for workers) holding a heartbeat; the embedded Redis, if any, is not
        being restarted."""
        supervisor = self.redis_supervisor
        return self._started and (supervisor is None or supervisor.state == "running")

    def live(self) -> str | None:
        """Why this process cannot recover by itself (``/healthz`` fails), or ``None`` while
        it can: a configured Redis that is down comes back on its own and the client
        reconnects; an embedded one is restarted by its supervisor, until it gives up."""
        supervisor = self.redis_supervisor
        return supervisor.reason if supervisor is not None and supervisor.failed else None

    @property
    def embedded(self) -> bool:
        """Redis is this process's own embedded redis-server."""
        return self.embedded_redis is not None

    def plugin_host(self, name: str, api: Api | None = None) -> PluginHost | None:
        """What the loaded plugin ``name`` is handed: its settings, the gateway's store and
        clock, and (given the ``api``) the API's guard and body reader for its routes;
        ``None`` when the plugin is not loaded."""
        found = [p for p in self.bot.plugins.loaded if p.name == name] if self.bot else []
        if not found:
            return None
        return PluginHost(
            store=self.store,
            partitions=self.settings.partitions,
            settings=found[0].settings,
            guard=api.guarded if api is not None else _unguarded,
            read_json=api.read_json if api is not None else _no_body,
            clock=self.clock,
            default_region=self.settings.default_region,
        )

    def routes(self) -> list[web.RouteDef]:
        token = self.settings.api_token.get_secret_value() if self.settings.api_token else None
        if token is None and not self.demo:
            # Outside the demo the API is never open: with no token set, nobody can call it.
            token = secrets.token_urlsafe(32)
        deps = ApiDeps(
            store=self.store,
            partitions=self.settings.partitions,
            ttl_ms=self.ttl_ms,
            timeline_max=self.settings.timeline_max,
            max_body=self.settings.max_body,
            default_region=self.settings.default_region,
            api_token=token,
            client=self.client,
            ready=self.ready,
            live=self.live,
            throttle=self.throttle,
            quiet_hours=self.quiet_hours,
            clock=self.clock,
            sends=self.api_sends,
        )
        routes = api_routes(deps)
        api = Api(deps)
        if self.bot is not None:
            for loaded in self.bot.plugins.loaded:
                host = self.plugin_host(loaded.name, api)
                if loaded.plugin.routes is not None and host is not None:
                    routes += list(loaded.plugin.routes(host))
        routes += web_routes(
            api,
            self.store,
            partitions=self.settings.partitions,
            demo=self.demo,
            simulator=self.sandbox is not None,
        )
        routes += simulator_routes(lambda: self.sandbox, api, self.settings.default_region)
        routes.append(self.metrics.route())
        if self.serves_http:
            routes += webhook_routes(
                self.ingress, self.webhook_auth, max_body=self.settings.max_body
            )
        return routes

    async def start(self) -> None:
        if self.embedded_redis is not None:
            await asyncio.to_thread(self.embedded_redis.start)
            assert self.redis_supervisor is not None
            await self.redis_supervisor.start()
        if self.sandbox is not None:
            await self.sandbox.start()
        if self.runs_workers:
            await begin(self)  # the demo: a clean restart, the sample appointment (bot/demo.py)
            await self.registry.start()
            await self.inbox.start()
            await self.timers.start()
            await self.deferred.start()
            await self.sender.start()
            await self.forwarder.start()
        self._started = True

    async def stop(self) -> None:
        """Stop everything in reverse order. Safe after a partial start: each part that
        did not start is a no-op, and one part failing to stop does not keep the others
        (the embedded redis-server above all) running."""
        self._started = False
        steps: list[Callable[[], Awaitable[None]]] = []
        if self.runs_workers:
            steps += [
                self.deferred.stop,
                self.timers.stop,
                self.inbox.stop,
                self.sender.stop,
                self.forwarder.stop,
                self.registry.stop,
            ]
        if self.sandbox is not None:
            steps.append(self.sandbox.stop)
        steps += [self.client.aclose, self.redis.aclose]
        if self.redis_supervisor is not None:
            steps.append(self.redis_supervisor.stop)  # before the server: no restart of it
        if self.embedded_redis is not None:
            server = self.embedded_redis
            steps.append(lambda: asyncio.to_thread(server.stop))
        for step in steps:
            try:
                await step()
            except Exception as exc:  # keep stopping the rest
                log.warning(
                    "stop step failed", step=getattr(step, "__qualname__", "?"), error=str(exc)
                )

    async def lifetime(self, _app: web.Application) -> AsyncIterator[None]:
        """aiohttp cleanup context: start everything, yield while serving, stop everything
        (also what did start when a later part failed: no orphaned redis-server)."""
        try:
            await self.start()
            yield
        finally:
            await self.stop()


GATEWAY = web.AppKey("gateway", Gateway)


def create_app(
    settings: Settings,
    *,
    handler: EventHandler | None = None,
    role: Role = "all",
    config: BotConfig | None = None,
    clock: Clock = utc_now,
    plugins: Mapping[str, Plugin] | None = None,
) -> web.Application:
    """The gateway application (arguments as for :class:`Gateway`). Run it with
    ``web.run_app`` (``sinchbot serve`` does)."""
    gateway = Gateway(
        settings, handler=handler, role=role, config=config, clock=clock, plugins=plugins
    )
    app = web.Application(
        client_max_size=settings.max_body, middlewares=host_guard(settings, demo=gateway.demo)
    )
    app[GATEWAY] = gateway
    app.add_routes(gateway.routes())
    app.cleanup_ctx.append(gateway.lifetime)
    return app


def describe(gateway: Gateway) -> list[str]:
    """The start-up banner: where everything is and what is (not) protected."""
    e = gateway.endpoints
    s = gateway.settings
    lines = [f"sinchbot gateway on {e.gateway} (role {gateway.role}, {s.partitions} partitions)"]
    lines.append(
        f"  redis:     {'embedded redis-server, data in ' + str(s.data_dir / 'redis') if e.embedded_redis else 'SINCHBOT_REDIS_URL'}"
    )
    if e.sandbox:
        lines.append(
            f"  provider:  sandbox on {e.provider} (no SINCHBOT_API_KEY: zero-configuration demo mode)"
        )
        lines.append(
            f'  handsets:  POST {e.provider}/_sandbox/handsets/{DEMO_HANDSET}/messages {{"content": "hi"}}'
        )
    else:
        lines.append(f"  provider:  {e.provider}")
    if gateway.serves_http:
        lines.append(
            f"  webhooks:  {e.gateway}/webhooks/messages, /webhooks/receipts, /webhooks/callback"
        )
    if gateway.serves_http and not gateway.webhook_auth.configured:
        lines.append(
            "             accepting unauthenticated webhooks (sandbox demo mode)"
            if gateway.demo
            else "             REFUSING webhooks: set SINCHBOT_WEBHOOK_SECRET or SINCHBOT_WEBHOOK_PUBLIC_KEY"
        )
    api_auth = (
        "bearer SINCHBOT_API_TOKEN"
        if s.api_token
        else ("open (demo mode)" if gateway.demo else "DISABLED: set SINCHBOT_API_TOKEN")
    )
    lines.append(
        f"  api:       {e.gateway}/api/ ({api_auth}); OpenAPI at {e.gateway}/api/openapi.json"
    )
    lines.append(f"  health:    {e.gateway}/healthz, {e.gateway}/readyz")
    lines.append(f"  metrics:   {e.gateway}{METRICS_PATH}")
    if gateway.serves_http:
        if e.sandbox:
            lines.append(f"  simulator: {e.gateway}/simulator (a phone: talk to the bot)")
        lines.append(f"  inspector: {e.gateway}/inspector (conversations, timelines, depths)")
    if gateway.demo:
        lines += try_it(gateway)
        lines.append(
            "  go live:   set SINCHBOT_API_KEY, SINCHBOT_API_SECRET, SINCHBOT_WEBHOOK_SECRET,"
            " SINCHBOT_API_TOKEN, SINCHBOT_PUBLIC_URL; then `sinchbot doctor` (README: Going live)"
        )
    if gateway.bot is not None:
        names = [p.name for p in gateway.bot.plugins.loaded]
        lines.append(f"  plugins:   {', '.join(names) if names else 'none'}")
        lines += [f"  LEFT OUT:  {problem}" for problem in gateway.bot.plugins.problems]
    else:
        lines.append(f"  handler:   {type(gateway.handler).__name__}")
    return lines
