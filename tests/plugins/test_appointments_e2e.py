"""The appointments plugin end to end: the real gateway (BotTester) on a real Redis, the
sandbox provider delivering to virtual handsets, the management API and forwarded events.

Each tester runs several handsets (one conversation each) to keep the suite fast.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from aiohttp import web

from bot.storage.redis_server import RedisServer
from bot.testing import BotTester, Phone
from plugins.appointments import plugin

OURS = "+61491570157"
SLOTS = ["Tue 10:00", "Wed 14:30"]


class Subscriber:
    """A forward-event subscriber: collects what the gateway POSTs."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def receive(self, request: web.Request) -> web.Response:
        self.events.append(await request.json())
        return web.Response(status=204)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/events", self.receive)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/events"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    async def wait_for(
        self, event_type: str, appointment: str, timeout: float = 10.0
    ) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            for event in self.events:
                if event["type"] == event_type and event["data"]["id"] == appointment:
                    return event
            if loop.time() >= deadline:
                seen = [(e["type"], e["data"].get("id")) for e in self.events]
                raise AssertionError(f"no {event_type} for {appointment}; got {seen}")
            await asyncio.sleep(0.05)


@pytest.fixture
async def subscriber() -> AsyncIterator[Subscriber]:
    sub = Subscriber()
    await sub.start()
    yield sub
    await sub.stop()


def bot_for(redis: RedisServer | str, **settings: Any) -> BotTester:
    """The kit with the plugin, on a server or a URL (a cluster's)."""
    table = {"from_number": OURS, **settings.pop("plugin", {})}
    return BotTester(
        plugins=[plugin],
        config={"plugin": {"appointments": table}},
        redis_url=redis if isinstance(redis, str) else redis.url,
        our_number=OURS,
        settings=settings,
    )


async def create(
    bot: BotTester, phone: Phone, name: str, starts_in: timedelta, **extra: Any
) -> str:
    starts_at = (bot.clock() + starts_in).isoformat()
    status, body = await bot.api(
        "POST",
        "/api/appointments",
        json={"phone": phone.number, "name": name, "starts_at": starts_at, **extra},
    )
    assert status == 201, body
    assert body["status"] == "scheduled"
    return str(body["id"])


async def show(bot: BotTester, appointment: str) -> dict[str, Any]:
    status, body = await bot.api("GET", f"/api/appointments/{appointment}")
    assert status == 200, body
    return dict(body)


async def status_of(bot: BotTester, appointment: str) -> str:
    return str((await show(bot, appointment))["status"])


# --------------------------------------------------------------------------- the answers


@pytest.mark.cluster
async def test_every_answer_end_to_end(redis_url: str, subscriber: Subscriber) -> None:
    """Y, N, R (free text), unrecognised twice, no reply, a failed delivery: one handset each,
    with the status through the API and the forwarded events."""
    async with bot_for(redis_url, forward_urls=subscriber.url) as bot:
        numbers = ["+61491570156", "+61491570158", "+61491570159", "+61491570160"]
        yes, no, move, unsure = (bot.phone(n) for n in numbers)
        silent, broken = bot.phone("+61491570161"), bot.phone("+61491570162")
        broken.fail_deliveries("failed")
        ids = {}
        for phone, name in [
            (yes, "Sam"),
            (no, "Kim"),
            (move, "Lee"),
            (unsure, "Ana"),
            (silent, "Bo"),
            (broken, "Cy"),
        ]:
            ids[phone.number] = await create(bot, phone, name, timedelta(days=1, hours=1))
        await bot.settle()
        for phone in (yes, no, move, unsure, silent, broken):
            await phone.expect_no_reply()
            assert await status_of(bot, ids[phone.number]) == "scheduled"

        await bot.advance(hours=1)
        for phone in (yes, no, move, unsure, silent):
            reminder = await phone.expect_reply(
                r"^Hi \w+, reminder of your appointment on .*\. "
                r"Reply Y to confirm, N to cancel, R to reschedule\.$"
            )
            assert reminder.metadata["appointment"] == ids[phone.number]
            assert reminder.segments <= 2
            assert await status_of(bot, ids[phone.number]) == "reminded"
        assert broken.received == []

        await yes.send("Y")
        await yes.expect_reply(r"^Thanks Sam, your appointment on .* is confirmed")
        await no.send("n")
        await no.expect_reply(r"^Thanks Kim, .* is cancelled")
        await move.send("R")
        await move.expect_reply(r"What day and time would suit you")
        await move.send("Friday morning")
        await move.expect_reply(r"move to Friday morning")
        await unsure.send("Who is this?")
        await unsure.expect_reply(r"^Sorry, we did not understand")
        await unsure.send("Really, who?")
        await unsure.expect_no_reply()  # left to the fallback (none configured)
        await bot.settle()

        doc = await show(bot, ids[yes.number])
        assert doc["status"] == "confirmed"
        assert [h["status"] for h in doc["history"]] == ["scheduled", "reminded", "confirmed"]
        assert await status_of(bot, ids[no.number]) == "cancelled"
        moved = await show(bot, ids[move.number])
        assert moved["status"] == "reschedule_requested"
        assert moved["reschedule"]["text"] == "Friday morning"
        assert await status_of(bot, ids[unsure.number]) == "reminded"
        assert await status_of(bot, ids[broken.number]) == "undeliverable"

        await bot.advance(hours=4)
        for phone in (unsure, silent):
            await phone.expect_reply(r"^We have not heard back")
        for phone in (yes, no, move, broken):
            await phone.expect_no_reply()
        await bot.advance(hours=4)
        for phone in (yes, no, move, unsure, silent, broken):
            await phone.expect_no_reply()
        assert await status_of(bot, ids[silent.number]) == "no_response"
        assert await status_of(bot, ids[unsure.number]) == "no_response"

        for phone, event_type in [
            (yes, "appointment.confirmed"),
            (no, "appointment.cancelled"),
            (move, "appointment.reschedule_requested"),
            (silent, "appointment.no_response"),
            (broken, "appointment.undeliverable"),
        ]:
            event = await subscriber.wait_for(event_type, ids[phone.number])
            assert event["data"]["phone"] == phone.number
        assert not [e for e in subscriber.events if e["type"] == "appointment.reminded"]

        # The session holds only this plugin's flow, without a state.
        session = await bot.session(unsure)
        assert set(session.flows) <= {"appointments"}
        assert (await bot.flow(unsure, "appointments")).state is None


async def test_r_with_offered_slots(redis_server: RedisServer) -> None:
    async with bot_for(redis_server, plugin={"slots": SLOTS, "remind_before": "2h"}) as bot:
        phone, other = bot.phone("+61491570156"), bot.phone("+61491570158")
        first = await create(bot, phone, "Sam", timedelta(hours=2))
        second = await create(bot, other, "Kim", timedelta(hours=2))
        await phone.expect_reply(r"Reply Y to confirm")  # due at once
        await other.expect_reply(r"Reply Y to confirm")
        await phone.send("R")
        await phone.expect_reply(
            r"^No problem\. Which time suits you instead\? Reply 1 for Tue 10:00, 2 for Wed 14:30\.$"
        )
        await phone.send("2")
        await phone.expect_reply(r"move to Wed 14:30")
        await bot.settle()
        doc = await show(bot, first)
        assert doc["status"] == "reschedule_requested"
        assert doc["reschedule"]["slot"] == "Wed 14:30"

        await other.send("reschedule")
        await other.expect_reply(r"Reply 1 for Tue 10:00")
        await other.send("someday")
        await other.expect_reply(r"^Sorry, please reply with the number of a time")
        await other.send("1")
        await other.expect_reply(r"move to Tue 10:00")
        await bot.settle()
        assert (await show(bot, second))["reschedule"]["slot"] == "Tue 10:00"


async def test_two_pending_appointments_for_one_number(redis_server: RedisServer) -> None:
    async with bot_for(redis_server) as bot:
        phone = bot.phone("+61491570156")
        dentist = await create(bot, phone, "Sam", timedelta(hours=30))
        checkup = await create(bot, phone, "Sam", timedelta(hours=31))
        scan = await create(bot, phone, "Sam", timedelta(hours=32))
        await bot.advance(hours=6)
        first = await phone.expect_reply(r"Reply Y")
        await bot.advance(hours=1)
        second = await phone.expect_reply(r"Reply Y")
        await bot.advance(hours=1)
        third = await phone.expect_reply(r"Reply Y")
        assert [m.metadata["appointment"] for m in (first, second, third)] == [
            dentist,
            checkup,
            scan,
        ]

        await phone.send("N", reply_to=first)
        cancelled = await phone.expect_reply(r"cancelled\. Next: Sam on ")
        assert cancelled.metadata["appointment"] == checkup  # the soonest still waiting
        await phone.send("Y", reply_to=None)  # unlinked: the one asked about last
        await phone.expect_reply(r"confirmed\. See you then! Next: Sam")
        await bot.settle()
        assert await status_of(bot, checkup) == "confirmed"
        assert await status_of(bot, scan) == "reminded"
        await phone.send("Y", reply_to=third)
        await phone.expect_reply(r"confirmed\. See you then!$")  # none left to ask about
        await bot.settle()
        assert await status_of(bot, dentist) == "cancelled"
        assert await status_of(bot, scan) == "confirmed"
        session = await bot.session(phone)
        assert session.timers == {}


async def test_cancel_is_an_opt_out_word_not_an_answer(redis_server: RedisServer) -> None:
    """The compliance handler runs first: CANCEL opts the handset out, and the appointment
    is left as it was (then no nudge reaches the handset)."""
    async with bot_for(redis_server) as bot:
        phone = bot.phone("+61491570156")
        appointment = await create(bot, phone, "Sam", timedelta(hours=20))
        await phone.expect_reply(r"Reply Y to confirm, N to cancel")
        await phone.send("CANCEL")
        await bot.settle()
        phone.skip()  # the opt-out confirmation, if the provider lets it through
        assert await status_of(bot, appointment) == "reminded"
        await bot.advance(hours=4)
        await phone.expect_no_reply()
        doc = await show(bot, appointment)
        assert doc["history"][-1]["note"] == "nudge sent"  # sent, and held back by the sender
        kinds = [entry["kind"] for entry in await bot.timeline(phone)]
        assert "suppressed" in kinds, kinds


async def test_without_from_number_linked_answers_find_the_appointment(
    redis_server: RedisServer,
) -> None:
    """Reminders go from the account's default number, in the shared-pool conversation;
    the handset's reply to one is linked back to it."""
    async with BotTester(plugins=[plugin], redis_url=redis_server.url, our_number=OURS) as bot:
        phone = bot.phone("+61491570156")
        appointment = await create(bot, phone, "Sam", timedelta(hours=3))
        await phone.expect_reply(r"^Hi Sam, reminder")
        await phone.send("Y")
        await phone.expect_reply("confirmed")
        await bot.settle()
        assert await status_of(bot, appointment) == "confirmed"


@pytest.mark.cluster
async def test_the_reminder_timer_survives_a_restart(redis_url: str) -> None:
    async with bot_for(redis_url) as bot:
        phone = bot.phone("+61491570156")
        appointment = await create(bot, phone, "Sam", timedelta(days=2))
        await bot.settle()
        await bot.restart()
        await bot.advance(days=1)
        await phone.expect_reply(r"^Hi Sam, reminder")
        await phone.send("yes")
        await phone.expect_reply("confirmed")
        await bot.settle()
        assert await status_of(bot, appointment) == "confirmed"


# --------------------------------------------------------------------------- the API


async def test_csv_import_keeps_good_rows_and_reports_bad_ones(redis_server: RedisServer) -> None:
    async with bot_for(redis_server) as bot:
        start = bot.clock() + timedelta(days=2)
        csv = (
            "Phone,Name,Starts_At,Remind_Before\n"
            f"+61491570156,Sam Lee,{start.isoformat()},\n"
            f"0491 570 158,Kim,{start.isoformat()},PT47H\n"
            "\n"
            f"12,Bad Phone,{start.isoformat()},\n"
            "+61491570159,No Offset,2030-01-01T10:00:00,\n"
            f"+61491570160,,{start.isoformat()},\n"
            f"+61491570161,Bad Duration,{start.isoformat()},soon\n"
            f"+61491570162,Too,{start.isoformat()},,many\n"
        )
        status, body = await bot.api(
            "POST", "/api/appointments/import", data=csv, headers={"Content-Type": "text/csv"}
        )
        assert status == 200, body
        assert len(body["created"]) == 2
        assert [(e["row"], e["error"].split(":")[0]) for e in body["errors"]] == [
            (5, "phone"),
            (6, "starts_at"),
            (7, "name"),
            (8, "remind_before"),
            (9, "5 columns, the header has 4"),
        ]
        await bot.advance(hours=1, minutes=1)
        await bot.phone("+61491570158").expect_reply(r"^Hi Kim, reminder")
        await bot.phone("+61491570156").expect_no_reply()
        kim = await show(bot, body["created"][1])
        assert kim["phone"] == "+61491570158"
        assert kim["history"][0]["note"] == "via csv import"

        status, listing = await bot.api("GET", "/api/appointments?status=reminded")
        assert status == 200
        assert [d["id"] for d in listing["appointments"]] == [body["created"][1]]
        status, listing = await bot.api("GET", "/api/appointments?phone=0491570156")
        assert [d["name"] for d in listing["appointments"]] == ["Sam Lee"]
        status, listing = await bot.api("GET", "/api/appointments?limit=1")
        assert (len(listing["appointments"]), listing["truncated"]) == (1, True)

        for content, expected in [
            ("name,phone\nx,y\n", (422, "lacks the column starts_at")),
            ("phone,name,starts_at,room\n", (422, "unknown column 'room'")),
            ("", (422, "empty file")),
        ]:
            status, answer = await bot.api(
                "POST",
                "/api/appointments/import",
                data=content,
                headers={"Content-Type": "text/csv"},
            )
            assert (status, expected[1] in answer["error"]) == (expected[0], True), answer
        status, answer = await bot.api("POST", "/api/appointments/import", json={"phone": "x"})
        assert status == 415


async def test_api_errors_are_short_4xx(redis_server: RedisServer) -> None:
    async with bot_for(redis_server) as bot:
        later = (bot.clock() + timedelta(days=1)).isoformat()
        cases: list[tuple[Any, int, str]] = [
            ({"phone": "+61491570156", "name": "Sam"}, 422, "starts_at: required"),
            ({"phone": "abc", "name": "Sam", "starts_at": later}, 422, "phone: 'abc' is not"),
            ({"phone": "+61491570156", "starts_at": later}, 422, "name: required"),
            (
                {"phone": "+61491570156", "name": "Sam", "starts_at": "2030-01-01T10:00:00"},
                422,
                "no UTC offset",
            ),
            (
                {"phone": "+61491570156", "name": "Sam", "starts_at": "2001-01-01T10:00:00Z"},
                422,
                "in the past",
            ),
            (
                {"phone": "+61491570156", "name": "Sam", "starts_at": later, "remind_before": "1y"},
                422,
                "remind_before:",
            ),
            (
                {"phone": "+61491570156", "name": "Sam", "starts_at": later, "x": 1},
                422,
                "x: unknown field",
            ),
            (["not", "an", "object"], 422, "JSON object"),
        ]
        for body, expected_status, message in cases:
            status, answer = await bot.api("POST", "/api/appointments", json=body)
            assert status == expected_status, (body, answer)
            assert message in answer["error"], (body, answer)
        assert await bot.redis.hlen("sb:appointments") == 0  # nothing written

        for path in ("/api/appointments/ap_00000000000000000000", "/api/appointments/nope"):
            status, answer = await bot.api("GET", path)
            assert (status, answer) == (404, {"error": "no such appointment"})
        status, answer = await bot.api("GET", "/api/appointments?status=maybe")
        assert status == 422 and "status: must be one of" in answer["error"]
        status, answer = await bot.api("GET", "/api/appointments?limit=0")
        assert status == 422
        status, answer = await bot.api("GET", "/api/appointments?phone=xyz")
        assert status == 422

        assert bot._http is not None
        async with bot._http.get(f"{bot.url}/api/appointments") as response:
            assert response.status == 401  # the API's bearer token guards the plugin's routes


@pytest.mark.cluster
async def test_cancel_through_the_api(redis_url: str, subscriber: Subscriber) -> None:
    async with bot_for(redis_url, forward_urls=subscriber.url) as bot:
        phone = bot.phone("+61491570156")
        appointment = await create(bot, phone, "Sam", timedelta(days=2))
        status, answer = await bot.api("POST", f"/api/appointments/{appointment}/cancel")
        assert (status, answer["cancel"]) == (202, "requested")
        await bot.settle()
        doc = await show(bot, appointment)
        assert (doc["status"], doc["history"][-1]["note"]) == ("cancelled", "cancelled via api")
        await subscriber.wait_for("appointment.cancelled", appointment)
        status, answer = await bot.api("POST", f"/api/appointments/{appointment}/cancel")
        assert status == 409
        await bot.advance(days=2)
        await phone.expect_no_reply()
