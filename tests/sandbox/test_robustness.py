"""Bad input is always a short 4xx JSON error; a bug is a 500 JSON error without a traceback."""

from __future__ import annotations

import json

import httpx
import pytest

from bot.sandbox import Sandbox
from bot.sandbox.app import MAX_BODY

from .conftest import HANDSET, SandboxFactory

GARBAGE: list[bytes] = [
    b"",
    b"{",
    b"null",
    b"[]",
    b'"x"',
    b"123",
    b'{"messages": null}',
    b'{"messages": [null]}',
    b'{"numbers": {"a": 1}}',
    b'{"url": 5, "events": "x"}',
    b"\x00\xff\xfe",
    json.dumps({"x": "y" * 10_000}).encode(),
]


def _routes(sandbox: Sandbox) -> list[tuple[str, str]]:
    routes = []
    for route in sandbox.app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter")
        if not path:
            continue
        path = path.replace("{number}", HANDSET).replace("{numbers}", HANDSET)
        path = (
            path.replace("{message_id}", "x").replace("{webhook_id}", "x").replace("{key_id}", "x")
        )
        routes.append((route.method, path))
    return routes


async def test_garbage_never_makes_a_5xx(sandbox: Sandbox, http: httpx.AsyncClient) -> None:
    routes = _routes(sandbox)
    assert len(routes) > 50
    for method, path in routes:
        if path == "/_sandbox/reset":
            continue
        for body in GARBAGE:
            response = await http.request(
                method, path, content=body, headers={"Content-Type": "application/json"}
            )
            assert response.status_code < 500, (method, path, body[:40], response.text)
            if response.status_code >= 400:
                assert response.headers["Content-Type"].startswith("application/json")
                assert "message" in response.json()
                assert "Traceback" not in response.text
    await sandbox.wait_idle()


async def test_garbage_query_strings(http: httpx.AsyncClient) -> None:
    for path in (
        "/v1/webhooks/messages?page=abc&page_size=-3",
        "/v1/iam/signature_keys?page=0",
        "/v1/number_authorisation/mt/blacklist?token=%00",
        "/v1/messaging/numbers/dedicated/assignments?token=-1",
        "/_sandbox/handsets/+61491570156/messages?offset=x",
        "/_sandbox/messages?limit=-1",
    ):
        response = await http.get(path)
        assert response.status_code == 400, (path, response.text)


async def test_unknown_route_and_wrong_method(http: httpx.AsyncClient) -> None:
    response = await http.get("/v2/whatever")
    assert (response.status_code, response.json()) == (404, {"message": "Resource not found."})
    response = await http.delete("/v1/replies")
    assert response.status_code == 405
    assert response.json() == {"message": "Method not allowed."}
    assert response.headers["Allow"] == "GET"
    assert (await http.get("/_sandbox/nope")).status_code == 404


async def test_a_bug_is_a_500_without_traceback(
    sandbox: Sandbox,
    http: httpx.AsyncClient,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def explode(*args: object, **kwargs: object) -> None:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(sandbox.state, "unconfirmed_replies", explode)
    response = await http.get("/v1/replies")
    assert response.status_code == 500
    assert set(response.json()) == {"message"}
    assert "secret internals" not in response.text
    assert "secret internals" in caplog.text


async def test_oversized_body_is_413(http: httpx.AsyncClient) -> None:
    response = await http.post("/v1/messages", content=b"x" * (MAX_BODY + 1))
    assert response.status_code == 413
    assert response.json() == {"message": "Request entity too large."}


async def test_push_to_a_receiver_that_hangs_times_out(make_sandbox: SandboxFactory) -> None:
    # An address that accepts connections but never answers: our own fault injector.
    sandbox = await make_sandbox(shutdown_timeout=0.05)
    http = httpx.AsyncClient(base_url=sandbox.url, auth=(sandbox.api_key, sandbox.api_secret))
    sandbox.set_faults([{"endpoint": "/never", "kind": "timeout", "delay": 5}])
    spec = {
        "url": sandbox.url + "/never",
        "method": "POST",
        "encoding": "JSON",
        "events": ["RECEIVED_SMS"],
        "read_timeout": 100,
    }
    assert (await http.post("/v1/webhooks/messages", json=spec)).status_code == 201
    await sandbox.handset(HANDSET).send("hi")
    await sandbox.wait_idle(timeout=3)
    assert sandbox.stats()["pushes"]["failed"] == 1
    await http.aclose()


async def test_control_api_allows_browsers(http: httpx.AsyncClient) -> None:
    response = await http.options("/_sandbox/handsets/+61491570156/messages")
    assert response.status_code == 204
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    response = await http.get("/_sandbox/stats")
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    response = await http.get("/v1/replies")
    assert "Access-Control-Allow-Origin" not in response.headers
