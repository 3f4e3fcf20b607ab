"""Opt-out compliance: the ``compliance`` router over real EventContexts and Redis (as the
inbox consumer runs it: one batch, sessions written with their version check), the sender
holding back what a suppressed handset would get, and the whole gateway in-process against
the sandbox provider.

By default the provider confirms an opt-out (it blacklists the number, so ours would be
refused); ``OWN`` is the configuration of an account that handles opt-outs itself, where
the gateway sends the one confirmation. tests/handlers/test_stop_confirmation.py reads what
the handset receives in both."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import quote

import aiohttp
import pydantic
import pytest
from aiohttp import web
from redis.asyncio import Redis

from bot.app.gateway import GATEWAY, Gateway, create_app
from bot.conversation import (
    Context,
    Engine,
    Keyword,
    Router,
    State,
    States,
)
from bot.conversation.testing_backend import MemoryBackend, inbound
from bot.core.config import Settings
from bot.inbox.engine import GatewayEngineHandler
from bot.inbox.handling import EventContext, GatewayLimits, Session
from bot.outbox import suppression
from bot.receipts import records, timeline
from bot.sandbox import Sandbox, SandboxConfig
from bot.sender.loop import Sender
from bot.sender.throttle import Throttle
from bot.sinch.client import SinchClient
from bot.storage.events import InboxEvent, OutboundRequest
from bot.storage.keys import PartitionKeys, alive, conversation_key, handset_of, partition_of
from bot.storage.redis_server import RedisServer, free_port
from bot.storage.store import Batch, Store
from bot.streams.leases import WorkerRegistry
from handlers import compliance, keywords
from handlers.compliance import ComplianceSettings
from handlers.keywords import KeywordSettings
from tests.gateway.procutil import eventually, mo_payload

P = 4
LIMITS = GatewayLimits(timeline_max=100, ttl_ms=3_600_000)
OURS, OTHER = "+61491570157", "+61491570159"
H = "+61491570156"
SETTINGS = ComplianceSettings()
OWN = ComplianceSettings(provider_confirms=False)
STOP_REPLY = SETTINGS.stop_reply
START_REPLY = SETTINGS.start_reply
HELP = SETTINGS.help_text


def handset(i: int) -> str:
    return f"+6149157{i:04d}"


class Booking(States, name="compliance-test.booking"):
    asked = State()


def plugin_router() -> Router:
    """A plugin that asks a yes/no question and answers ``ping``."""
    router = Router("plugin")

    @router.message(Keyword("book"), state=None)
    async def book(ctx: Context) -> None:
        ctx.reply("Tue 10:00? Reply YES to take it.")
        ctx.data["offered"] = "tue-10"
        ctx.goto(Booking.asked)

    @router.message(Keyword("Y", "YES"))
    async def yes(ctx: Context) -> None:
        ctx.reply("plugin got yes")

    @router.message(Keyword("ping"))
    async def ping(ctx: Context) -> None:
        ctx.reply("pong")

    return router


def engine(
    redis: Redis | None = None,
    provider: SinchClient | None = None,
    settings: ComplianceSettings = SETTINGS,
) -> Engine:
    """compliance → plugin → keywords (with a fallback), as ``sinchbot serve`` orders them."""
    assert redis is not None
    return Engine(
        compliance.build_router(settings, provider, redis=redis),
        plugin_router(),
        keywords.build_router(KeywordSettings(fallback="fallback: {text}")),
    )


def message(text: str, *, sender: str = H, to: str = OURS, kind: str = "message") -> InboxEvent:
    event = inbound(text, handset=sender, to=to, kind=kind)  # type: ignore[arg-type]
    return InboxEvent(conversation_key(to, sender), event)


def keys_of(number: str) -> PartitionKeys:
    return PartitionKeys(partition_of(number, P))


class Inbox:
    """Handles events as the inbox consumer does: one batch, a session cache, one commit."""

    def __init__(self, redis: Redis, engine: Engine) -> None:
        self.redis = redis
        self.store = Store(redis)
        self.handler = GatewayEngineHandler(engine)

    async def batch(self, *events: InboxEvent) -> list[OutboundRequest]:
        """Handle ``events`` in one batch (one partition) and commit; the replies queued."""
        batch = Batch()
        sessions: dict[str, Session] = {}
        replies: list[OutboundRequest] = []
        for event in events:
            keys = keys_of(handset_of(event.conversation))
            session = sessions.get(event.conversation)
            if session is None:
                raw = await self.redis.hgetall(keys.session(event.conversation))
                session = sessions[event.conversation] = Session.from_hash(event.conversation, raw)
            ctx = EventContext(event, keys, batch, session, LIMITS)
            await self.handler.handle(ctx)
            replies.extend(ctx.replies)
        for conversation, session in sessions.items():
            if session.dirty:
                keys = keys_of(handset_of(conversation))
                batch.write_versioned(
                    keys.session(conversation), session.version, session.to_hash()
                )
        await batch.commit(self.store)
        return replies

    async def send(self, text: str, **options: Any) -> list[tuple[str, str]]:
        """One message in its own batch; the replies as ``(text, origin)``."""
        return [(r.text, r.origin) for r in await self.batch(message(text, **options))]

    async def entry(self, number: str = H) -> suppression.OptOut | None:
        return await suppression.lookup(self.redis, keys_of(number), number)

    async def timeline(self, number: str = H, ours: str = OURS) -> list[dict[str, Any]]:
        return await timeline.read(self.redis, keys_of(number), conversation_key(ours, number))


@pytest.fixture
def inbox(redis: Redis) -> Inbox:
    return Inbox(redis, engine(redis))


# --------------------------------------------------------------------------- STOP


@pytest.mark.parametrize(
    ("text", "word"),
    [
        ("STOP", "STOP"),
        ("stop!", "STOP"),
        (" Stop ", "STOP"),
        ("unsubscribe.", "UNSUBSCRIBE"),
        ("Cancel", "CANCEL"),
        ("opt-out", None),
    ],
)
@pytest.mark.parametrize("settings", [SETTINGS, OWN], ids=["provider-confirms", "own"])
async def test_a_stop_word_suppresses_and_is_confirmed_once(
    redis: Redis, settings: ComplianceSettings, text: str, word: str | None
) -> None:
    inbox = Inbox(redis, engine(redis, settings=settings))
    replies = await inbox.send(text)
    entry = await inbox.entry()
    if word is None:  # not a stop word: the plugins' fallback answers
        assert entry is None
        assert replies == [(f"fallback: {text}", "reply")]
        return
    assert entry is not None
    assert (entry.via, entry.word, entry.confirmed) == ("keyword", word, True)
    assert entry.conversation == conversation_key(OURS, H)
    timeline = await inbox.timeline()
    if settings.provider_confirms:  # the provider confirms: we send nothing
        assert replies == []
        assert [e["kind"] for e in timeline] == ["inbound", "optout"]
        confirmed_by = "provider"
    else:
        assert replies == [(STOP_REPLY, "compliance")]
        assert [e["kind"] for e in timeline] == ["inbound", "optout", "outbound"]
        confirmed_by = "gateway"
    assert entry.confirmed_by == confirmed_by
    assert timeline[1]["data"] == {
        "via": "keyword",
        "word": word,
        "confirmed": True,
        "confirmed_by": confirmed_by,
    }


async def test_a_repeated_stop_is_not_confirmed_again(redis: Redis) -> None:
    inbox = Inbox(redis, engine(redis, settings=OWN))
    assert await inbox.send("STOP") == [(STOP_REPLY, "compliance")]
    assert await inbox.send("stop") == []
    # Twice in one inbox batch: the second sees the first's pending write.
    other = handset(1)
    replies = await inbox.batch(message("QUIT", sender=other), message("END", sender=other))
    assert [r.text for r in replies] == [STOP_REPLY]
    entry = await inbox.entry(other)
    assert entry is not None and entry.word == "END" and entry.confirmed
    assert entry.confirmed_by == "gateway"
    audit = [e["data"] for e in await inbox.timeline() if e["kind"] == "optout"]
    assert len(audit) == 2  # every STOP is audited
    assert all(a["confirmed_by"] == "gateway" for a in audit)


async def test_the_providers_notification_suppresses_without_a_confirmation(
    redis: Redis,
) -> None:
    inbox = Inbox(redis, engine(redis, settings=OWN))
    assert await inbox.send("STOP", kind="opt_out") == []
    entry = await inbox.entry()
    assert entry is not None and (entry.via, entry.word, entry.confirmed) == (
        "provider",
        "STOP",
        False,
    )
    # The STOP message it came with is still confirmed, once.
    assert await inbox.send("STOP") == [(STOP_REPLY, "compliance")]
    assert await inbox.send("STOP", kind="opt_out") == []
    entry = await inbox.entry()
    assert entry is not None and entry.via == "provider" and entry.confirmed
    assert entry.confirmed_by == "gateway"
    assert await inbox.send("STOP") == []

    # Both in one batch, in either order: one confirmation.
    for i, order in enumerate((("opt_out", "message"), ("message", "opt_out"))):
        number = handset(10 + i)
        replies = await inbox.batch(*(message("STOP", sender=number, kind=k) for k in order))
        assert [r.text for r in replies] == [STOP_REPLY]


async def test_when_the_provider_confirms_its_notification_and_the_stop_send_nothing(
    inbox: Inbox,
) -> None:
    assert await inbox.send("STOP", kind="opt_out") == []
    entry = await inbox.entry()
    assert entry is not None
    assert (entry.via, entry.confirmed, entry.confirmed_by) == ("provider", True, "provider")
    assert await inbox.send("Stop") == []
    entry = await inbox.entry()
    assert entry is not None and entry.via == "keyword" and entry.confirmed_by == "provider"
    for i, order in enumerate((("opt_out", "message"), ("message", "opt_out"))):
        number = handset(10 + i)
        assert await inbox.batch(*(message("STOP", sender=number, kind=k) for k in order)) == []
        entry = await inbox.entry(number)
        assert entry is not None and entry.confirmed_by == "provider"


async def test_an_opt_out_confirmed_before_confirmed_by_was_recorded_stays_ours(
    redis: Redis,
) -> None:
    keys = keys_of(H)
    await redis.hset(
        keys.optout,
        H,
        '{"at":"2026-01-01T00:00:00+00:00","via":"keyword",'
        '"word":"STOP","conversation":null,"confirmed":true}',
    )
    inbox = Inbox(redis, engine(redis))
    assert await inbox.send("STOP") == []
    entry = await inbox.entry()
    assert entry is not None and (entry.confirmed, entry.confirmed_by) == (True, "gateway")


async def test_stop_leaves_a_flow_in_progress_as_it_is(inbox: Inbox, redis: Redis) -> None:
    assert await inbox.send("book") == [("Tue 10:00? Reply YES to take it.", "reply")]
    session_key = keys_of(H).session(conversation_key(OURS, H))
    before = await redis.hgetall(session_key)
    assert await inbox.send("STOP") == []  # the provider confirms
    assert await redis.hgetall(session_key) == before  # not even re-written
    session = Session.from_hash(conversation_key(OURS, H), before)
    flow = session.flows["plugin"]
    assert (flow["state"], flow["data"]) == (Booking.asked.name, {"offered": "tue-10"})
    # The flow goes on; the sender (not the handler) holds back what it sends.
    assert await inbox.send("Y") == [("plugin got yes", "reply")]


# --------------------------------------------------------------------------- START, YES


async def test_yes_and_start_from_a_number_that_is_not_suppressed_reach_the_plugins(
    inbox: Inbox,
) -> None:
    assert await inbox.send("YES") == [("plugin got yes", "reply")]
    assert await inbox.send("start") == [("fallback: start", "reply")]
    kinds = {e["kind"] for e in await inbox.timeline()}
    assert not kinds & {"optin", "optout"}


async def test_a_start_word_opts_a_suppressed_number_back_in(
    redis: Redis, client: SinchClient, sandbox: Sandbox
) -> None:
    inbox = Inbox(redis, engine(redis, provider=client))
    await client.blacklist_add([H])  # what the provider does on STOP
    assert await inbox.send("STOP") == []  # the provider confirms
    assert await inbox.send("Start!") == [(START_REPLY, "compliance")]
    assert await inbox.entry() is None
    assert H not in sandbox.state.blacklist
    kinds = [e["kind"] for e in await inbox.timeline()]
    assert kinds == ["inbound", "optout", "inbound", "optin", "outbound"]
    assert (await inbox.timeline())[3]["data"] == {"via": "keyword", "word": "START"}
    # Opted in: YES is the plugin's answer again.
    assert await inbox.send("yes") == [("plugin got yes", "reply")]

    # YES opts in too while suppressed; a provider that refuses the removal (the number is
    # not on its blacklist: 404) does not stop the opt-in.
    other = handset(2)
    assert await inbox.send("STOP", sender=other) == []
    assert await inbox.send("Yes.", sender=other) == [(START_REPLY, "compliance")]
    assert await inbox.entry(other) is None


async def test_suppression_is_per_handset_across_our_numbers(redis: Redis) -> None:
    inbox = Inbox(redis, engine(redis, settings=OWN))
    assert await inbox.send("STOP", to=OURS) == [(STOP_REPLY, "compliance")]
    assert await inbox.send("HELP", to=OTHER) == [(HELP, "compliance")]
    assert await inbox.send("stop", to=OTHER) == []  # already confirmed (through OURS)
    assert await inbox.send("YES", to=OTHER) == [(START_REPLY, "compliance")]
    assert await inbox.entry() is None
    assert [e["kind"] for e in await inbox.timeline(ours=OTHER)][-2:] == ["optin", "outbound"]


async def test_stop_and_start_in_one_batch_see_each_other(redis: Redis) -> None:
    inbox = Inbox(redis, engine(redis, settings=OWN))
    replies = await inbox.batch(message("STOP"), message("START"), message("STOP"))
    assert [r.text for r in replies] == [STOP_REPLY, START_REPLY, STOP_REPLY]
    entry = await inbox.entry()
    assert entry is not None and entry.confirmed


# --------------------------------------------------------------------------- HELP


async def test_help_is_answered_also_while_suppressed_where_the_account_handles_opt_outs(
    redis: Redis,
) -> None:
    inbox = Inbox(redis, engine(redis, settings=OWN))
    assert await inbox.send("help") == [(HELP, "compliance")]
    await inbox.send("STOP")
    assert await inbox.send("Info?") == [(HELP, "compliance")]
    assert await inbox.entry() is not None  # HELP does not opt in


async def test_help_while_the_provider_blacklists_the_number_is_noted_not_answered(
    inbox: Inbox,
) -> None:
    assert await inbox.send("help") == [(HELP, "compliance")]
    await inbox.send("STOP")
    assert await inbox.send("Info?") == []  # it would be refused (302): nothing is sent
    noted = [e["data"] for e in await inbox.timeline() if e["kind"] == "help"]
    assert noted == [{"answered": False, "why": compliance.HELP_BLOCKED}]
    assert await inbox.entry() is not None  # HELP does not opt in


# --------------------------------------------------------------------------- settings


async def test_settings_extend_replace_and_check_the_keywords(inbox: Inbox, redis: Redis) -> None:
    custom = ComplianceSettings(
        provider_confirms=False,
        extra_stop_words=["ARRET", "Désabonner"],
        start_words=["UNSTOP"],
        help_words=[],
        stop_reply=None,
        start_reply="Welcome back.",
    )
    assert "STOP" in custom.stops and "ARRET" in custom.stops
    inbox = Inbox(redis, engine(redis, settings=custom))
    assert await inbox.send("arrêt") == [("fallback: arrêt", "reply")]  # no accent folding
    assert await inbox.send("Arret") == []  # suppressed, no confirmation configured
    entry = await inbox.entry()
    assert entry is not None and entry.word == "ARRET" and not entry.confirmed
    assert entry.confirmed_by is None
    assert await inbox.send("désabonner") == []
    assert await inbox.send("help") == [("fallback: help", "reply")]
    assert await inbox.send("start") == [("fallback: start", "reply")]  # not a start word here
    assert await inbox.send("UNSTOP") == [("Welcome back.", "compliance")]

    off = Inbox(redis, engine(redis, settings=ComplianceSettings(enabled=False)))
    assert await off.send("STOP", sender=handset(3)) == [("fallback: STOP", "reply")]
    assert await off.entry(handset(3)) is None

    for bad in (
        {"stop_words": ["STOP"], "start_words": ["stop!"]},
        {"extra_help_words": ["..."]},
        {"stop_words": [], "extra_stop_words": []},
        {"stop_reply": "  "},
        {"stop_word": ["STOP"]},
        {"provider_confirms": "sometimes"},
    ):
        with pytest.raises(pydantic.ValidationError):
            ComplianceSettings.model_validate(bad)


async def test_the_router_needs_the_gateway(redis: Redis) -> None:
    with pytest.raises(TypeError, match="runs in the gateway"):
        await engine(redis).dispatch(inbound("STOP"), MemoryBackend())


# --------------------------------------------------------------------------- with the sender


async def test_a_reply_queued_before_the_stop_is_held_back_by_the_sender(
    redis: Redis, sandbox: Sandbox
) -> None:
    inbox = Inbox(redis, engine(redis, settings=OWN))  # our confirmation goes out
    [pong] = await inbox.batch(message("ping"))
    [confirmation] = await inbox.batch(message("STOP"))
    client = sandbox.client()
    registry = WorkerRegistry(redis, worker_id="w1", partitions=P, lease_ttl=5.0)
    sender = Sender(
        inbox.store,
        client,
        Throttle(redis, "test", calls=50, period=1.0),
        registry=registry,
        ttl_ms=LIMITS.ttl_ms,
        timeline_max=LIMITS.timeline_max,
        max_deliveries=3,
        block=0.05,
    )
    await redis.set(alive("w1"), "1", px=60_000)
    await registry.start()
    await sender.start()
    try:

        async def recorded() -> bool:
            found = await records.read(redis, keys_of(H), confirmation.gw_id)
            return found is not None and found["status"] == "sent"

        await eventually(recorded, timeout=10, what="the confirmation sent")
    finally:
        await sender.stop()
        await registry.stop()
        await client.aclose()
    found = await records.read(redis, keys_of(H), pong.gw_id)
    assert found is not None and found["status"] == suppression.SUPPRESSED
    assert [m.request.content for m in sandbox.messages(H)] == [STOP_REPLY]
    kinds = [e["kind"] for e in await inbox.timeline()]
    assert kinds == [
        "inbound",
        "outbound",
        "inbound",
        "optout",
        "outbound",
        "suppressed",
        "sent",
    ]


# --------------------------------------------------------------------------- the whole gateway

SECRET, TOKEN = "hook-secret", "api-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@asynccontextmanager
async def serving(app: web.Application, port: int) -> AsyncIterator[Gateway]:
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", port).start()
        yield app[GATEWAY]
    finally:
        await runner.cleanup()


async def test_the_gateway_honours_opt_outs_end_to_end(
    redis: Redis, redis_server: RedisServer, no_ambient_config: None
) -> None:
    port = free_port()
    gw = f"http://127.0.0.1:{port}"
    config = SandboxConfig(
        port=0,
        step_delay=0.01,
        time_scale=0.01,
        webhook_url=f"{gw}/webhooks/messages?token={SECRET}",
        receipt_url=f"{gw}/webhooks/receipts?token={SECRET}",
    )
    async with Sandbox(config) as sb, sb.client() as provider:
        values = Settings(
            _env_file=None,  # type: ignore[call-arg]
            partitions=P,
            lease_ttl=2.0,
            redis_url=redis_server.url,
            base_url=sb.url,
            api_key=sb.api_key,
            api_secret=sb.api_secret,
            webhook_secret=SECRET,
            api_token=TOKEN,
            port=port,
            throttle_calls=1000,
            throttle_period=1.0,
        )
        app_holder: list[web.Application] = []
        router = compliance.build_router(
            SETTINGS, provider, redis=lambda: app_holder[0][GATEWAY].redis
        )
        handler = GatewayEngineHandler(
            Engine(
                router,
                plugin_router(),
                keywords.build_router(KeywordSettings(fallback="fallback: {text}")),
            )
        )
        app = create_app(values, handler=handler)
        app_holder.append(app)
        phone = sb.handset(H)
        key = conversation_key(OURS, H)
        async with (
            serving(app, port),
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as http,
        ):

            async def view() -> dict[str, Any]:
                url = f"{gw}/api/conversations/{quote(key, safe='')}"
                async with http.get(url, headers=AUTH) as response:
                    assert response.status == 200
                    return dict(await response.json())

            async def audited(kind: str, count: int) -> bool:
                entries = (await view())["timeline"]
                return sum(1 for e in entries if e["kind"] == kind) >= count

            async def api_send(to: str, text: str) -> str:
                body = {"to": to, "content": text, "from": OURS}
                async with http.post(f"{gw}/api/messages", json=body, headers=AUTH) as response:
                    assert response.status == 202
                    return str((await response.json())["messages"][0]["id"])

            async def status_is(gw_id: str, wanted: str) -> bool:
                url = f"{gw}/api/messages/{gw_id}?provider=0"
                async with http.get(url, headers=AUTH) as response:
                    body = await response.json()
                    return response.status == 200 and body["record"]["status"] == wanted

            def provider_got(text: str) -> int:
                return sum(1 for m in sb.messages(H) if m.request.content == text)

            # Not suppressed: YES is the plugin's.
            await phone.send("YES")
            await eventually(lambda: len(phone.received) == 1, what="the plugin's answer")
            assert phone.received[0]["content"] == "plugin got yes"

            # STOP: the sandbox blacklists the handset, confirms the opt-out itself and
            # pushes the message and its opt-out notification; the gateway sends no
            # confirmation of its own (the provider would refuse it).
            await phone.send("STOP")
            await eventually(lambda: audited("optout", 2), what="both opt-outs handled")

            def confirmations() -> list[str]:
                return [
                    m["origin"] for m in phone.received if m["content"] == sb.config.opt_out_reply
                ]

            assert confirmations() == ["provider"]

            # Neither an API send nor a handler's reply reaches the provider now.
            held = await api_send(H, "Our spring sale starts today")
            await eventually(lambda: status_is(held, "suppressed"), what="the API send held")
            await phone.send("ping")
            await eventually(lambda: audited("suppressed", 2), what="the reply held")
            current = await view()
            pong = [
                e["data"]["gw_id"]
                for e in current["timeline"]
                if e["kind"] == "outbound" and e["data"]["text"] == "pong"
            ]
            assert len(pong) == 1 and current["messages"][pong[0]]["status"] == "suppressed"
            assert provider_got("pong") == 0
            assert provider_got("Our spring sale starts today") == 0

            # HELP while blacklisted: not sent (the provider would refuse it), noted on the
            # timeline; a repeated STOP is not confirmed again.
            await phone.send("HELP")
            await eventually(lambda: audited("help", 1), what="the unanswered HELP noted")
            assert provider_got(HELP) == 0
            await phone.send(" Stop ")
            await eventually(lambda: audited("optout", 4), what="the repeated STOP handled")
            await sb.wait_idle()

            # START: off the provider's blacklist, confirmed, and sends flow again.
            await phone.send("START")
            await eventually(
                lambda: any(m["content"] == START_REPLY for m in phone.received),
                what="the opt-in confirmation at the handset",
            )
            assert H not in sb.state.blacklist
            welcome = await api_send(H, "Welcome back")
            await eventually(lambda: status_is(welcome, "delivered"), what="a delivered send")
            assert provider_got(STOP_REPLY) == 0 and confirmations() == ["provider"]
            kinds = [e["kind"] for e in (await view())["timeline"]]
            assert kinds.count("optout") == 4 and kinds.count("optin") == 1

            # The provider's notification alone: suppressed, no confirmation.
            other = handset(4)
            notice = {
                **mo_payload(other, "STOP"),
                "notification_id": uuid.uuid4().hex,
            }
            del notice["reply_id"]
            async with http.post(
                f"{gw}/webhooks/messages", json=notice, headers={"X-Webhook-Secret": SECRET}
            ) as response:
                assert response.status == 200

            async def suppressed() -> bool:
                return await suppression.is_suppressed(redis, P, other)

            await eventually(suppressed, what="the notified opt-out")
            held = await api_send(other, "anyone there?")
            await eventually(lambda: status_is(held, "suppressed"), what="the send held")
            assert sb.messages(other) == []
