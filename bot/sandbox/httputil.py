"""Small HTTP helpers shared by the provider API and the control API: JSON in, JSON out,
errors worded as the provider words them, and the middleware that makes sure nothing but a
short JSON error ever leaves the sandbox."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from bot.sandbox.schemas import BadRequest, SendRejected
from bot.sandbox.state import Conflict, NotFound
from bot.sinch.models import validation_details

__all__ = [
    "NOT_FOUND",
    "error_middleware",
    "json_body",
    "json_error",
    "respond",
]

log = logging.getLogger("bot.sandbox")

NOT_FOUND = "Resource not found."

_STATUS_MESSAGES = {
    400: "Bad Request",
    401: "Invalid authentication credentials",
    403: "This feature has not been enabled in your account.",
    404: NOT_FOUND,
    405: "Method not allowed.",
    413: "Request entity too large.",
    415: "Unsupported media type.",
}


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def respond(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """A JSON response."""
    return web.json_response(body, status=status, headers=headers, dumps=_dumps)


def json_error(
    status: int, message: str | None = None, *, details: list[str] | None = None
) -> web.Response:
    body: dict[str, Any] = {"message": message or _STATUS_MESSAGES.get(status, "Error")}
    if details is not None:
        body["details"] = details
    return respond(body, status=status)


async def json_body(request: web.Request, *, send: bool = False) -> Any:
    """The request's JSON body. Invalid JSON raises :class:`BadRequest` (for send calls a
    :class:`SendRejected`, which answers with the provider's parse-error body)."""
    raw = await request.read()
    try:
        return json.loads(raw) if raw.strip() else None
    except (ValueError, UnicodeDecodeError) as exc:
        if send:
            raise SendRejected([f"/: request body is not valid JSON ({exc})"]) from None
        raise BadRequest("Request body is not valid JSON.") from None


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure becomes a short JSON error: 4xx for bad input, 500 (logged, without a
    traceback in the body) for a bug."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = json_error(exc.status)
        for name in ("Allow", "Retry-After"):
            if name in exc.headers:
                response.headers[name] = exc.headers[name]
        return response
    except BadRequest as exc:
        return json_error(400, str(exc), details=exc.details)
    except ValidationError as exc:
        details = validation_details(exc)
        return json_error(400, details[0] if len(details) == 1 else "Bad Request", details=details)
    except NotFound:
        return json_error(404, NOT_FOUND)
    except Conflict as exc:
        return json_error(409, str(exc))
    except ConnectionResetError:
        log.debug("sandbox: %s %s: the client went away", request.method, request.path)
        return json_error(400, "Connection lost.")
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("sandbox: unhandled error in %s %s", request.method, request.path)
        return json_error(500, "An internal error occurred. Please try again later.")
