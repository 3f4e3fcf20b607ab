"""The simulator's endpoints: the demo's in-process sandbox as a phone in the browser.

The page (``/simulator``, served from :mod:`bot.web`) is a phone. Its endpoints drive the
demo's in-process sandbox directly (no second port, no CORS) and are as open as the
sandbox's own control API; a gateway with a real provider answers them 404 with a JSON error
saying why.

``GET  /simulator/api/info``
    our numbers and the handsets seen so far.
``GET  /simulator/api/handsets/{number}``
    the handset's conversation: what it sent and what was sent to it, oldest first, each
    with its provider status history (receipts), segments and encoding.
``PUT  /simulator/api/handsets/{number}``
    ``{"rcs": true|false}``: whether the handset speaks RCS.
``POST /simulator/api/handsets/{number}/messages``
    the handset sends: ``{"content", "to", "reply_to", "rcs", "choice", "media"}`` as for
    :meth:`HandsetClient.send <bot.sandbox.server.HandsetClient.send>` (201).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

from aiohttp import web
from pydantic import ValidationError

from bot.api.routes import Api, ApiError
from bot.core.sms import InvalidPhoneNumber, normalise_phone, segments
from bot.sandbox import Sandbox
from bot.sandbox.state import Message, NotFound
from bot.sinch.models import validation_details
from bot.storage.keys import conversation_key
from bot.web.routes import static_response

__all__ = ["MAX_ITEMS", "handset_view", "simulator_routes"]

MAX_ITEMS: Final = 300
"""Messages the simulator shows per handset (the newest)."""
_NO_SANDBOX: Final = (
    "the simulator needs the in-process sandbox: run `sinchbot serve` without "
    "SINCHBOT_API_KEY and SINCHBOT_BASE_URL (the zero-configuration demo)"
)


def _item_segments(content: str) -> dict[str, Any]:
    info = segments(content)
    return {"segments": info.segments, "encoding": str(info.encoding)}


def _received_item(message: Message, handset_rcs: bool) -> dict[str, Any]:
    """A message sent to the handset, as the phone shows it. Before it is delivered the
    phone shows it too (greyed by the page), so its receipts can be watched ticking."""
    request = message.request
    as_rcs = request.format == "RCS" and (
        message.delivered_as == "RCS" if message.delivered_as else handset_rcs
    )
    content = request.content
    fmt = request.format
    if request.format == "RCS" and not as_rcs:
        content = str((request.fallback or {}).get("content", ""))
        fmt = "SMS"
    return {
        "direction": "received",
        "id": message.message_id,
        "message_id": message.message_id,
        "time": message.submitted.timestamp(),
        "peer": message.source,
        "text": content,
        "format": fmt,
        "media": list(request.media or []),
        "subject": request.subject,
        "rcs": request.rcs if as_rcs else None,
        "metadata": dict(request.metadata),
        "status": message.status,
        "status_code": message.status_code,
        "final": message.is_final,
        "history": [
            {"status": status, "code": code, "time": when.timestamp()}
            for status, code, when in message.history
        ],
        **_item_segments(content),
    }


def _sent_item(entry: Mapping[str, Any]) -> dict[str, Any]:
    """A message the handset sent."""
    contact = entry.get("contact_message") or {}
    tap = contact.get("choice_response_message") if isinstance(contact, dict) else None
    content = str(entry.get("content") or "")
    return {
        "direction": "sent",
        "id": entry.get("reply_id"),
        "message_id": entry.get("message_id"),
        "time": float(entry.get("time") or 0.0),
        "peer": entry.get("to"),
        "text": content,
        "format": entry.get("format") or "SMS",
        "attachments": int(entry.get("attachments") or 0),
        "choice": tap.get("postback_data") if isinstance(tap, dict) else None,
        **_item_segments(content),
    }


def handset_view(sandbox: Sandbox, number: str, *, limit: int = MAX_ITEMS) -> dict[str, Any]:
    """What the simulator's phone ``number`` shows: ``{"number", "rcs", "messages"}``,
    messages oldest first (the newest ``limit``), each ``direction`` ``sent`` or
    ``received``. Reading never creates the handset."""
    state = sandbox.state
    handset = state.handsets.get(number)
    rcs = handset.rcs if handset is not None else True  # the sandbox's default
    items = [_received_item(m, rcs) for m in state.iter_messages(number)]
    if handset is not None:
        items += [_sent_item(entry) for entry in handset.sent]
    items.sort(key=lambda item: item["time"])
    peers = sorted({str(item["peer"]) for item in items if item.get("peer")})
    return {
        "number": number,
        "rcs": rcs,
        "conversations": [conversation_key(peer, number) for peer in peers],
        "messages": items[-limit:],
    }


class _Simulator:
    def __init__(
        self, sandbox: Callable[[], Sandbox | None], api: Api, default_region: str
    ) -> None:
        self._sandbox = sandbox
        self.api = api
        self.default_region = default_region

    @property
    def sandbox(self) -> Sandbox:
        sandbox = self._sandbox()
        if sandbox is None:
            raise ApiError(404, _NO_SANDBOX)
        return sandbox

    def _number(self, request: web.Request) -> str:
        raw = request.match_info["number"]
        try:
            return normalise_phone(raw, self.default_region)
        except InvalidPhoneNumber:
            raise ApiError(422, f"number: {raw[:40]!r} is not a valid phone number") from None

    async def page(self, request: web.Request) -> web.StreamResponse:
        _ = self.sandbox
        return static_response("simulator.html")

    async def info(self, request: web.Request) -> web.StreamResponse:
        sandbox = self.sandbox
        config = sandbox.config
        return web.json_response(
            {
                "numbers": list(config.numbers),
                "default_number": config.default_number,
                "step_delay": config.step_delay,
                "handsets": [h.summary() for h in sandbox.state.handsets.values()],
            }
        )

    async def handset(self, request: web.Request) -> web.StreamResponse:
        sandbox = self.sandbox
        return web.json_response(handset_view(sandbox, self._number(request)))

    async def update(self, request: web.Request) -> web.StreamResponse:
        sandbox = self.sandbox
        number = self._number(request)
        body = await self.api.read_json(request)
        if not isinstance(body, dict) or set(body) != {"rcs"} or not isinstance(body["rcs"], bool):
            raise ApiError(422, 'body must be {"rcs": true|false}')
        sandbox.handset(number).rcs = body["rcs"]
        return web.json_response(sandbox.state.handset(number).summary())

    async def send(self, request: web.Request) -> web.StreamResponse:
        sandbox = self.sandbox
        number = self._number(request)
        body = await self.api.read_json(request)
        if not isinstance(body, dict):
            raise ApiError(422, "body must be a JSON object")
        unknown = sorted(set(body) - {"content", "to", "reply_to", "rcs", "choice", "media"})
        if unknown:
            raise ApiError(422, f"unknown field(s): {', '.join(unknown)}")
        to = body.get("to") or None
        if to is not None and to not in sandbox.config.numbers:
            raise ApiError(
                422, f"to: must be one of our numbers ({', '.join(sandbox.config.numbers)})"
            )
        try:
            result = await sandbox.handset(number).send(
                str(body.get("content") or ""),
                to=to,
                reply_to=body.get("reply_to") or None,
                media=body.get("media"),
                rcs=bool(body.get("rcs", False)),
                choice=body.get("choice"),
            )
        except ValidationError as exc:
            raise ApiError(422, "; ".join(validation_details(exc))[:500]) from None
        except NotFound:
            raise ApiError(404, "reply_to: no such message") from None
        except (ValueError, TypeError) as exc:
            raise ApiError(422, str(exc)[:500]) from None
        return web.json_response(result, status=201)


def simulator_routes(
    sandbox: Callable[[], Sandbox | None], api: Api, default_region: str
) -> list[web.RouteDef]:
    """The simulator's page and JSON endpoints over the sandbox ``sandbox()`` returns when
    asked (``None``: the gateway has a real provider, and each answers 404 saying why),
    open as the sandbox is."""
    open_ = api.guarded
    simulator = _Simulator(sandbox, api, default_region)
    handset = "/simulator/api/handsets/{number}"
    return [
        web.get("/simulator", open_(simulator.page, auth=False), allow_head=False),
        web.get("/simulator/api/info", open_(simulator.info, auth=False), allow_head=False),
        web.get(handset, open_(simulator.handset, auth=False), allow_head=False),
        web.put(handset, open_(simulator.update, auth=False)),
        web.post(f"{handset}/messages", open_(simulator.send, auth=False)),
    ]
