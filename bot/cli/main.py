"""The ``sinchbot`` parser and entry point: every subcommand, and errors as one line."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import traceback
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from bot import __version__
from bot.cli.appointments import _add_appointments
from bot.cli.base import (
    DEBUG_ENV,
    EXIT_ERROR,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    GLOBAL,
    PROG,
    Formatter,
    Parser,
    UsageError,
)
from bot.cli.chat import _add_chat
from bot.cli.doctor import _add_doctor
from bot.cli.messaging import (
    _add_blacklist,
    _add_cancel,
    _add_mms,
    _add_rcs,
    _add_send,
    _add_senders,
    _add_status,
    _add_webhooks,
)
from bot.cli.plugins import _add_plugins
from bot.cli.services import (
    _add_dlq,
    _add_sandbox,
    _add_serve,
)
from bot.core.config import ConfigError
from bot.core.sms import InvalidPhoneNumber
from bot.sinch.errors import (
    AuthenticationError,
    SinchAPIError,
    SinchError,
    SinchTransportError,
)

COMMANDS: list[Callable[[Any], None]] = [
    _add_serve,
    _add_send,
    _add_mms,
    _add_rcs,
    _add_status,
    _add_cancel,
    _add_senders,
    _add_webhooks,
    _add_blacklist,
    _add_sandbox,
    _add_dlq,
    _add_plugins,
    _add_appointments,
    _add_chat,
    _add_doctor,
]
"""Builders of the subcommands, in ``--help`` order; each adds its parser."""


def build_parser() -> argparse.ArgumentParser:
    """The whole ``sinchbot`` parser."""
    parser = Parser(
        prog=PROG,
        description=(
            "Send SMS, MMS and RCS through Sinch MessageMedia / Sinch Engage, and run the\n"
            "sandbox. Credentials come from SINCHBOT_API_KEY and SINCHBOT_API_SECRET (or\n"
            ".env); SINCHBOT_BASE_URL points every command at a sandbox."
        ),
        epilog=(
            "examples:\n"
            "  sinchbot sandbox &\n"
            "  export SINCHBOT_BASE_URL=http://127.0.0.1:8025 SINCHBOT_API_KEY=sandbox-key "
            "SINCHBOT_API_SECRET=sandbox-secret\n"
            '  sinchbot send --to "+61491570156 +61491570157" -m "Hello"\n'
            "  sinchbot status ID\n\n"
            "exit status: 0 ok, 1 error, 2 usage error, 130 interrupted\n"
            "'sinchbot COMMAND --help' shows the options of a command."
        ),
        formatter_class=Formatter,
        parents=[GLOBAL],
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(
        dest="command", metavar="COMMAND", required=True, parser_class=Parser
    )
    for add in COMMANDS:
        add(commands)
    return parser


def one_line(text: str) -> str:
    return " ".join(text.split())


def _validation_message(error: ValidationError) -> str:
    """``field: reason`` for each problem, e.g. ``content: String should have at least 1
    character``."""
    parts = []
    for item in error.errors():
        location = ".".join(str(part) for part in item["loc"])
        reason = item["msg"].removeprefix("Value error, ")
        named = not location or reason.startswith(f"{location} ")  # "content must be ..."
        parts.append(reason if named else f"{location}: {reason}")
    return "; ".join(parts) or str(error)


def describe_error(exc: BaseException) -> str:
    """The one-line message shown for an expected error."""
    if isinstance(exc, AuthenticationError):
        return (
            f"the provider refused the credentials (HTTP {exc.status_code}: {exc.message}); "
            "check SINCHBOT_API_KEY and SINCHBOT_API_SECRET"
        )
    if isinstance(exc, SinchAPIError):
        text = f"the provider answered HTTP {exc.status_code}: {exc.message}"
        if exc.details:
            text += " (" + "; ".join(exc.details) + ")"
        return text
    if isinstance(exc, SinchTransportError):
        return f"cannot reach the provider: {exc}"
    if isinstance(exc, ValidationError):
        return _validation_message(exc)
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    return str(exc) or type(exc).__name__


def _fail(message: str, *, kind: str = "error") -> None:
    print(f"{PROG}: {kind}: {one_line(message)}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    try:
        try:
            args = build_parser().parse_args(argv)
        except SystemExit as exit_:  # --help and --version
            return exit_.code if isinstance(exit_.code, int) else EXIT_OK
        handler: Callable[[argparse.Namespace], int] = args.handler
        return handler(args)
    except UsageError as exc:
        _fail(str(exc))
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader of our output went away (``sinchbot senders | head -1``): stop quietly,
        # and keep Python from complaining when it flushes stdout at exit.
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_ERROR
    except (ConfigError, SinchError, InvalidPhoneNumber, ValueError, OSError) as exc:
        if os.environ.get(DEBUG_ENV):
            traceback.print_exc()
        _fail(describe_error(exc))
        return EXIT_ERROR
    except Exception as exc:
        if os.environ.get(DEBUG_ENV):
            traceback.print_exc()
        print(
            f"{PROG}: internal error: {type(exc).__name__}: {one_line(str(exc))} "
            f"(set {DEBUG_ENV}=1 for a traceback)",
            file=sys.stderr,
        )
        return EXIT_INTERNAL
