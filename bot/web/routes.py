"""The gateway's two web pages and the small JSON endpoints behind them.

Plain HTML, CSS and JavaScript shipped in ``bot/web/static`` (no build step, nothing
fetched from elsewhere); the pages poll their endpoints every half second. Every page and
file is served with :data:`SECURITY_HEADERS`: a Content-Security-Policy that allows only the
gateway's own scripts, styles and requests (no inline script or style, no framing; the
simulator may also show the http(s) images a message carries, as a handset would),
``X-Frame-Options: DENY``, ``Referrer-Policy: no-referrer`` and
``X-Content-Type-Options: nosniff``.

**Simulator** (``/simulator``): a phone. It exists only when the gateway runs the in-process
sandbox provider (the zero-configuration demo): its endpoints drive
:attr:`Gateway.sandbox <bot.app.gateway.Gateway.sandbox>` directly (no second port, no
CORS) and are as open as the sandbox's own control API; otherwise they answer 404 with a
JSON error saying why.

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

**Inspector** (``/inspector``): read-only views of the gateway's Redis. Its endpoints take the
management API's bearer token exactly as ``/api`` does (401 without it, 403 when wrong; open
only in the demo without ``SINCHBOT_API_TOKEN``); the page asks for the token and keeps it in
memory only (never in storage a script could read later: a reload asks again).

``GET /inspector/api/conversations?q=&limit=``
    as ``GET /api/conversations``.
``GET /inspector/api/conversations/{key}``
    as ``GET /api/conversations/{key}``, plus the handset's ``optout`` entry (or ``null``),
    the conversation's pending ``timers`` and its ``partition``.
``GET /inspector/api/stats``
    the depths of every partition's inbox, outbox, forward stream, timers and deferred
    sends, the suppression list's size and the dead-letter stream's length.
"""

from __future__ import annotations

import json
import mimetypes
import re
import secrets
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, cast

from aiohttp import web
from pydantic import ValidationError

from bot.api.routes import Api, ApiDeps, ApiError
from bot.gateway.keys import DLQ, PartitionKeys, conversation_key, handset_of, partition_of
from bot.gateway.store import text
from bot.outbox import suppression
from bot.sandbox.state import Message, NotFound
from bot.sinch.models import validation_details
from bot.sms import InvalidPhoneNumber, normalise_phone, segments

if TYPE_CHECKING:
    from bot.app.gateway import Gateway
    from bot.sandbox import Sandbox

__all__ = [
    "PAGE_POLICY",
    "SECURITY_HEADERS",
    "SIMULATOR_POLICY",
    "STATIC_DIR",
    "handset_view",
    "web_routes",
]

STATIC_DIR: Final = Path(__file__).parent / "static"
"""The pages' files (shipped as package data)."""
MAX_ITEMS: Final = 300
"""Messages the simulator shows per handset (the newest)."""
_STATIC_NAME: Final = re.compile(r"[A-Za-z0-9_-]+\.(html|js|css|svg|png)")
_GLOB_SPECIAL: Final = re.compile(r"([*?\[\]\\])")
PAGE_POLICY: Final = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
"""The Content-Security-Policy of the pages: their own files and endpoints, nothing else."""
SIMULATOR_POLICY: Final = PAGE_POLICY.replace("img-src 'self'", "img-src 'self' http: https:")
"""The simulator's: a phone shows the MMS and RCS images a message links to."""
SECURITY_HEADERS: Final = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
"""Headers of every page and static file (the HTML pages add their policy)."""
_NO_SANDBOX: Final = (
    "the simulator needs the in-process sandbox: run `sinchbot serve` without "
    "SINCHBOT_API_KEY and SINCHBOT_BASE_URL (the zero-configuration demo)"
)


# ----------------------------------------------------------------------------- static files


def _static_response(name: str) -> web.StreamResponse:
    """One file of :data:`STATIC_DIR` (names are checked: no paths, no other files)."""
    path = STATIC_DIR / name
    if not _STATIC_NAME.fullmatch(name) or not path.is_file():
        raise ApiError(404, "no such file")
    content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
    charset = "utf-8" if content_type.startswith("text/") or name.endswith(".js") else None
    headers = {"Cache-Control": "no-cache", **SECURITY_HEADERS}
    if name.endswith(".html"):
        policy = SIMULATOR_POLICY if name == "simulator.html" else PAGE_POLICY
        headers["Content-Security-Policy"] = policy
    return web.Response(
        body=path.read_bytes(), content_type=content_type, charset=charset, headers=headers
    )


# ----------------------------------------------------------------------------- the simulator


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
    def __init__(self, gateway: Gateway, api: Api) -> None:
        self.gateway = gateway
        self.api = api

    @property
    def sandbox(self) -> Sandbox:
        sandbox = self.gateway.sandbox
        if sandbox is None:
            raise ApiError(404, _NO_SANDBOX)
        return sandbox

    def _number(self, request: web.Request) -> str:
        raw = request.match_info["number"]
        try:
            return normalise_phone(raw, self.gateway.settings.default_region)
        except InvalidPhoneNumber:
            raise ApiError(422, f"number: {raw[:40]!r} is not a valid phone number") from None

    async def page(self, request: web.Request) -> web.StreamResponse:
        _ = self.sandbox
        return _static_response("simulator.html")

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


# ----------------------------------------------------------------------------- the inspector


class _Inspector:
    def __init__(self, gateway: Gateway, api: Api) -> None:
        self.gateway = gateway
        self.api = api
        self.redis = gateway.store.redis
        self.partitions = gateway.settings.partitions

    async def page(self, request: web.Request) -> web.StreamResponse:
        return _static_response("inspector.html")

    async def conversation(self, request: web.Request) -> web.StreamResponse:
        response = cast(web.Response, await self.api.conversation(request))
        view: dict[str, Any] = json.loads(response.text or "{}")
        key = str(view["key"])
        handset = handset_of(key)
        keys = PartitionKeys(partition_of(handset, self.partitions))
        optout = await suppression.lookup(self.redis, keys, handset)
        view["handset"] = handset
        view["partition"] = keys.partition
        view["optout"] = asdict(optout) if optout is not None else None
        view["timers"] = await self._timers(keys, key)
        return web.json_response(view, dumps=_dumps)

    async def _timers(self, keys: PartitionKeys, conversation: str) -> list[dict[str, Any]]:
        """The conversation's pending timers, soonest first."""
        prefix = _GLOB_SPECIAL.sub(r"\\\1", conversation)
        found: list[tuple[float, str]] = []
        async for member, score in self.redis.zscan_iter(
            keys.timers, match=f"{prefix}|*", count=1000
        ):
            found.append((float(score), text(member)))
        found.sort()
        if not found:
            return []
        raw: list[Any] = await self.redis.hmget(keys.timer_data, [m for _, m in found])
        timers = []
        for (score, member), data in zip(found, raw, strict=True):
            try:
                ref = json.loads(text(data)) if data is not None else None
            except ValueError:
                ref = None
            timers.append({"id": member.rsplit("|", 1)[-1], "due": score / 1000, "ref": ref})
        return timers

    async def stats(self, request: web.Request) -> web.StreamResponse:
        pipe = self.redis.pipeline(transaction=False)
        for p in range(self.partitions):
            keys = PartitionKeys(p)
            pipe.xlen(keys.inbox)
            pipe.xlen(keys.outbox)
            pipe.xlen(keys.forward)
            pipe.zcard(keys.timers)
            pipe.zcard(keys.deferred)
            pipe.hlen(keys.optout)
            pipe.zcard(keys.conversations)
        pipe.xlen(DLQ)
        values = [int(v or 0) for v in await pipe.execute()]
        names = ("inbox", "outbox", "forward", "timers", "deferred", "optouts", "conversations")
        partitions = []
        for p in range(self.partitions):
            row = values[p * len(names) : (p + 1) * len(names)]
            partitions.append({"partition": p, **dict(zip(names, row, strict=True))})
        totals = {name: sum(int(row[name]) for row in partitions) for name in names}
        return web.json_response(
            {
                "demo": self.gateway.demo,
                "simulator": self.gateway.sandbox is not None,
                "partitions": partitions,
                "totals": totals,
                "dlq": values[-1],
            }
        )


def _dumps(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"), default=str)


# ----------------------------------------------------------------------------- routes


def web_routes(gateway: Gateway) -> list[web.RouteDef]:
    """The simulator's and the inspector's pages, assets and JSON endpoints (see the module
    documentation), for ``app.add_routes(...)``.

    The inspector's endpoints are authenticated as the management API is: with
    ``SINCHBOT_API_TOKEN`` when set, open in the demo without it, and closed to everyone
    otherwise.
    """
    settings = gateway.settings
    token = settings.api_token.get_secret_value() if settings.api_token else None
    if token is None and not gateway.demo:
        token = secrets.token_urlsafe(32)  # nobody can guess it: closed, as /api is
    api = Api(
        ApiDeps(
            store=gateway.store,
            partitions=settings.partitions,
            ttl_ms=gateway.ttl_ms,
            timeline_max=settings.timeline_max,
            max_body=settings.max_body,
            default_region=settings.default_region,
            api_token=token,
        )
    )
    open_ = api.guarded
    simulator = _Simulator(gateway, api)
    inspector = _Inspector(gateway, api)

    async def static(request: web.Request) -> web.StreamResponse:
        return _static_response(request.match_info["name"])

    sim = "/simulator/api/handsets/{number}"
    return [
        web.get("/web/static/{name}", open_(static, auth=False), allow_head=False),
        web.get("/simulator", open_(simulator.page, auth=False), allow_head=False),
        web.get("/simulator/api/info", open_(simulator.info, auth=False), allow_head=False),
        web.get(sim, open_(simulator.handset, auth=False), allow_head=False),
        web.put(sim, open_(simulator.update, auth=False)),
        web.post(f"{sim}/messages", open_(simulator.send, auth=False)),
        web.get("/inspector", open_(inspector.page, auth=False), allow_head=False),
        web.get("/inspector/api/stats", open_(inspector.stats), allow_head=False),
        web.get("/inspector/api/conversations", open_(api.conversations), allow_head=False),
        web.get(
            "/inspector/api/conversations/{key}",
            open_(inspector.conversation),
            allow_head=False,
        ),
    ]
