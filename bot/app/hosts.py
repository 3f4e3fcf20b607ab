"""Which ``Host`` the gateway answers to: the open demo's guard against DNS rebinding.

A web page on any site can have the browser send requests to a name the page's owner
controls and later points at 127.0.0.1 (DNS rebinding): the browser then takes the gateway
for that site and lets the page's scripts read its answers. The zero-configuration demo has
an open management API, open webhooks, the simulator and the inspector, so in the demo a
request is answered only when its ``Host`` header names:

- an IP address (a rebinding needs a name: a page at an address is that address's own);
- ``localhost`` or a name under ``.localhost`` (browsers resolve those to loopback
  themselves);
- the host of ``SINCHBOT_PUBLIC_URL``, or ``SINCHBOT_HOST`` when it is a name;
- a name of ``SINCHBOT_ALLOWED_HOSTS`` (comma-separated; ``*`` allows every name).

An HTTP/1.0 request without ``Host`` (no browser sends one) is answered. Any other is refused with 421
``{"error": ...}`` before any route runs, so it does nothing. Outside the demo the check
applies only when ``SINCHBOT_ALLOWED_HOSTS`` is set.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from typing import Final
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from bot.core.config import Settings

__all__ = ["ANY_HOST", "allowed_names", "host_allowed", "host_guard", "host_name"]

ANY_HOST: Final = "*"
"""The ``SINCHBOT_ALLOWED_HOSTS`` entry that allows every name."""
MISDIRECTED: Final = (
    "misdirected request: this gateway does not answer to that Host "
    "(add it to SINCHBOT_ALLOWED_HOSTS)"
)
_HOST: Final = re.compile(r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<name>[^:\[\]/\s]+))(?::[0-9]{1,5})?")


def host_name(value: str) -> str | None:
    """The name or address of a ``Host`` header value, port removed, in lower case, without a
    trailing dot; ``None`` when it is not a host."""
    match = _HOST.fullmatch(value.strip())
    if match is None:
        return None
    return match["v6"] or match["name"].lower().rstrip(".") or None


def _is_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def allowed_names(settings: Settings) -> frozenset[str]:
    """The names a demo answers to besides IP addresses and ``localhost``: the public URL's
    host, ``SINCHBOT_HOST`` when it is a name, and ``SINCHBOT_ALLOWED_HOSTS``."""
    names = set(settings.allowed_host_list)
    candidates: Iterable[str | None] = (
        urlsplit(settings.public_url).hostname if settings.public_url else None,
        settings.host,
    )
    for candidate in candidates:
        name = host_name(candidate) if candidate else None
        if name and not _is_address(name):
            names.add(name)
    return frozenset(names)


def host_allowed(value: str, names: frozenset[str]) -> bool:
    """Whether a request with ``Host: value`` is answered (see the module docstring)."""
    if ANY_HOST in names:
        return True
    name = host_name(value)
    if name is None:
        return False
    return _is_address(name) or name == "localhost" or name.endswith(".localhost") or name in names


def host_guard(settings: Settings, *, demo: bool) -> list[Middleware]:
    """The middleware that refuses requests to other hosts, as the list to give
    ``web.Application(middlewares=...)``: empty when no check applies (outside the demo
    without ``SINCHBOT_ALLOWED_HOSTS``)."""
    if not demo and not settings.allowed_host_list:
        return []
    names = allowed_names(settings)

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        host = request.headers.get("Host")
        if host is None or host_allowed(host, names):
            return await handler(request)
        return web.json_response({"error": MISDIRECTED}, status=421)

    return [guard]
