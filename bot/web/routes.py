"""The gateway's web pages, their files, and the inspector's JSON endpoints.

Plain HTML, CSS and JavaScript shipped in ``bot/web/static`` (no build step, nothing
fetched from elsewhere); the pages poll their endpoints every half second. Every page and
file is served with :data:`SECURITY_HEADERS`: a Content-Security-Policy that allows only the
gateway's own scripts, styles and requests (no inline script or style, no framing; the
simulator may also show the http(s) images a message carries, as a handset would),
``X-Frame-Options: DENY``, ``Referrer-Policy: no-referrer`` and
``X-Content-Type-Options: nosniff``.

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
from dataclasses import asdict
from pathlib import Path
from typing import Any, Final, cast

from aiohttp import web

from bot.api.routes import Api, ApiError
from bot.outbox import suppression
from bot.storage.keys import DLQ, PartitionKeys, handset_of, partition_of
from bot.storage.store import Store, text

__all__ = [
    "PAGE_POLICY",
    "SECURITY_HEADERS",
    "SIMULATOR_POLICY",
    "STATIC_DIR",
    "static_response",
    "web_routes",
]

STATIC_DIR: Final = Path(__file__).parent / "static"
"""The pages' files (shipped as package data)."""
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


# ----------------------------------------------------------------------------- static files


def static_response(name: str) -> web.StreamResponse:
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


# ----------------------------------------------------------------------------- the inspector


class _Inspector:
    def __init__(
        self, api: Api, store: Store, *, partitions: int, demo: bool, simulator: bool
    ) -> None:
        self.api = api
        self.redis = store.redis
        self.partitions = partitions
        self.demo = demo
        self.simulator = simulator

    async def page(self, request: web.Request) -> web.StreamResponse:
        return static_response("inspector.html")

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
                "demo": self.demo,
                "simulator": self.simulator,
                "partitions": partitions,
                "totals": totals,
                "dlq": values[-1],
            }
        )


def _dumps(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"), default=str)


# ----------------------------------------------------------------------------- routes


def web_routes(
    api: Api, store: Store, *, partitions: int, demo: bool, simulator: bool
) -> list[web.RouteDef]:
    """The pages' files and the inspector's page and JSON endpoints (see the module
    documentation), for ``app.add_routes(...)``.

    The inspector's endpoints are guarded by ``api`` exactly as the management API is: with
    ``SINCHBOT_API_TOKEN`` when set, open in the demo without it, and closed to everyone
    otherwise. ``simulator`` says whether the demo's simulator runs (the page's links).
    """
    open_ = api.guarded
    inspector = _Inspector(api, store, partitions=partitions, demo=demo, simulator=simulator)

    async def static(request: web.Request) -> web.StreamResponse:
        return static_response(request.match_info["name"])

    return [
        web.get("/web/static/{name}", open_(static, auth=False), allow_head=False),
        web.get("/inspector", open_(inspector.page, auth=False), allow_head=False),
        web.get("/inspector/api/stats", open_(inspector.stats), allow_head=False),
        web.get("/inspector/api/conversations", open_(api.conversations), allow_head=False),
        web.get(
            "/inspector/api/conversations/{key}",
            open_(inspector.conversation),
            allow_head=False,
        ),
    ]
