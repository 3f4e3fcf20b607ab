"""Shared plumbing of the ``sinchbot`` commands: parsers with one-line errors, argument
types, the provider-command runner and human output."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn

from pydantic import BaseModel

from bot.core.config import ConfigError, Settings, load_settings
from bot.core.sms import normalise_phone, segments
from bot.sinch.client import SinchClient
from bot.sinch.errors import (
    SinchTimeoutError,
)
from bot.sinch.models import ProviderMessage

PROG = "sinchbot"
EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 70
EXIT_INTERRUPTED = 130
CONTENT_PREVIEW = 60
DEBUG_ENV = "SINCHBOT_DEBUG"


# --------------------------------------------------------------------------- parser plumbing


class UsageError(Exception):
    """The command line is wrong; the message is one line ending with a pointer to --help."""


class Parser(argparse.ArgumentParser):
    """An argparse parser whose errors are one line, not a usage block."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message}; try '{self.prog} --help'")


class Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the examples of the epilogs as written."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=32)


def _global_options() -> Parser:
    """Options accepted before and after any provider subcommand.

    Their default is ``SUPPRESS`` so a value given before the subcommand is not overwritten
    by the subcommand's default; read them with ``getattr(args, name, None)``.
    """
    parent = Parser(add_help=False)
    group = parent.add_argument_group("global options")
    group.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS,
        help="print the provider's objects as JSON, for scripts",
    )
    group.add_argument(
        "--base-url",
        metavar="URL",
        default=argparse.SUPPRESS,
        help="provider API URL, e.g. a sandbox (default: SINCHBOT_BASE_URL or the service's)",
    )
    group.add_argument(
        "--api-key",
        metavar="KEY",
        default=argparse.SUPPRESS,
        help="API key (default: SINCHBOT_API_KEY)",
    )
    group.add_argument(
        "--api-secret",
        metavar="SECRET",
        default=argparse.SUPPRESS,
        help="API secret (default: SINCHBOT_API_SECRET)",
    )
    return parent


GLOBAL = _global_options()


def command(
    commands: Any,
    name: str,
    *,
    help: str,
    description: str | None = None,
    examples: Sequence[str] = (),
    provider: bool = True,
) -> Parser:
    """Add one subcommand parser with the house style: description, examples, globals."""
    epilog = None
    if examples:
        epilog = "examples:\n" + "\n".join(f"  {line}" for line in examples)
    parser: Parser = commands.add_parser(
        name,
        help=help,
        description=description or help[0].upper() + help[1:] + ".",
        epilog=epilog,
        formatter_class=Formatter,
        parents=[GLOBAL] if provider else [],
    )
    return parser


def key_value(kind: str) -> Callable[[str], tuple[str, str]]:
    """An argparse type for ``KEY=VALUE`` (the key non-empty)."""

    def parse(text: str) -> tuple[str, str]:
        key, sep, value = text.partition("=")
        if not sep or not key.strip():
            raise argparse.ArgumentTypeError(f"expected {kind}=VALUE, got {text!r}")
        return key.strip(), value

    return parse


def timestamp(text: str) -> datetime:
    """An argparse type for ISO 8601 timestamps; without an offset the local time zone."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an ISO 8601 time such as 2030-01-31T09:30:00+11:00, got {text!r}"
        ) from None
    return value if value.tzinfo else value.astimezone()


def json_file(text: str) -> Any:
    """An argparse type: the decoded contents of a JSON file (``-`` for stdin)."""
    try:
        raw = sys.stdin.read() if text == "-" else Path(text).read_text(encoding="utf-8")
    except OSError as exc:
        raise argparse.ArgumentTypeError(f"cannot read {text!r}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise argparse.ArgumentTypeError(f"{text!r} is not UTF-8 text") from None
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number of seconds >= 0, got {text!r}")
    return value


# --------------------------------------------------------------------------- running commands


@dataclass(slots=True)
class Context:
    """What a provider command works with."""

    args: argparse.Namespace
    settings: Settings
    client: SinchClient

    @property
    def json(self) -> bool:
        return bool(getattr(self.args, "json", False))

    def emit(self, data: Any, lines: Iterable[str] | Callable[[], Iterable[str]]) -> None:
        """Print ``data`` as JSON with ``--json``, else the human ``lines``."""
        if self.json:
            print(json.dumps(jsonable(data), indent=2, ensure_ascii=False))
            return
        for line in lines() if callable(lines) else lines:
            print(line)

    def number(self, text: str) -> str:
        """A phone number in E.164, read in the configured default region."""
        return normalise_phone(text, self.settings.default_region)


ProviderHandler = Callable[[Context], Awaitable[None]]


def jsonable(data: Any) -> Any:
    if isinstance(data, BaseModel):
        return data.model_dump(mode="json", exclude_none=True, by_alias=False)
    if isinstance(data, list | tuple):
        return [jsonable(item) for item in data]
    if isinstance(data, dict):
        return {key: jsonable(value) for key, value in data.items()}
    return data


def settings_from(args: argparse.Namespace) -> Settings:
    """Settings from the environment and ``.env``, with the command-line overrides."""
    overrides = {
        name: getattr(args, name)
        for name in ("base_url", "api_key", "api_secret")
        if getattr(args, name, None) is not None
    }
    settings = load_settings(**overrides)
    if not settings.has_credentials:
        raise ConfigError(
            "no API credentials: set SINCHBOT_API_KEY and SINCHBOT_API_SECRET "
            "(or pass --api-key and --api-secret)"
        )
    return settings


def provider_command(
    handler: ProviderHandler, *, check: Callable[[argparse.Namespace], None] | None = None
) -> Callable[[argparse.Namespace], int]:
    """Turn an async provider command into a handler: ``check`` the arguments (raise
    :class:`UsageError`), load the settings, open a client and ``asyncio.run`` the command."""

    def run(args: argparse.Namespace) -> int:
        if check is not None:
            check(args)
        settings = settings_from(args)

        async def go() -> None:
            async with SinchClient.from_settings(settings) as client:
                try:
                    await handler(Context(args, settings, client))
                except SinchTimeoutError as exc:
                    raise SinchTimeoutError(f"{exc} (provider at {client.base_url})") from exc

        asyncio.run(go())
        return EXIT_OK

    run.__name__ = handler.__name__
    run.__doc__ = handler.__doc__
    return run


# --------------------------------------------------------------------------- human output


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Left-aligned columns separated by two spaces."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    lines = []
    for row in [headers, *rows]:
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return lines


def fields(pairs: Sequence[tuple[str, object]]) -> list[str]:
    """``name  value`` lines, aligned, skipping empty values."""
    shown = [(name, str(value)) for name, value in pairs if value not in (None, "", [], {})]
    width = max((len(name) for name, _ in shown), default=0)
    return [f"{name.ljust(width)}  {value}" for name, value in shown]


def preview(text: str | None, limit: int = CONTENT_PREVIEW) -> str | None:
    if text is None:
        return None
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def status_word(message: ProviderMessage) -> str:
    return str(getattr(message.status, "value", message.status))


def queued_lines(sent: Sequence[ProviderMessage], numbers: Sequence[str]) -> list[str]:
    """``queued  <id>  -> +61...`` for each message sent."""
    lines = []
    for index, message in enumerate(sent):
        destination = message.destination_number or (
            numbers[index] if index < len(numbers) else "?"
        )
        lines.append(f"{status_word(message)}  {message.message_id}  -> {destination}")
    return lines


def segment_line(text: str) -> str:
    info = segments(text)
    plural = "" if info.segments == 1 else "s"
    return f"{info.segments} segment{plural}, {info.encoding.value}"
