"""Reading a request body within a limit: what every endpoint that takes a body shares
(the webhooks, the management API, plugins' API routes)."""

from __future__ import annotations

from aiohttp import web

__all__ = ["BodyTooLarge", "read_bounded"]


class BodyTooLarge(Exception):
    """The request's body is larger than the limit (the caller answers 413)."""


async def read_bounded(request: web.Request, limit: int) -> bytes:
    """The request's body, of at most ``limit`` bytes. A ``Content-Length`` over the limit
    is refused before anything is read, and at most ``limit + 1`` bytes are ever read (a
    chunked body over the limit is refused as soon as it passes it): :class:`BodyTooLarge`."""
    if request.content_length is not None and request.content_length > limit:
        raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    while chunk := await request.content.read(limit + 1 - size):
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
    return b"".join(chunks)
