"""The ceiling of the benchmark: bare aiohttp answering the gateway's JSON webhook with 200.

    python bench/bare_server.py --port 9000 [--reuse-port]

It reads and parses the JSON body of ``POST /webhooks/messages`` and answers
``{"status": "accepted"}``, as the gateway does, without anything else (no validation, no
Redis): what one Python process with aiohttp can answer on this machine. ``GET /healthz``
answers 200 once it listens. ``--reuse-port`` lets several processes share the port
(SO_REUSEPORT), for the ceiling of gateways that share theirs.
"""

from __future__ import annotations

import argparse

from aiohttp import web


async def accept(request: web.Request) -> web.Response:
    await request.json()
    return web.json_response({"status": "accepted"})


async def health(_request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--reuse-port", action="store_true")
    args = parser.parse_args()
    app = web.Application()
    app.router.add_post("/webhooks/messages", accept)
    app.router.add_get("/healthz", health)
    web.run_app(
        app,
        host=args.host,
        port=args.port,
        reuse_port=args.reuse_port or None,
        print=None,
        access_log=None,
    )


if __name__ == "__main__":
    main()
