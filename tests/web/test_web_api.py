"""The web pages' JSON endpoints over real HTTP, against a real gateway, Redis and sandbox.

The simulator drives the demo's in-process sandbox: a handset's message reaches the bot, the
reply comes back with its receipts, segments and encoding; RCS choices are tapped; a
handset without RCS gets the SMS fallback; MMS media are listed; bad input is a 4xx that
sends nothing. Outside the demo the simulator does not exist. The inspector shows
conversations, state, data, pending timers, opt-outs and queue depths, and is closed
exactly as the management API is: open in the demo without a token, the token otherwise.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from redis.asyncio import Redis

from bot.storage.keys import DLQ, conversation_key
from bot.storage.redis_server import RedisServer
from bot.web.routes import STATIC_DIR
from tests.gateway.procutil import eventually
from tests.web.demo import AUTH, HANDSET, KEY, OURS, TOKEN, Demo, demo_gateway, production


@pytest.fixture(autouse=True)
def _no_ambient_config(no_ambient_config: None) -> None:
    """Every test here runs without ambient settings (see tests/conftest.py)."""


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session:
        yield session


@pytest.fixture
async def demo(redis: Redis, redis_server: RedisServer, tmp_path: Path) -> AsyncIterator[Demo]:
    async with demo_gateway(redis_server.url, tmp_path / "data") as running:
        yield running


async def call(
    http: aiohttp.ClientSession, method: str, url: str, **kwargs: Any
) -> tuple[int, Any]:
    async with http.request(method, url, **kwargs) as response:
        try:
            return response.status, await response.json(content_type=None)
        except ValueError:
            return response.status, await response.text()


def handset_url(demo: Demo, number: str = HANDSET, suffix: str = "") -> str:
    return f"{demo.url}/simulator/api/handsets/{quote(number, safe='')}{suffix}"


async def send(http: aiohttp.ClientSession, demo: Demo, **body: Any) -> dict[str, Any]:
    status, answer = await call(http, "POST", handset_url(demo, suffix="/messages"), json=body)
    assert status == 201, answer
    return dict(answer)


async def view_when(
    http: aiohttp.ClientSession, demo: Demo, check: Callable[[dict[str, Any]], bool], what: str
) -> dict[str, Any]:
    """The handset's view, once ``check`` holds for it."""
    seen: dict[str, Any] = {}

    async def holds() -> bool:
        status, body = await call(http, "GET", handset_url(demo))
        assert status == 200, body
        seen.update(body)
        return check(body)

    await eventually(holds, timeout=10, what=what)
    return seen


def received(view: dict[str, Any]) -> list[dict[str, Any]]:
    return [m for m in view["messages"] if m["direction"] == "received"]


def delivered(text: str) -> Callable[[dict[str, Any]], bool]:
    return lambda view: any(
        m["text"] == text and m["status"] == "delivered" for m in received(view)
    )


async def conversation(
    http: aiohttp.ClientSession, base: str, key: str = KEY, **kwargs: Any
) -> dict[str, Any]:
    status, body = await call(
        http, "GET", f"{base}/inspector/api/conversations/{quote(key, safe='')}", **kwargs
    )
    assert status == 200, body
    return dict(body)


# ---------------------------------------------------------------------- the simulator


async def test_a_handset_message_gets_its_reply_with_receipts_segments_and_encoding(
    demo: Demo, http: aiohttp.ClientSession
) -> None:
    result = await send(http, demo, content="héllo 😀")
    assert (result["source_number"], result["destination_number"]) == (HANDSET, OURS)
    reply = "Thanks, we got your message: héllo 😀"
    view = await view_when(http, demo, delivered(reply), "the delivered reply")

    sent, answer = view["messages"]
    assert sent["direction"] == "sent"
    assert (sent["text"], sent["format"], sent["peer"]) == ("héllo 😀", "SMS", OURS)
    assert (sent["segments"], sent["encoding"]) == (1, "UCS-2")
    assert answer["direction"] == "received"
    assert (answer["text"], answer["format"], answer["peer"]) == (reply, "SMS", OURS)
    assert (answer["segments"], answer["encoding"]) == (1, "UCS-2")
    assert answer["final"] and answer["status_code"] == 220
    assert [(h["status"], h["code"]) for h in answer["history"]] == [
        ("enroute", 101),
        ("submitted", 200),
        ("delivered", 220),
    ]
    assert answer["metadata"]["gw_conv"] == KEY
    assert view["number"] == HANDSET and view["rcs"] is True
    assert view["conversations"] == [KEY]

    await send(http, demo, content="a" * 200, to=OURS)
    view = await view_when(
        http,
        demo,
        delivered("Thanks, we got your message: " + "a" * 100),
        "the reply to the long message",
    )
    long = [m for m in view["messages"] if m["direction"] == "sent"][-1]
    assert (long["segments"], long["encoding"]) == (2, "GSM-7")

    status, info = await call(http, "GET", f"{demo.url}/simulator/api/info")
    assert status == 200
    assert info["numbers"] == [OURS] and info["default_number"] == OURS
    assert [(h["number"], h["sent"], h["received"]) for h in info["handsets"]] == [(HANDSET, 2, 2)]
    # A national number means the same handset.
    status, same = await call(http, "GET", handset_url(demo, "0491570156"))
    assert status == 200 and same["number"] == HANDSET


async def test_rcs_choices_are_tapped_and_the_inspector_follows_state_data_and_timers(
    demo: Demo, http: aiohttp.ClientSession
) -> None:
    await send(http, demo, content="colour")
    view = await view_when(http, demo, delivered("Pick one"), "the RCS question")
    [question] = received(view)
    assert question["format"] == "RCS"
    choices = question["rcs"]["choice_message"]["choices"]
    assert [(c["text_message"]["text"], c["postback_data"]) for c in choices] == [
        ("Red", "Red"),
        ("Blue", "Blue"),
    ]
    before = await conversation(http, demo.url)
    [(plugin, flow)] = before["flows"].items()
    assert flow["state"] == "webtest.picking:choosing"
    assert before["state"] == f"{plugin}: webtest.picking:choosing"
    [timer] = before["timers"]
    assert timer["ref"]["kind"] == "timeout" and timer["due"] > before["last_activity"]
    assert before["optout"] is None and before["handset"] == HANDSET

    await send(
        http,
        demo,
        content="Blue",
        choice={"message_id": question["message_id"], "postback_data": "Blue"},
    )
    view = await view_when(http, demo, delivered("You picked Blue"), "the answer to the tap")
    tap = [m for m in view["messages"] if m["direction"] == "sent"][-1]
    assert (tap["choice"], tap["format"], tap["message_id"]) == (
        "Blue",
        "RCS",
        question["message_id"],
    )
    after = await conversation(http, demo.url)
    assert after["flows"][plugin] == {"state": "webtest.picking:chosen", "data": {"colour": "Blue"}}
    assert after["data"] == {plugin: {"colour": "Blue"}}
    assert after["timers"] == []
    kinds = [entry["kind"] for entry in after["timeline"]]
    assert {"inbound", "outbound", "sent", "receipt", "state"} <= set(kinds)


async def test_a_handset_without_rcs_gets_the_fallback_and_mms_media_are_listed(
    demo: Demo, http: aiohttp.ClientSession
) -> None:
    status, summary = await call(http, "PUT", handset_url(demo), json={"rcs": False})
    assert status == 200 and summary["rcs"] is False
    await send(http, demo, content="colour")
    view = await view_when(http, demo, delivered("Reply RED or BLUE"), "the SMS fallback")
    assert view["rcs"] is False
    [fallback] = received(view)
    assert (fallback["format"], fallback["rcs"]) == ("SMS", None)

    await send(http, demo, content="pic")
    view = await view_when(http, demo, delivered("Here is a picture"), "the MMS")
    mms = received(view)[-1]
    assert mms["format"] == "MMS"
    [image] = mms["media"]
    assert image == f"{demo.url}/web/static/favicon.svg"
    async with http.get(image) as response:
        assert response.status == 200
        assert response.content_type == "image/svg+xml"


async def test_bad_simulator_input_is_a_clear_4xx_and_sends_nothing(
    demo: Demo, http: aiohttp.ClientSession
) -> None:
    messages = handset_url(demo, suffix="/messages")
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"json": {}}, 422, "content, media or a choice"),
        ({"json": {"content": "x", "to": "+61400000000"}}, 422, "to: must be one of our"),
        ({"json": {"content": "x", "reply_to": "no-such-id"}}, 404, "reply_to"),
        ({"json": {"content": "x", "colour": "red"}}, 422, "unknown field(s): colour"),
        ({"json": {"choice": {"postback_data": ""}}}, 422, "postback_data"),
        ({"json": ["x"]}, 422, "JSON object"),
        ({"data": "{", "headers": {"Content-Type": "application/json"}}, 400, "invalid JSON"),
        ({"data": "content=x"}, 415, "application/json"),
    ]
    for kwargs, expected, fragment in cases:
        status, body = await call(http, "POST", messages, **kwargs)
        assert status == expected, (kwargs, body)
        assert fragment in body["error"], (kwargs, body)
    status, body = await call(http, "POST", handset_url(demo, "12ab", "/messages"), json={})
    assert status == 422 and "not a valid phone number" in body["error"]
    status, body = await call(http, "PUT", handset_url(demo), json={"rcs": "yes"})
    assert status == 422 and "rcs" in body["error"]
    assert demo.gateway.sandbox is not None
    assert demo.gateway.sandbox.state.stats.messages["inbound"] == 0
    # Looking at a handset does not create it.
    status, body = await call(http, "GET", handset_url(demo, "+61491570999"))
    assert status == 200 and body["messages"] == []
    assert "+61491570999" not in demo.gateway.sandbox.state.handsets


async def test_the_pages_and_their_assets_are_served_from_the_package(
    demo: Demo, http: aiohttp.ClientSession
) -> None:
    for path, content_type, fragment in [
        ("/simulator", "text/html", "simulator.js"),
        ("/inspector", "text/html", "inspector.js"),
        ("/web/static/web.css", "text/css", ".phone"),
        ("/web/static/simulator.js", "text/javascript", "/simulator/api"),
        ("/web/static/inspector.js", "text/javascript", "/inspector/api"),
    ]:
        async with http.get(demo.url + path) as response:
            assert response.status == 200, path
            assert response.content_type == content_type, path
            text = await response.text()
            assert fragment in text, path
            assert "https://" not in text and "http://" not in text.replace(
                "http://www.w3.org/2000/svg", ""
            ), f"{path} must not load anything from elsewhere"
    for path in ["/web/static/nothing.js", "/web/static/..%2Froutes.py", "/web/static/.x.js"]:
        status, body = await call(http, "GET", demo.url + path)
        assert status == 404, path
        assert body == {"error": "no such file"}


async def test_the_pages_send_a_strict_content_security_policy_and_no_framing(
    demo: Demo, http: aiohttp.ClientSession
) -> None:
    for path in ("/simulator", "/inspector", "/web/static/web.js", "/web/static/favicon.svg"):
        async with http.get(demo.url + path) as response:
            assert response.status == 200, path
            headers = response.headers
            assert headers["X-Frame-Options"] == "DENY", path
            assert headers["Referrer-Policy"] == "no-referrer", path
            assert headers["X-Content-Type-Options"] == "nosniff", path
            if not path.startswith("/web/static/"):
                policy = {
                    directive.split()[0]: directive.split()[1:]
                    for directive in headers["Content-Security-Policy"].split(";")
                }
                for directive in ("default-src", "script-src", "style-src", "connect-src"):
                    assert policy[directive] == ["'self'"], (path, directive)
                assert policy["frame-ancestors"] == ["'none'"], path
                assert policy["object-src"] == policy["base-uri"] == ["'none'"], path
                images = ["'self'", "http:", "https:"] if path == "/simulator" else ["'self'"]
                assert policy["img-src"] == images, path


def test_the_pages_have_no_inline_script_or_style_for_the_policy_to_block() -> None:
    # tests/browser runs the pages under the policy and fails on any violation too.
    for page in STATIC_DIR.glob("*.html"):
        html = page.read_text()
        assert not re.search(r"<script(?![^>]*\bsrc=)", html), page.name
        assert not re.search(r"\s(style|on[a-z]+)=", html), page.name
        assert "<style" not in html, page.name
    for script in STATIC_DIR.glob("*.js"):
        code = script.read_text()
        assert not re.search(r"\bstyle:|innerHTML|eval\(|new Function", code), script.name
        assert "sessionStorage.setItem" not in code and "localStorage.setItem(TOKEN" not in code


# ---------------------------------------------------------------------- the inspector


async def test_the_demo_inspector_lists_conversations_opt_outs_and_queue_depths(
    demo: Demo, http: aiohttp.ClientSession, redis: Redis
) -> None:
    await send(http, demo, content="STOP")

    async def opted_out() -> bool:
        status, body = await call(
            http, "GET", f"{demo.url}/inspector/api/conversations/{quote(KEY, safe='')}"
        )
        return status == 200 and body["optout"] is not None

    await eventually(opted_out, timeout=10, what="the opt-out in the inspector")
    view = await conversation(http, demo.url)  # open in the demo: no token
    assert view["optout"]["via"] in ("keyword", "provider")
    assert view["optout"]["word"] == "STOP"
    assert "optout" in [entry["kind"] for entry in view["timeline"]]

    await redis.xadd(DLQ, {"source": "sb:{p0}:in", "reason": "test letter"})
    status, stats = await call(http, "GET", f"{demo.url}/inspector/api/stats")
    assert status == 200
    assert stats["demo"] is True and stats["simulator"] is True
    assert len(stats["partitions"]) == 2
    assert stats["totals"]["optouts"] == 1 and stats["totals"]["conversations"] == 1
    assert stats["dlq"] == 1

    base = f"{demo.url}/inspector/api/conversations"
    status, found = await call(http, "GET", f"{base}?q=570156")
    assert status == 200 and [c["key"] for c in found["conversations"]] == [KEY]
    status, found = await call(http, "GET", f"{base}?q=999")
    assert status == 200 and found["conversations"] == []
    status, body = await call(http, "GET", f"{base}?q=abc")
    assert status == 422 and "q:" in body["error"]
    status, body = await call(
        http, "GET", f"{base}/{quote(conversation_key(OURS, '+61400000001'))}"
    )
    assert status == 404 and body == {"error": "no such conversation"}


async def test_a_demo_with_a_token_closes_the_inspector_as_it_closes_the_api(
    redis: Redis, redis_server: RedisServer, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    async with demo_gateway(redis_server.url, tmp_path / "data", api_token=TOKEN) as demo:
        stats = f"{demo.url}/inspector/api/stats"
        assert (await call(http, "GET", stats))[0] == 401
        assert (await call(http, "GET", stats, headers=AUTH))[0] == 200
        # The simulator is the sandbox's handset: as open as the sandbox's control API.
        assert (await call(http, "GET", f"{demo.url}/simulator/api/info"))[0] == 200


async def test_outside_the_demo_the_inspector_needs_the_token_and_there_is_no_simulator(
    redis: Redis, redis_server: RedisServer, http: aiohttp.ClientSession
) -> None:
    async with production(redis_server, token=TOKEN) as (gateway, url, sandbox):
        assert not gateway.demo and gateway.sandbox is None
        status, page = await call(http, "GET", f"{url}/inspector")
        assert status == 200 and "inspector.js" in page  # the page asks for the token
        key = quote(KEY, safe="")
        for path in ["stats", "conversations", f"conversations/{key}"]:
            endpoint = f"{url}/inspector/api/{path}"
            status, body = await call(http, "GET", endpoint)
            assert (status, body) == (401, {"error": "unauthorized"}), path
            status, _ = await call(http, "GET", endpoint, headers={"Authorization": "Bearer x"})
            assert status == 403, path
        assert (await call(http, "GET", f"{url}/api/conversations"))[0] == 401  # unchanged

        status, _ = await call(
            http, "POST", f"{url}/api/messages", json={"to": HANDSET, "content": "hi"}, headers=AUTH
        )
        assert status == 202
        await sandbox.handset("+61491570158").send("hello", to=OURS)

        async def depths() -> bool:
            status, stats = await call(http, "GET", f"{url}/inspector/api/stats", headers=AUTH)
            assert status == 200
            return bool(stats["totals"]["inbox"] == 1)

        await eventually(depths, timeout=10, what="the webhook's entry in the inbox")
        status, stats = await call(http, "GET", f"{url}/inspector/api/stats", headers=AUTH)
        assert stats["totals"]["outbox"] == 1 and stats["dlq"] == 0
        assert (stats["demo"], stats["simulator"]) == (False, False)
        assert sum(p["outbox"] for p in stats["partitions"]) == 1

        # Sent from the account's shared pool (no "from"): the "default" conversation.
        view = await conversation(http, url, conversation_key(None, HANDSET), headers=AUTH)
        assert [entry["kind"] for entry in view["timeline"]] == ["outbound"]
        assert (view["state"], view["optout"], view["timers"]) == (None, None, [])

        for method, path in [
            ("GET", "/simulator"),
            ("GET", "/simulator/api/info"),
            ("GET", f"/simulator/api/handsets/{quote(HANDSET)}"),
            ("POST", f"/simulator/api/handsets/{quote(HANDSET)}/messages"),
        ]:
            status, body = await call(http, method, url + path, json={"content": "x"})
            assert status == 404, path
            assert "in-process sandbox" in body["error"], path


async def test_without_a_token_outside_the_demo_the_inspector_is_closed_to_everyone(
    redis: Redis, redis_server: RedisServer, http: aiohttp.ClientSession
) -> None:
    async with production(redis_server, token=None) as (_, url, _sandbox):
        stats = f"{url}/inspector/api/stats"
        assert (await call(http, "GET", stats))[0] == 401
        assert (await call(http, "GET", stats, headers=AUTH))[0] == 403
