"""The provider's actions as commands: send, mms, rcs, status, cancel, senders, webhooks,
blacklist."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from typing import Any

from bot.cli.base import (
    Context,
    Parser,
    UsageError,
    command,
    fields,
    json_file,
    key_value,
    preview,
    provider_command,
    queued_lines,
    segment_line,
    status_word,
    table,
    timestamp,
)
from bot.sinch.client import split_recipients
from bot.sinch.models import ProviderMessage, RcsCard, RcsChoice, RcsMessage

# --------------------------------------------------------------------------- the shape of a command

Argument = tuple[tuple[str, ...], dict[str, Any]]
"""``add_argument``'s positional flags and keyword options."""


def _arg(*flags: str, **options: Any) -> Argument:
    return flags, options


def _action(
    commands: Any,
    name: str,
    handler: Any,
    *arguments: Argument,
    help: str,
    examples: Sequence[str] = (),
    description: str | None = None,
    check: Any = None,
) -> Parser:
    """One provider command: its parser in the house style, its arguments, its handler."""
    parser = command(commands, name, help=help, description=description, examples=examples)
    for flags, options in arguments:
        parser.add_argument(*flags, **options)
    parser.set_defaults(handler=provider_command(handler, check=check))
    return parser


_SCHEDULED = _arg(
    "--scheduled",
    type=timestamp,
    metavar="ISO8601",
    help="send at this time (without an offset: local time)",
)
_NUMBERS = _arg("numbers", nargs="+", metavar="NUMBER", help="a phone number")

# --------------------------------------------------------------------------- send / mms / rcs


def _add_routing(parser: Parser, *, to_required: bool = True) -> None:
    """Recipients, sender and delivery options shared by send, mms and rcs."""
    parser.add_argument(
        "--to",
        action="append",
        required=to_required,
        metavar="NUMBERS",
        help="recipient numbers, separated by spaces or commas; may repeat (max 100 per call)",
    )
    parser.add_argument(
        "--from",
        dest="source",
        metavar="NUMBER",
        help="sender: a number, short code or alphanumeric ID (default: the account's)",
    )
    parser.add_argument(
        "--delivery-report",
        action="store_true",
        default=None,
        help="ask for delivery reports",
    )
    parser.add_argument(
        "--callback-url", metavar="URL", help="where the provider pushes receipts and replies"
    )
    parser.add_argument(
        "--metadata",
        action="append",
        type=key_value("KEY"),
        metavar="KEY=VALUE",
        help="metadata returned with receipts and replies; may repeat (max 10)",
    )


def split_values(values: Sequence[str] | None) -> list[str]:
    """Numbers from repeated options, each holding one or more (space/comma-separated)."""
    return split_recipients(" ".join(values or []))


def _recipients(args: argparse.Namespace) -> list[str]:
    return split_values(args.to)


def _metadata(args: argparse.Namespace) -> dict[str, str] | None:
    return dict(args.metadata) if args.metadata else None


async def _message_text(args: argparse.Namespace) -> str:
    """``--message``, or standard input for ``--message -`` (one trailing newline dropped)."""
    text: str = args.message
    if text == "-":
        text = await asyncio.to_thread(sys.stdin.read)
        text = text.removesuffix("\n").removesuffix("\r")
    return text


def _add_message(parser: Parser) -> None:
    parser.add_argument(
        "-m",
        "--message",
        required=True,
        metavar="TEXT",
        help="the message text; '-' reads it from standard input",
    )


async def _send(ctx: Context) -> None:
    """Send an SMS to one or more numbers."""
    args = ctx.args
    text = await _message_text(args)
    numbers = _recipients(args)
    sent = await ctx.client.send_sms(
        numbers,
        text,
        source_number=args.source,
        delivery_report=args.delivery_report,
        callback_url=args.callback_url,
        metadata=_metadata(args),
        scheduled=args.scheduled,
        message_expiry=args.expiry,
    )
    ctx.emit(sent, lambda: [*queued_lines(sent, numbers), segment_line(text)])


def _add_send(commands: Any) -> None:
    parser = command(
        commands,
        "send",
        help="send an SMS to one or more numbers",
        examples=[
            'sinchbot send --to "+61491570156 +61491570157" -m "Your table is ready"',
            "sinchbot send --to 0491570156 --from +61491570157 -m Hi --delivery-report",
            "sinchbot send --to +61491570156 -m Reminder --metadata conv=42 --metadata step=2",
            "sinchbot send --to +61491570156 -m Later --scheduled 2030-01-31T09:30:00+11:00",
            "echo 'from a pipe' | sinchbot send --to +61491570156 -m - --json",
        ],
    )
    _add_routing(parser)
    _add_message(parser)
    parser.add_argument(*_SCHEDULED[0], **_SCHEDULED[1])
    parser.add_argument(
        "--expiry",
        type=timestamp,
        metavar="ISO8601",
        help="give up delivering after this time (without an offset: local time)",
    )
    parser.set_defaults(handler=provider_command(_send))


async def _mms(ctx: Context) -> None:
    """Send an MMS with media URLs."""
    args = ctx.args
    text = await _message_text(args)
    numbers = _recipients(args)
    sent = await ctx.client.send_mms(
        numbers,
        text,
        args.media,
        subject=args.subject,
        source_number=args.source,
        delivery_report=args.delivery_report,
        callback_url=args.callback_url,
        metadata=_metadata(args),
        scheduled=args.scheduled,
    )
    count = len(args.media)
    summary = f"MMS with {count} media item{'' if count == 1 else 's'}"
    ctx.emit(sent, lambda: [*queued_lines(sent, numbers), summary])


def _add_mms(commands: Any) -> None:
    parser = command(
        commands,
        "mms",
        help="send an MMS (text and media) to one or more numbers",
        examples=[
            "sinchbot mms --to +61491570156 -m 'Your ticket' --media https://example.com/t.png",
            "sinchbot mms --to +61491570156 -m Menu --subject Lunch "
            "--media https://example.com/1.jpg --media https://example.com/2.jpg",
        ],
    )
    _add_routing(parser)
    _add_message(parser)
    parser.add_argument(
        "--media",
        action="append",
        required=True,
        metavar="URL",
        help="URL of an image, audio or video file; may repeat",
    )
    parser.add_argument("--subject", metavar="TEXT", help="MMS subject (max 64 characters)")
    parser.add_argument(*_SCHEDULED[0], **_SCHEDULED[1])
    parser.set_defaults(handler=provider_command(_mms))


def _choice(text: str) -> RcsChoice:
    """``Label``, ``Label=postback`` or ``Label=https://url`` as an RCS choice."""
    label, sep, value = text.partition("=")
    label = label.strip()
    if not sep:
        return RcsChoice(text=label)
    if value.startswith(("http://", "https://")):
        return RcsChoice(text=label, url=value)
    return RcsChoice(text=label, postback_data=value or None)


def _cards(data: Any) -> list[RcsCard]:
    """A carousel file: a list of cards, or an object with a ``cards`` list."""
    if isinstance(data, dict) and "cards" in data:
        data = data["cards"]
    if not isinstance(data, list):
        raise ValueError("the carousel file must hold a JSON list of cards")
    return [RcsCard.model_validate(card) for card in data]


def _rcs_template(args: argparse.Namespace) -> dict[str, Any]:
    """The RCS message fields common to every recipient, from the options or --json-file."""
    choices = [_choice(c) for c in args.choice or []]
    body: dict[str, Any]
    if args.json_file is not None:
        if not isinstance(args.json_file, dict):
            raise ValueError("the --json-file must hold one JSON object (an RCS message)")
        body = dict(args.json_file)
        if choices:
            body["choices"] = [c.model_dump(exclude_none=True) for c in choices]
    elif args.text is not None:
        body = {"text": args.text, "choices": choices}
    elif args.card_title is not None:
        card = RcsCard(
            title=args.card_title,
            description=args.card_description,
            media_url=args.card_media,
            choices=choices,
        )
        body = {"card": card}
    else:
        body = {"carousel": _cards(args.carousel), "choices": choices}
    options = {
        "source_number": args.source,
        "callback_url": args.callback_url,
        "delivery_report": args.delivery_report,
        "metadata": _metadata(args),
        "fallback_text": args.fallback,
    }
    body.update({key: value for key, value in options.items() if value is not None})
    return body


def _check_rcs(args: argparse.Namespace) -> None:
    if (args.card_description or args.card_media) and args.card_title is None:
        raise UsageError(
            "--card-description and --card-media need --card-title; try 'sinchbot rcs --help'"
        )
    from_file = isinstance(args.json_file, dict) and args.json_file.get("destination_number")
    if not _recipients(args) and not from_file:
        raise UsageError("the following arguments are required: --to; try 'sinchbot rcs --help'")


async def _rcs(ctx: Context) -> None:
    """Send an RCS message: text, a card or a carousel, with suggested replies."""
    args = ctx.args
    template = _rcs_template(args)
    numbers = _recipients(args) or [str(template["destination_number"])]
    messages = [
        RcsMessage.model_validate({**template, "destination_number": ctx.number(number)})
        for number in numbers
    ]
    sent = await ctx.client.send_rcs(messages)
    fallback = messages[0].fallback_text

    def lines() -> list[str]:
        result = queued_lines(sent, [m.destination_number for m in messages])
        if fallback:
            result.append(f"SMS fallback: {segment_line(fallback)}")
        return result

    ctx.emit(sent, lines)


def _add_rcs(commands: Any) -> None:
    parser = command(
        commands,
        "rcs",
        help="send an RCS message (text, card or carousel, with suggested replies)",
        description=(
            "Send an RCS message: --text, a card (--card-title...), a --carousel or a whole\n"
            "message from --json-file. Choices are suggested replies: 'Label' (postback is\n"
            "the label), 'Label=postback' or 'Label=https://url' (opens the URL). Handsets\n"
            "without RCS get --fallback as an SMS."
        ),
        examples=[
            "sinchbot rcs --to +61491570156 --text 'Table for two?' --choice Yes --choice No=no "
            "--fallback 'Table for two? Reply Y or N'",
            "sinchbot rcs --to +61491570156 --card-title Pizza --card-description 'Large, $12' "
            "--card-media https://example.com/p.jpg --choice Order=order-pizza",
            "sinchbot rcs --to +61491570156 --carousel menu.json --choice 'Call us=tel-us'",
            "sinchbot rcs --to +61491570156 --json-file message.json",
        ],
    )
    _add_routing(parser, to_required=False)
    body = parser.add_mutually_exclusive_group(required=True)
    body.add_argument("--text", metavar="TEXT", help="a text message")
    body.add_argument("--card-title", metavar="TEXT", help="a rich card with this title")
    body.add_argument(
        "--carousel",
        type=json_file,
        metavar="FILE.json",
        help="a carousel: a JSON list of cards {title, description, media_url, choices}",
    )
    body.add_argument(
        "--json-file",
        type=json_file,
        metavar="FILE.json",
        help="a whole RCS message as JSON (the RcsMessage shape); --to fills destination_number",
    )
    parser.add_argument("--card-description", metavar="TEXT", help="the card's description")
    parser.add_argument("--card-media", metavar="URL", help="the card's image or video")
    parser.add_argument(
        "--choice",
        action="append",
        metavar="LABEL[=POSTBACK|=URL]",
        help="a suggested reply or link; may repeat",
    )
    parser.add_argument("--fallback", metavar="TEXT", help="SMS text for handsets without RCS")
    parser.set_defaults(handler=provider_command(_rcs, check=_check_rcs))


# --------------------------------------------------------------------------- status / cancel


def _status_lines(message: ProviderMessage) -> list[str]:
    metadata = ", ".join(f"{k}={v}" for k, v in (message.metadata or {}).items())
    return fields(
        [
            ("message id", message.message_id),
            ("status", status_word(message)),
            ("destination", message.destination_number),
            ("source", message.source_number),
            ("format", message.format),
            ("content", preview(message.content)),
            ("subject", message.subject),
            ("media", ", ".join(message.media or [])),
            ("scheduled", message.scheduled),
            ("expiry", message.message_expiry_timestamp),
            ("delivery report", message.delivery_report),
            ("callback url", message.callback_url),
            ("metadata", metadata),
        ]
    )


async def _status_command(ctx: Context) -> None:
    """Show a message's current status."""
    message = await ctx.client.message_status(ctx.args.message_id)
    ctx.emit(message, lambda: _status_lines(message))


def _add_status(commands: Any) -> None:
    _action(
        commands,
        "status",
        _status_command,
        _arg("message_id", metavar="ID", help="the message id printed by send"),
        help="show what the provider knows of a message",
        examples=["sinchbot status 04fe9a97-a579-43c5-bb1a-58ed29bf0a6a"],
    )


async def _cancel(ctx: Context) -> None:
    """Cancel a scheduled message."""
    message_id: str = ctx.args.message_id
    await ctx.client.cancel_message(message_id)
    ctx.emit({"message_id": message_id, "status": "cancelled"}, [f"cancelled  {message_id}"])


def _add_cancel(commands: Any) -> None:
    _action(
        commands,
        "cancel",
        _cancel,
        _arg("message_id", metavar="ID", help="the id of a scheduled message"),
        help="cancel a scheduled message",
        examples=["sinchbot cancel 04fe9a97-a579-43c5-bb1a-58ed29bf0a6a"],
    )


# --------------------------------------------------------------------------- senders


async def _senders(ctx: Context) -> None:
    """List the account's sender IDs."""
    result = await ctx.client.sender_ids()

    def lines() -> list[str]:
        if not result.senders:
            return ["no sender IDs"]
        rows = [
            [
                sender.number,
                sender.type or sender.display_type or "",
                sender.label or sender.display_name or "",
                "yes" if sender.is_default else "",
                "yes" if sender.mms_capable else "",
            ]
            for sender in result.senders
        ]
        return table(["NUMBER", "TYPE", "LABEL", "DEFAULT", "MMS"], rows)

    ctx.emit(result, lines)


def _add_senders(commands: Any) -> None:
    _action(
        commands,
        "senders",
        _senders,
        help="list the account's sender IDs (numbers, short codes, names)",
        examples=["sinchbot senders", "sinchbot senders --json"],
    )


# --------------------------------------------------------------------------- webhooks


def _webhook_rows(hooks: Sequence[Any]) -> list[str]:
    if not hooks:
        return ["no webhooks"]
    rows = [[h.id, h.method, h.url, ",".join(h.events)] for h in hooks]
    return table(["ID", "METHOD", "URL", "EVENTS"], rows)


def _check_subscribe(args: argparse.Namespace) -> None:
    if not args.messages_url and not args.receipts_url:
        raise UsageError(
            "give --messages-url, --receipts-url or both; try 'sinchbot webhooks subscribe --help'"
        )


async def _webhooks_subscribe(ctx: Context) -> None:
    """Register sinchbot's inbound-message and delivery-report webhooks."""
    args = ctx.args
    created = await ctx.client.subscribe(
        messages_url=args.messages_url,
        receipts_url=args.receipts_url,
        headers=dict(args.header) if args.header else None,
        retries=args.retries,
        retry_delay=args.retry_delay,
    )
    ctx.emit(
        created,
        lambda: [f"created  {h.id}  {h.url}  ({', '.join(h.events)})" for h in created],
    )


async def _webhooks_list(ctx: Context) -> None:
    """List the registered webhooks."""
    hooks = await ctx.client.all_webhooks()
    ctx.emit(hooks, lambda: _webhook_rows(hooks))


async def _webhooks_delete(ctx: Context) -> None:
    """Delete webhooks by id."""
    for webhook_id in ctx.args.webhook_ids:
        await ctx.client.delete_webhook(webhook_id)
    ids = list(ctx.args.webhook_ids)
    ctx.emit({"deleted": ids}, [f"deleted  {i}" for i in ids])


def _add_webhooks(commands: Any) -> None:
    group = command(
        commands,
        "webhooks",
        help="subscribe to, list and delete the provider's webhooks",
        examples=[
            "sinchbot webhooks subscribe --messages-url https://bot.example.com/webhooks/messages "
            "--receipts-url https://bot.example.com/webhooks/receipts",
            "sinchbot webhooks list",
            "sinchbot webhooks delete 8f7e2d1c-...",
        ],
    )
    actions = group.add_subparsers(dest="action", metavar="ACTION", required=True)

    subscribe = command(
        actions,
        "subscribe",
        help="register webhooks for inbound messages and delivery reports",
        description=(
            "Register sinchbot's webhooks: inbound SMS/MMS and opt-outs are pushed to\n"
            "--messages-url, delivery reports to --receipts-url."
        ),
        examples=[
            "sinchbot webhooks subscribe --messages-url https://bot.example.com/webhooks/messages "
            "--receipts-url https://bot.example.com/webhooks/receipts --header X-Token=s3cret",
        ],
    )
    subscribe.add_argument("--messages-url", metavar="URL", help="URL for inbound messages")
    subscribe.add_argument("--receipts-url", metavar="URL", help="URL for delivery reports")
    subscribe.add_argument(
        "--header",
        action="append",
        type=key_value("NAME"),
        metavar="NAME=VALUE",
        help="a header the provider sends with each push; may repeat",
    )
    subscribe.add_argument(
        "--retries", type=int, default=5, metavar="N", help="retries of a failed push (0-5)"
    )
    subscribe.add_argument(
        "--retry-delay",
        type=int,
        default=30,
        metavar="S",
        help="seconds between retries (5-60)",
    )
    subscribe.set_defaults(handler=provider_command(_webhooks_subscribe, check=_check_subscribe))

    _action(actions, "list", _webhooks_list, help="list the registered webhooks")
    _action(
        actions,
        "delete",
        _webhooks_delete,
        _arg("webhook_ids", nargs="+", metavar="ID", help="webhook id"),
        help="delete webhooks",
    )


# --------------------------------------------------------------------------- blacklist


async def _blacklist_list(ctx: Context) -> None:
    """List the numbers the provider will not send to."""
    numbers: list[str] = []
    token: str | None = None
    seen_tokens: set[str] = set()
    while True:
        page = await ctx.client.blacklist(token=token)
        numbers.extend(page.numbers)
        raw = (page.pagination or {}).get("next_token")
        token = str(raw) if raw else None
        if token is None or token in seen_tokens:
            break
        seen_tokens.add(token)
    ctx.emit({"numbers": numbers}, numbers or ["no blacklisted numbers"])


async def _blacklist_add(ctx: Context) -> None:
    """Blacklist numbers."""
    numbers = [ctx.number(n) for n in split_values(ctx.args.numbers)]
    await ctx.client.blacklist_add(numbers)
    ctx.emit({"added": numbers}, [f"blacklisted  {n}" for n in numbers])


async def _blacklist_remove(ctx: Context) -> None:
    """Take numbers off the blacklist."""
    numbers = [ctx.number(n) for n in split_values(ctx.args.numbers)]
    for number in numbers:
        await ctx.client.blacklist_remove(number)
    ctx.emit({"removed": numbers}, [f"removed  {n}" for n in numbers])


def _add_blacklist(commands: Any) -> None:
    group = command(
        commands,
        "blacklist",
        help="list, add and remove numbers the provider will not send to",
        examples=[
            "sinchbot blacklist list",
            "sinchbot blacklist add +61491570156 +61491570157",
            "sinchbot blacklist remove +61491570156",
        ],
    )
    actions = group.add_subparsers(dest="action", metavar="ACTION", required=True)
    _action(actions, "list", _blacklist_list, help="list blacklisted numbers")
    _action(actions, "add", _blacklist_add, _NUMBERS, help="blacklist numbers")
    _action(actions, "remove", _blacklist_remove, _NUMBERS, help="take numbers off the blacklist")
