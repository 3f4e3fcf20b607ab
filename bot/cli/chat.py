"""``sinchbot chat``: a terminal handset. Type as the phone, see the bot's replies and their
delivery receipts as they arrive.

It plays one handset of the sandbox through the sandbox's control API (``/_sandbox/``, see
:mod:`bot.sandbox.control`): each line typed is ``POST /_sandbox/handsets/{number}/messages``
(answering the handset's latest message, as a real provider links replies), and the bot's
messages to the handset are read back from ``GET /_sandbox/messages?destination=...``, which
also carries each message's status as the provider's receipts move it. So the gateway
under test is reached exactly as a phone would reach it: through the provider's webhooks.

A bot message is shown as soon as the provider has it (``bot> text  (enroute)``) and its
final receipt follows (``✓ delivered`` or ``✗ failed``). Piped input is a script: after
each line the chat waits until the replies have settled (at most ``--wait`` seconds), so
``printf 'hi\\nY\\n' | sinchbot chat`` answers each reply in turn and exits at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TextIO
from urllib.parse import quote, urlsplit

import httpx

from bot.cli.base import EXIT_OK, UsageError, command, positive_float, preview
from bot.core.config import Settings, load_settings
from bot.core.sms import normalise_phone

__all__ = ["DEFAULT_HANDSET", "Choice", "HandsetChat", "render"]

DEFAULT_HANDSET = "+61491570156"
"""The handset ``chat`` plays unless ``--as`` says otherwise (the demo banner's number)."""
POLL_INTERVAL = 0.1
"""Seconds between two looks at the provider's messages."""
QUIET = 0.5
"""Seconds without news after which replies count as settled."""
REQUEST_TIMEOUT = 10.0
RECEIPT_PREVIEW = 40
FINAL_STATUSES = frozenset(
    {"delivered", "failed", "expired", "rejected", "cancelled", "undeliverable"}
)
INDENT = "     "
HELP = (
    "type a message and press Enter; /N taps choice N; /rcs on|off switches the handset's "
    "RCS; /help; /quit (or Ctrl-D) ends"
)


class SandboxUnreachable(ConnectionError):
    """The sandbox's control API did not answer (a one-line CLI error)."""


class SandboxRefused(Exception):
    """The sandbox answered a control call with an error status."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"HTTP {status}: {reason}")
        self.status = status


@dataclass(frozen=True)
class Choice:
    """A suggested reply or action of an RCS message, as the handset shows it."""

    label: str
    message_id: str
    postback: str | None = None
    """What tapping sends back; ``None`` for actions (open a URL, call, show a place)."""
    action: str | None = None
    """The URL, number or place an action opens."""


def _choices(items: Iterable[Any], message_id: str) -> list[Choice]:
    """The choices of an RCS body (the Conversation-API ``choices`` list)."""
    result = []
    for item in items:
        if not isinstance(item, dict):
            continue
        if isinstance(item.get("text_message"), dict):
            label = str(item["text_message"].get("text", ""))
            postback = str(item.get("postback_data") or label)
            result.append(Choice(label, message_id, postback=postback))
            continue
        for kind, target in (
            ("url_message", "url"),
            ("call_message", "phone_number"),
            ("location_message", "label"),
        ):
            body = item.get(kind)
            if isinstance(body, dict):
                label = str(body.get("title") or body.get(target) or kind)
                result.append(Choice(label, message_id, action=str(body.get(target) or "")))
                break
    return result


def _card_lines(card: dict[str, Any]) -> list[str]:
    text = " - ".join(str(card[k]) for k in ("title", "description") if card.get(k))
    lines = [text or "(card)"]
    media = card.get("media_message")
    if isinstance(media, dict) and media.get("url"):
        lines.append(f"media: {media['url']}")
    return lines


def render(message: dict[str, Any], *, rcs: bool) -> tuple[list[str], list[Choice]]:
    """How the handset shows a message of ``GET /_sandbox/messages``: its lines (the first
    is the text) and its tappable choices. ``rcs``: whether the handset shows RCS (else an
    RCS message arrives as its SMS fallback); once delivered, ``delivered_as`` decides."""
    message_id = str(message.get("message_id", ""))
    fmt = str(message.get("format") or "SMS")
    shown_as = message.get("delivered_as") or (fmt if fmt != "RCS" or rcs else "SMS")
    body = message.get("rcs_message")
    if fmt == "RCS" and shown_as == "RCS" and isinstance(body, dict):
        return _render_rcs(body, message_id)
    if fmt == "RCS":
        fallback = message.get("fallback") or {}
        text = str(fallback.get("content") or "") if isinstance(fallback, dict) else ""
        return [text or "(an RCS message without SMS fallback)"], []
    lines = [str(message.get("content") or "")]
    if fmt == "MMS":
        subject = message.get("subject")
        lines[0] = f"[MMS{': ' + str(subject) if subject else ''}] {lines[0]}".rstrip()
    lines += [f"media: {url}" for url in message.get("media") or []]
    return lines, []


def _render_rcs(body: dict[str, Any], message_id: str) -> tuple[list[str], list[Choice]]:
    lines: list[str] = []
    choices: list[Choice] = []
    if isinstance(body.get("text_message"), dict):
        lines.append(str(body["text_message"].get("text", "")))
    elif isinstance(body.get("choice_message"), dict):
        choice_message = body["choice_message"]
        lines.append(str((choice_message.get("text_message") or {}).get("text", "")))
        choices += _choices(choice_message.get("choices") or [], message_id)
    elif isinstance(body.get("card_message"), dict):
        card = body["card_message"]
        lines += _card_lines(card)
        choices += _choices(card.get("choices") or [], message_id)
    elif isinstance(body.get("carousel_message"), dict):
        carousel = body["carousel_message"]
        for index, card in enumerate(carousel.get("cards") or [], 1):
            if isinstance(card, dict):
                first, *rest = _card_lines(card)
                lines += [f"card {index}: {first}", *rest]
                choices += _choices(card.get("choices") or [], message_id)
        choices += _choices(carousel.get("choices") or [], message_id)
    elif isinstance(body.get("media_message"), dict):
        lines.append(f"media: {body['media_message'].get('url', '')}")
    if not lines:
        lines.append("(RCS)")
    if choices:
        lines.append("  ".join(f"[{n}] {c.label}" for n, c in enumerate(choices, 1)))
    return lines, choices


def _marks(stream: TextIO) -> tuple[str, str, str]:
    """The receipt marks (delivered, failed, arrow), in ASCII where the output cannot
    show them."""
    encoding = getattr(stream, "encoding", None)  # None: text in memory, anything goes
    try:
        if encoding:
            "✓✗→".encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return "ok", "x", "->"
    return "✓", "✗", "→"


@dataclass
class _Shown:
    """A bot message on screen and what the handset knows of its delivery."""

    message_id: str
    text: str
    final: bool


@dataclass
class HandsetChat:
    """One handset of the sandbox, played from a terminal.

    Args:
        http: A client whose base URL is the sandbox.
        number: The handset's number (E.164).
        to: Our number it writes to; ``None``: the sandbox's default number.
        out: Where the conversation is printed.
    """

    http: httpx.AsyncClient
    number: str
    to: str | None = None
    out: TextIO = field(default_factory=lambda: sys.stdout)
    rcs: bool = True
    shown: dict[str, _Shown] = field(default_factory=dict)
    seen: set[str] = field(default_factory=set)
    choices: list[Choice] = field(default_factory=list)
    last_change: float = 0.0
    replies_since_send: int = 0
    _last_printed: str | None = None

    # ------------------------------------------------------------------ talking to the sandbox

    @property
    def url(self) -> str:
        return str(self.http.base_url).rstrip("/")

    async def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """One control-API call; the decoded JSON answer. Raises :class:`SandboxUnreachable`
        or :class:`SandboxRefused`."""
        try:
            response = await self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise SandboxUnreachable(
                f"cannot reach the sandbox at {self.url}: is `sinchbot serve` running?"
            ) from exc
        if response.status_code >= 400:
            try:
                body = response.json()
                reason = str(body.get("message") or body.get("error") or body)
                if body.get("details"):
                    reason += " (" + "; ".join(str(d) for d in body["details"]) + ")"
            except (ValueError, AttributeError):
                reason = response.text.strip()[:200] or response.reason_phrase
            raise SandboxRefused(response.status_code, reason)
        return response.json() if response.content else None

    def _handset_path(self, suffix: str = "") -> str:
        return f"/_sandbox/handsets/{quote(self.number, safe='+')}{suffix}"

    async def start(self) -> dict[str, Any]:
        """Check the sandbox is there, learn the handset's RCS capability and skip the
        messages it already has but the newest; returns the sandbox's description."""
        try:
            info = await self.call("GET", "/_sandbox")
        except SandboxRefused as exc:
            raise SandboxUnreachable(
                f"{self.url} is not a sandbox (GET /_sandbox answered HTTP {exc.status}): "
                "pass the sandbox's URL with --sandbox"
            ) from None
        handsets = await self.call("GET", "/_sandbox/handsets")
        for handset in handsets or []:
            if handset.get("number") == self.number:
                self.rcs = bool(handset.get("rcs", True))
        # Earlier messages are skipped but the newest: it may be a question waiting for an
        # answer (the demo's appointment reminder), shown by the first poll.
        for message in (await self._messages())[:-1]:
            self.seen.add(str(message.get("message_id")))
        return dict(info or {})

    async def _messages(self) -> list[dict[str, Any]]:
        items = await self.call("GET", "/_sandbox/messages", params={"destination": self.number})
        return [m for m in items or [] if isinstance(m, dict)]

    async def send(self, text: str, *, choice: Choice | None = None) -> None:
        """The handset sends ``text`` (or taps ``choice``), answering its latest message."""
        body: dict[str, Any] = {"content": text, "reply_to": "latest"}
        if self.to:
            body["to"] = self.to
        if choice is not None:
            body["choice"] = {"message_id": choice.message_id, "postback_data": choice.postback}
            body.pop("reply_to")
        await self.call("POST", self._handset_path("/messages"), json=body)
        self.replies_since_send = 0
        self.last_change = asyncio.get_running_loop().time()

    async def set_rcs(self, on: bool) -> None:
        await self.call("PUT", self._handset_path(), json={"rcs": on})
        self.rcs = on

    # ------------------------------------------------------------------ showing

    def print(self, line: str) -> None:
        print(line, file=self.out, flush=True)

    def _receipt(self, status: str, *, as_sms: bool = False) -> str:
        ok, bad, _ = _marks(self.out)
        if status == "delivered":
            return f"{ok} delivered" + (" (as SMS)" if as_sms else "")
        return f"{bad} {status}"

    async def poll(self) -> bool:
        """Look at the provider's messages to the handset once, print what is new; whether
        anything changed."""
        changed = False
        for message in await self._messages():
            message_id = str(message.get("message_id"))
            status = str(message.get("status") or "queued")
            final = status in FINAL_STATUSES
            as_sms = message.get("format") == "RCS" and message.get("delivered_as") == "SMS"
            if message_id not in self.seen:
                self.seen.add(message_id)
                self._show_new(message, status, final, as_sms)
                changed = True
                continue
            shown = self.shown.get(message_id)
            if shown is not None and final and not shown.final:
                shown.final = True
                receipt = self._receipt(status, as_sms=as_sms)
                if self._last_printed == message_id:
                    self.print(f"{INDENT}{receipt}")
                else:
                    self.print(f"{INDENT}{receipt}: {preview(shown.text, RECEIPT_PREVIEW)}")
                self._last_printed = None
                changed = True
        if changed:
            self.last_change = asyncio.get_running_loop().time()
        return changed

    def _show_new(self, message: dict[str, Any], status: str, final: bool, as_sms: bool) -> None:
        message_id = str(message.get("message_id"))
        lines, choices = render(message, rcs=self.rcs)
        suffix = self._receipt(status, as_sms=as_sms) if final else f"({status})"
        source = message.get("source")
        who = "bot" if not self.to or source in (None, self.to) else f"bot {source}"
        self.print(f"{who}> {lines[0]}  {suffix}")
        for line in lines[1:]:
            self.print(f"{INDENT}{line}")
        self.choices = choices  # as on a phone: only the latest message's choices show
        self.shown[message_id] = _Shown(message_id, lines[0], final)
        self._last_printed = message_id
        self.replies_since_send += 1

    @property
    def settled(self) -> bool:
        """A reply came since the last send and every message shown has its final receipt."""
        return self.replies_since_send > 0 and all(s.final for s in self.shown.values())

    async def settle(self, wait: float) -> None:
        """Poll until the replies have settled (a reply, every receipt final, then
        :data:`QUIET` seconds without news), or ``wait`` seconds have passed."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while True:
            await self.poll()
            now = loop.time()
            if now >= deadline or (self.settled and now - self.last_change >= QUIET):
                return
            await asyncio.sleep(min(POLL_INTERVAL, max(0.0, deadline - now)))

    # ------------------------------------------------------------------ input

    async def handle(self, line: str, *, echo: bool) -> str:
        """Act on one typed line: ``"quit"``, ``"sent"`` (something went to the bot) or
        ``"done"``."""
        text = line.strip()
        if not text:
            return "done"
        if text.startswith("/"):
            return await self._command(text[1:].strip())
        if echo:
            self.print(f"you> {text}")
        self._last_printed = None
        await self._send_or_report(text)
        return "sent"

    async def _command(self, text: str) -> str:
        word, _, rest = text.partition(" ")
        word = word.lower()
        if word in ("quit", "exit", "q"):
            return "quit"
        if word == "help":
            self.print(HELP)
            return "done"
        if word == "rcs":
            value = rest.strip().lower()
            if value not in ("on", "off"):
                self.print(f"RCS is {'on' if self.rcs else 'off'}; /rcs on or /rcs off switches it")
                return "done"
            await self.set_rcs(value == "on")
            self.print(
                "RCS on: RCS messages arrive as RCS"
                if self.rcs
                else "RCS off: RCS messages arrive as their SMS fallback"
            )
            return "done"
        if word.isdigit():
            return await self._tap(int(word))
        self.print(f"unknown command /{word}; {HELP}")
        return "done"

    async def _tap(self, number: int) -> str:
        if not self.choices:
            self.print("no choices to tap: the bot's latest message has none")
            return "done"
        if not 1 <= number <= len(self.choices):
            self.print(f"no choice [{number}]: pick 1 to {len(self.choices)}")
            return "done"
        choice = self.choices[number - 1]
        _, _, arrow = _marks(self.out)
        if choice.postback is None:
            self.print(f"you tapped [{number}] {choice.label} {arrow} opens {choice.action}")
            return "done"
        self.print(f"you> [{number}] {choice.label}")
        self._last_printed = None
        await self._send_or_report("", choice=choice)
        return "sent"

    async def _send_or_report(self, text: str, *, choice: Choice | None = None) -> None:
        try:
            await self.send(text, choice=choice)
        except SandboxRefused as exc:
            print(f"sinchbot: error: the sandbox refused the message: {exc}", file=sys.stderr)


def _read_lines(stream: TextIO, deliver: Callable[[str | None], None]) -> None:
    """Read ``stream`` line by line into ``deliver``; ``None`` at the end. Runs in a daemon
    thread, so a blocked read never keeps the process alive."""
    try:
        for line in iter(stream.readline, ""):
            deliver(line.rstrip("\r\n"))
    except (OSError, ValueError):
        pass
    deliver(None)


def _start_reader(stream: TextIO) -> asyncio.Queue[str | None]:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[str | None] = asyncio.Queue()

    def deliver(line: str | None) -> None:
        # RuntimeError: the chat ended (/quit) while this thread was reading.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(queue.put_nowait, line)

    threading.Thread(
        target=_read_lines, args=(stream, deliver), name="chat-stdin", daemon=True
    ).start()
    return queue


async def chat(url: str, number: str, to: str | None, wait: float) -> None:
    """Play the handset ``number`` of the sandbox at ``url`` until ``/quit`` or the end of
    standard input."""
    stdin = sys.stdin
    interactive = stdin.isatty()
    async with httpx.AsyncClient(base_url=url, timeout=REQUEST_TIMEOUT) as http:
        handset = HandsetChat(http, number, to)
        info = await handset.start()
        _, _, arrow = _marks(handset.out)
        ours = to or info.get("default_number") or "the bot"
        handset.print(
            f"handset {number} {arrow} {ours} through the sandbox at {url} "
            f"(RCS {'on' if handset.rcs else 'off'}); /help for commands"
        )
        await handset.poll()  # the newest earlier message, if any
        handset.replies_since_send = 0
        lines = _start_reader(stdin)
        while True:
            try:
                line = await asyncio.wait_for(lines.get(), POLL_INTERVAL)
            except TimeoutError:
                await handset.poll()
                continue
            if line is None:
                await handset.settle(wait)
                return
            outcome = await handset.handle(line, echo=not interactive)
            if outcome == "quit":
                return
            if outcome == "sent" and not interactive:
                # A script's next line answers this one's replies: wait for them.
                await handset.settle(wait)


def default_sandbox_url(settings: Settings) -> str:
    """``http://HOST:SINCHBOT_SANDBOX_PORT``: where ``sinchbot serve`` runs the demo sandbox."""
    if settings.sandbox_port == 0:
        raise UsageError(
            "SINCHBOT_SANDBOX_PORT is 0 (any free port): give the sandbox's URL with --sandbox; "
            "try 'sinchbot chat --help'"
        )
    host = settings.host
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.sandbox_port}"


def _sandbox_url(text: str) -> str:
    url = text.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise argparse.ArgumentTypeError(f"expected an http:// URL, got {text!r}")
    return url


def _chat(args: argparse.Namespace) -> int:
    """Play a handset of the sandbox from the terminal."""
    settings = load_settings()
    url = args.sandbox or default_sandbox_url(settings)
    region = settings.default_region
    number = normalise_phone(args.number, region)
    to = normalise_phone(args.to, region) if args.to else None
    try:
        asyncio.run(chat(url, number, to, args.wait))
    except SandboxRefused as exc:
        raise ConnectionError(f"the sandbox at {url} refused a call: {exc}") from None
    return EXIT_OK


def _add_chat(commands: Any) -> None:
    parser = command(
        commands,
        "chat",
        help="a terminal handset: text the bot through the sandbox, see replies and receipts",
        description=(
            "Play a handset of the sandbox (the demo that `sinchbot serve` runs without\n"
            "credentials, or `sinchbot sandbox`). Each line you type is a text from the\n"
            "handset; the bot's replies are shown as the provider gets them, then their\n"
            "receipts (✓ delivered, ✗ failed). RCS choices are listed as [1] Red [2] Blue:\n"
            "type /1 to tap one. /rcs on|off switches the handset's RCS; /quit ends.\n"
            "Piped input is a script: after each line the chat waits for the replies to\n"
            "settle (at most --wait seconds), and it exits at the end of the input."
        ),
        examples=[
            "sinchbot chat",
            "sinchbot chat --as +61491570158",
            "printf 'hi\\nY\\n' | sinchbot chat --as +61491570156 --wait 5",
            "sinchbot chat --sandbox http://127.0.0.1:9000 --to +61491570157",
        ],
        provider=False,
    )
    parser.add_argument(
        "--as",
        dest="number",
        default=DEFAULT_HANDSET,
        metavar="NUMBER",
        help="the handset's number (%(default)s)",
    )
    parser.add_argument(
        "--to",
        metavar="OUR_NUMBER",
        help="the bot's number to write to (default: the sandbox's default number)",
    )
    parser.add_argument(
        "--sandbox",
        type=_sandbox_url,
        metavar="URL",
        help="the sandbox (default: http://127.0.0.1:SINCHBOT_SANDBOX_PORT, port 8025)",
    )
    parser.add_argument(
        "--wait",
        type=positive_float,
        default=3.0,
        metavar="SECONDS",
        help="how long to wait for replies after a piped line and at the end (%(default)s)",
    )
    parser.set_defaults(handler=_chat)
