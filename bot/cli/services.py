"""Commands that run services: ``serve`` (the gateway), ``sandbox`` (the fake provider) and
``dlq`` (the gateway's dead letters)."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine
from datetime import datetime
from pathlib import Path
from typing import Any

from bot.cli.base import (
    EXIT_OK,
    UsageError,
    command,
    positive_float,
    preview,
    table,
)
from bot.cli.messaging import split_values
from bot.core.config import ConfigError, load_settings
from bot.core.sms import normalise_phone

# --------------------------------------------------------------------------- sandbox


async def run_until_signalled(coro: Coroutine[Any, Any, None]) -> bool:
    """Run ``coro`` until it ends or SIGINT/SIGTERM arrives (then cancel it).

    Returns whether a signal stopped it. Outside the main thread, where signal handlers
    cannot be installed, only the coroutine's own end or cancellation stops it.
    """
    task = asyncio.ensure_future(coro)
    loop = asyncio.get_running_loop()
    signalled: list[int] = []

    def stop(signum: int) -> None:
        signalled.append(signum)
        task.cancel()

    installed = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(signum, stop, signum)
        except (ValueError, RuntimeError, NotImplementedError):
            continue
        installed.append(signum)
    try:
        await task
    except asyncio.CancelledError:
        if not signalled:
            raise
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)
    return bool(signalled)


def _sandbox(args: argparse.Namespace) -> int:
    """Run the sandbox until Ctrl-C or SIGTERM."""
    from bot.sandbox import SandboxConfig, serve

    api_key = getattr(args, "api_key", None) or "sandbox-key"
    api_secret = getattr(args, "api_secret", None) or "sandbox-secret"
    options: dict[str, Any] = {
        "host": args.host,
        "port": args.port,
        "credentials": {api_key: api_secret},
        "webhook_url": args.webhook_url,
        "receipt_url": args.receipt_url,
        "signing": args.sign,
        "step_delay": args.receipt_delay,
        "opt_out_handling": args.opt_outs,
        "throttle": args.throttle,
    }
    if args.numbers:
        options["numbers"] = [normalise_phone(n) for n in split_values(args.numbers)]
    if args.faults is not None:
        options.update(_fault_options(args.faults))
    config = SandboxConfig(**{k: v for k, v in options.items() if v is not None})
    reconfigure = getattr(sys.stdout, "reconfigure", None)
    if reconfigure is not None:
        reconfigure(line_buffering=True)
    asyncio.run(run_until_signalled(serve(config)))
    return EXIT_OK


def _fault_options(path: Path) -> dict[str, Any]:
    """Initial faults from a JSON file in the shape of ``POST /_sandbox/faults``."""
    from bot.sandbox.faults import FaultSettings

    try:
        body = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno})") from exc
    settings = FaultSettings.parse(body)
    return {
        "faults": [rule.model_dump(exclude_none=True) for rule in settings.rules],
        "receipt_faults": settings.receipts.model_dump(),
        "seed": settings.seed,
    }


def _add_sandbox(commands: Any) -> None:
    parser = command(
        commands,
        "sandbox",
        help="run the fake Sinch provider locally",
        description=(
            "Run the sandbox: the provider's API, handsets that receive messages, delivery\n"
            "receipts and replies, on your machine. Point other commands at it with\n"
            "SINCHBOT_BASE_URL=http://HOST:PORT and its key and secret. Ctrl-C stops it."
        ),
        examples=[
            "sinchbot sandbox",
            "sinchbot sandbox --port 9000 --number +61491570157 --receipt-delay 0.2 "
            "--webhook-url http://127.0.0.1:8080/webhooks/messages",
            "SINCHBOT_BASE_URL=http://127.0.0.1:8025 SINCHBOT_API_KEY=sandbox-key "
            "SINCHBOT_API_SECRET=sandbox-secret sinchbot send --to +61491570156 -m hi",
        ],
        provider=False,
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (%(default)s)")
    parser.add_argument(
        "--port", type=int, default=8025, help="port to listen on, 0 for any (%(default)s)"
    )
    parser.add_argument(
        "--api-key",
        default=argparse.SUPPRESS,
        metavar="KEY",
        help="the API key the sandbox accepts (sandbox-key)",
    )
    parser.add_argument(
        "--api-secret",
        default=argparse.SUPPRESS,
        metavar="SECRET",
        help="the API secret the sandbox accepts (sandbox-secret)",
    )
    parser.add_argument(
        "--number",
        dest="numbers",
        action="append",
        metavar="NUMBER",
        help="a number of the account (sender ID); may repeat",
    )
    parser.add_argument(
        "--webhook-url", metavar="URL", help="where inbound messages (replies) are pushed"
    )
    parser.add_argument("--receipt-url", metavar="URL", help="where delivery reports are pushed")
    parser.add_argument(
        "--receipt-delay",
        type=positive_float,
        metavar="S",
        help="seconds between the steps of a message's delivery (enroute, submitted, delivered)",
    )
    parser.add_argument(
        "--opt-outs",
        choices=("provider", "blacklist", "account"),  # bot.sandbox.config.OPT_OUT_HANDLING
        help="what the provider does with an opt-out keyword: blacklist the number and "
        "confirm (provider, the default), only blacklist, or nothing (account: the account "
        "handles opt-outs itself)",
    )
    parser.add_argument(
        "--sign", action="store_true", default=None, help="sign pushed webhooks (RSA)"
    )
    parser.add_argument(
        "--faults",
        type=Path,
        metavar="FILE.json",
        help="start with these faults (the body of POST /_sandbox/faults, see docs/sandbox.md)",
    )
    parser.add_argument(
        "--throttle",
        type=_throttle,
        metavar="CALLS/SECONDS",
        help="allow at most CALLS provider calls per SECONDS per API key, 429 past it "
        "(e.g. 20/2, the connector's 100/60 scaled down); default: no limit",
    )
    parser.set_defaults(handler=_sandbox)


def _throttle(text: str) -> tuple[int, float]:
    from bot.sandbox.throttle import parse_throttle

    try:
        return parse_throttle(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


# --------------------------------------------------------------------------- dlq

REDIS_URL_MISSING = (
    "SINCHBOT_REDIS_URL is not set and no embedded Redis is running in SINCHBOT_DATA_DIR "
    "(the DLQ lives in the gateway's Redis)"
)
DLQ_REASON_PREVIEW = 50


def _redis_place(url: str) -> str:
    """``host:port`` of a Redis URL (never its password)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    try:
        port = parts.port or 6379
    except ValueError:
        port = 6379
    return f"{parts.hostname or '?'}:{port}"


def _dlq(
    action: Callable[[Any, argparse.Namespace], Awaitable[None]], *, selects: bool = False
) -> Callable[[argparse.Namespace], int]:
    """Turn an async DLQ action into a handler: it gets a Redis client for
    ``SINCHBOT_REDIS_URL``; ``selects`` actions take ``ID...`` or ``--all``."""

    def run(args: argparse.Namespace) -> int:
        if selects and bool(args.ids) == bool(args.all):
            raise UsageError(
                f"give dead-letter IDs or --all (one of them); try 'sinchbot dlq {args.action} --help'"
            )
        from bot.storage.redis_server import running_url

        settings = load_settings()
        # Without SINCHBOT_REDIS_URL: the embedded server of a `sinchbot serve` running here.
        url = settings.redis_url or running_url(settings.data_dir / "redis")
        if not url:
            raise ConfigError(REDIS_URL_MISSING)

        async def go() -> None:
            from redis.exceptions import RedisError

            from bot.storage.connection import connect

            # One server, or a cluster (redis+cluster://).
            client = connect(url, socket_connect_timeout=5, socket_timeout=30)
            try:
                await action(client, args)
            except RedisError as exc:
                raise ConnectionError(f"Redis at {_redis_place(url)}: {exc}") from None
            finally:
                await client.aclose()

        asyncio.run(go())
        return EXIT_OK

    run.__name__ = action.__name__
    run.__doc__ = action.__doc__
    return run


async def _dlq_list(redis: Any, args: argparse.Namespace) -> None:
    """List dead letters, oldest first."""
    from bot.core.logs import mask_text
    from bot.streams import dlq

    entries = await dlq.list_dead(redis, args.count)
    if args.json:
        print(json.dumps([e.to_json() for e in entries], indent=2, ensure_ascii=False))
        return
    total = await dlq.count(redis)
    if not entries:
        print("no dead letters")
        return
    rows = [
        [
            e.id,
            str(e.partition),
            e.kind,
            str(e.deliveries),
            datetime.fromtimestamp(e.at).strftime("%Y-%m-%d %H:%M:%S") if e.at else "?",
            mask_text(e.fields.get("c", "")) or "-",
            mask_text(preview(e.reason, DLQ_REASON_PREVIEW) or ""),
        ]
        for e in entries
    ]
    headers = ["ID", "PARTITION", "KIND", "FAILURES", "DEAD AT", "CONVERSATION", "REASON"]
    for line in table(headers, rows):
        print(line)
    shown = f"the oldest {len(entries)} of " if total > len(entries) else ""
    plural = "" if total == 1 else "s"
    print(f"{shown}{total} dead letter{plural}; 'sinchbot dlq list --json' shows their fields")


async def _dlq_replay(redis: Any, args: argparse.Namespace) -> None:
    """Put dead letters back on their streams."""
    from bot.streams import dlq

    done = await dlq.replay(redis, "all" if args.all else args.ids)
    print(f"replayed {done} dead letter{'' if done == 1 else 's'}")


async def _dlq_purge(redis: Any, args: argparse.Namespace) -> None:
    """Delete dead letters for good."""
    from bot.streams import dlq

    done = await dlq.purge(redis, "all" if args.all else args.ids)
    print(f"deleted {done} dead letter{'' if done == 1 else 's'}")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {text!r}")
    return value


def _add_dlq(commands: Any) -> None:
    group = command(
        commands,
        "dlq",
        help="inspect, replay and purge the gateway's dead letters",
        description=(
            "Entries the gateway failed on too many times (or could not read) wait in the\n"
            "dead-letter stream of its Redis (SINCHBOT_REDIS_URL). Replay puts them back at\n"
            "the end of the stream they came from; purge deletes them."
        ),
        examples=[
            "sinchbot dlq list",
            "sinchbot dlq list --json",
            "sinchbot dlq replay 1712345678901-0",
            "sinchbot dlq replay --all",
            "sinchbot dlq purge --all",
        ],
        provider=False,
    )
    actions = group.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = command(actions, "list", help="list dead letters, oldest first", provider=False)
    listing.add_argument(
        "--count",
        type=positive_int,
        default=100,
        metavar="N",
        help="show at most N (%(default)s)",
    )
    listing.add_argument("--json", action="store_true", help="print them as JSON, with fields")
    listing.set_defaults(handler=_dlq(_dlq_list))
    for name, action, verb in (
        ("replay", _dlq_replay, "put dead letters back at the end of their streams"),
        ("purge", _dlq_purge, "delete dead letters for good"),
    ):
        parser = command(actions, name, help=verb, provider=False)
        parser.add_argument("ids", nargs="*", metavar="ID", help="a dead letter's id")
        parser.add_argument("--all", action="store_true", help="every dead letter")
        parser.set_defaults(handler=_dlq(action, selects=True))


def _serve(args: argparse.Namespace) -> int:
    """Run the gateway (``--processes`` of them on one port) until SIGTERM or Ctrl-C."""
    from bot.app.serve import run, run_many
    from bot.storage.redis_server import RedisServerError

    options = {"host": args.host, "port": args.port, "handler": args.event_handler}
    overrides = {name: value for name, value in options.items() if value is not None}
    settings = load_settings(**overrides)
    try:
        if args.processes > 1:
            return run_many(settings, args.processes, role=args.role)
        return run(settings, role=args.role)
    except ValueError as exc:  # --processes that cannot share a port or a Redis
        raise UsageError(str(exc)) from None
    except RedisServerError as exc:
        raise OSError(f"embedded Redis: {exc}") from exc


def _add_serve(commands: Any) -> None:
    parser = command(
        commands,
        "serve",
        help="run the gateway (webhooks, conversations, outbox, API)",
        description=(
            "Run the gateway. With no configuration it starts an embedded redis-server and\n"
            "the sandbox provider (a demo you can talk to); set SINCHBOT_REDIS_URL and\n"
            "SINCHBOT_API_KEY/SINCHBOT_API_SECRET for production. SIGTERM or Ctrl-C stops\n"
            "taking work, finishes what is in flight and exits 0."
        ),
        examples=[
            "sinchbot serve",
            "sinchbot serve --host 0.0.0.0 --port 8080",
            "SINCHBOT_REDIS_URL=redis://redis:6379/0 sinchbot serve --role worker",
            "SINCHBOT_REDIS_URL=redis://redis:6379/0 sinchbot serve --processes 2",
        ],
        provider=False,
    )
    parser.add_argument("--host", help="address to listen on (SINCHBOT_HOST, 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to listen on (SINCHBOT_PORT, 8080)")
    parser.add_argument(
        "--role",
        choices=["all", "web", "worker"],
        default="all",
        help="all (default); web: webhooks and API, no processing; worker: processing and sending, plus the API and health checks, no webhooks",
    )
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        metavar="N",
        help="run N gateways sharing the port (SO_REUSEPORT) and the partitions, one per core; needs SINCHBOT_REDIS_URL (default 1)",
    )
    parser.add_argument(
        "--handler",
        dest="event_handler",
        metavar="MODULE:ATTR",
        help="event handler to run (SINCHBOT_HANDLER; default: record events, and in the zero-configuration demo reply to each message)",
    )
    parser.set_defaults(handler=_serve)
