"""``sinchbot appointments``: the appointments plugin's API from the command line.

The commands talk to a running gateway's management API (``--url``, default
``SINCHBOT_PUBLIC_URL`` or ``http://SINCHBOT_HOST:SINCHBOT_PORT``; ``--token``, default
``SINCHBOT_API_TOKEN``), which must have the ``appointments`` plugin enabled::

    sinchbot appointments add --phone 0491570156 --name Sam --at 2030-01-08T10:30+11:00
    sinchbot appointments show ap_0123456789abcdef0123
    sinchbot appointments list --phone +61491570156 --status reminded
    sinchbot appointments import bookings.csv
    sinchbot appointments cancel ap_0123456789abcdef0123

Errors are one line; the exit status is 0 on success, 1 when the gateway refused or could
not be reached (and for an import with bad rows: the good rows are kept), 2 for a wrong
command line.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

import httpx

from bot.cli.base import (
    EXIT_ERROR,
    EXIT_OK,
    PROG,
    Parser,
    command,
    fields,
    preview,
    table,
    timestamp,
)
from bot.core.config import load_settings

__all__ = ["GatewayApi", "GatewayError", "_add_appointments"]

TIMEOUT: Final = 30.0
"""Seconds one API call may take."""


class GatewayError(Exception):
    """The gateway refused a request or could not be reached (one line)."""


class GatewayApi:
    """A small synchronous client of the gateway's appointments API."""

    def __init__(self, url: str, token: str | None, *, timeout: float = TIMEOUT) -> None:
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def __enter__(self) -> GatewayApi:
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.close()

    def call(self, method: str, path: str, **options: Any) -> Any:
        """One request; the decoded JSON answer, or :class:`GatewayError`."""
        try:
            response = self.http.request(method, path, **options)
        except httpx.TimeoutException:
            raise GatewayError(f"the gateway at {self.url} did not answer in time") from None
        except httpx.HTTPError as exc:
            raise GatewayError(
                f"cannot reach the gateway at {self.url}: {exc or type(exc).__name__} "
                "(is 'sinchbot serve' running? see --url)"
            ) from None
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code == 404 and not isinstance(body, dict):
            raise GatewayError(
                f"the gateway at {self.url} has no appointments API "
                "(is the appointments plugin enabled?)"
            )
        if response.status_code >= 400:
            message = body.get("error") if isinstance(body, dict) else None
            raise GatewayError(
                f"the gateway answered HTTP {response.status_code}: "
                f"{message or response.reason_phrase}"
            )
        return body


def _client(args: argparse.Namespace) -> GatewayApi:
    url: str | None = args.url
    token: str | None = args.token
    if url is None or token is None:
        settings = load_settings()
        url = url or settings.gateway_url
        if token is None and settings.api_token is not None:
            token = settings.api_token.get_secret_value()
    return GatewayApi(url, token)


Action = Callable[[GatewayApi, argparse.Namespace], int]


def _run(action: Action) -> Callable[[argparse.Namespace], int]:
    """An argparse handler calling ``action`` with a client; gateway errors as one line."""

    def run(args: argparse.Namespace) -> int:
        try:
            with _client(args) as api:
                return action(api, args)
        except GatewayError as exc:
            print(f"{PROG}: error: {' '.join(str(exc).split())}", file=sys.stderr)
            return EXIT_ERROR

    return run


def _emit(args: argparse.Namespace, data: Any, lines: Callable[[], list[str]]) -> None:
    if args.json:
        print(json.dumps(data, indent=2, ensure_ascii=False))
    else:
        for line in lines():
            print(line)


def _path(appointment_id: str) -> str:
    return f"/api/appointments/{quote(appointment_id, safe='')}"


# --------------------------------------------------------------------------- actions


def _add(api: GatewayApi, args: argparse.Namespace) -> int:
    body: dict[str, Any] = {
        "phone": args.phone,
        "name": args.name,
        "starts_at": args.at.isoformat(),
    }
    if args.remind_before is not None:
        body["remind_before"] = args.remind_before
    created = api.call("POST", "/api/appointments", json=body)
    _emit(
        args,
        created,
        lambda: [f"{created['status']}  {created['id']}  reminder at {created.get('remind_at')}"],
    )
    return EXIT_OK


def _show_lines(doc: dict[str, Any]) -> list[str]:
    request = doc.get("reschedule") or {}
    wanted = request.get("slot") or request.get("text") if isinstance(request, dict) else None
    lines = fields(
        [
            ("id", doc.get("id")),
            ("status", doc.get("status")),
            ("phone", doc.get("phone")),
            ("name", doc.get("name")),
            ("starts at", doc.get("starts_at")),
            ("remind before", doc.get("remind_before")),
            ("remind at", doc.get("remind_at")),
            ("reschedule to", preview(wanted) if wanted else None),
        ]
    )
    history = doc.get("history") or []
    if history:
        lines.append("history")
        lines.extend(
            f"  {item.get('at', '')}  {item.get('status', '')}  {item.get('note', '')}".rstrip()
            for item in history
        )
    return lines


def _show(api: GatewayApi, args: argparse.Namespace) -> int:
    doc = api.call("GET", _path(args.id))
    _emit(args, doc, lambda: _show_lines(doc))
    return EXIT_OK


def _list(api: GatewayApi, args: argparse.Namespace) -> int:
    params = {"limit": str(args.limit)}
    if args.phone:
        params["phone"] = args.phone
    if args.status:
        params["status"] = args.status
    result = api.call("GET", "/api/appointments", params=params)
    docs = result.get("appointments") or []

    def lines() -> list[str]:
        if not docs:
            return ["no appointments"]
        rows = [
            [
                str(d.get("id", "")),
                str(d.get("status", "")),
                str(d.get("starts_at", "")),
                str(d.get("phone", "")),
                preview(str(d.get("name", "")), 30) or "",
            ]
            for d in docs
        ]
        out = table(["ID", "STATUS", "STARTS", "PHONE", "NAME"], rows)
        if result.get("truncated"):
            out.append(f"(more than {len(docs)}: narrow with --phone or --status, or --limit)")
        return out

    _emit(args, result, lines)
    return EXIT_OK


def _import(api: GatewayApi, args: argparse.Namespace) -> int:
    path: str = args.file
    try:
        content = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    except OSError as exc:
        raise GatewayError(f"cannot read {path!r}: {exc.strerror or exc}") from None
    result = api.call(
        "POST",
        "/api/appointments/import",
        content=content,
        headers={"Content-Type": "text/csv; charset=utf-8"},
    )
    created = result.get("created") or []
    errors = result.get("errors") or []

    def lines() -> list[str]:
        plural = "" if len(created) == 1 else "s"
        out = [f"created  {len(created)} appointment{plural}"]
        out.extend(f"  {appointment_id}" for appointment_id in created)
        if errors:
            out.append(f"rejected  {len(errors)} row{'' if len(errors) == 1 else 's'}")
            out.extend(f"  row {e.get('row')}: {e.get('error')}" for e in errors)
        return out

    _emit(args, result, lines)
    return EXIT_ERROR if errors else EXIT_OK


def _cancel(api: GatewayApi, args: argparse.Namespace) -> int:
    result = api.call("POST", _path(args.id) + "/cancel")
    _emit(args, result, lambda: [f"cancel requested  {result.get('id')}"])
    return EXIT_OK


# --------------------------------------------------------------------------- parser


def _common(parser: Parser) -> None:
    group = parser.add_argument_group("gateway options")
    group.add_argument(
        "--url",
        metavar="URL",
        help="the gateway (default: SINCHBOT_PUBLIC_URL, else http://SINCHBOT_HOST:SINCHBOT_PORT)",
    )
    group.add_argument(
        "--token", metavar="TOKEN", help="the API's bearer token (default: SINCHBOT_API_TOKEN)"
    )
    group.add_argument("--json", action="store_true", help="print the API's answer as JSON")


def _add_appointments(commands: Any) -> None:
    """``sinchbot appointments add|show|list|import|cancel``."""
    group = command(
        commands,
        "appointments",
        help="add, import, list and cancel appointment reminders (the appointments plugin)",
        description=(
            "Manage the appointments plugin through a running gateway's API. The gateway\n"
            "texts a reminder before each appointment (Reply Y to confirm, N to cancel, R\n"
            "to reschedule) and records the answer as the appointment's status."
        ),
        examples=[
            "sinchbot appointments add --phone 0491570156 --name Sam "
            "--at 2030-01-08T10:30:00+11:00",
            "sinchbot appointments add --phone +61491570156 --name Sam "
            "--at 2030-01-08T10:30:00+11:00 --remind-before 2h",
            "sinchbot appointments show ap_0123456789abcdef0123",
            "sinchbot appointments list --status confirmed",
            "sinchbot appointments import bookings.csv",
        ],
        provider=False,
    )
    actions = group.add_subparsers(dest="action", metavar="ACTION", required=True)

    add = command(actions, "add", help="create an appointment", provider=False)
    add.add_argument("--phone", required=True, metavar="NUMBER", help="the handset's number")
    add.add_argument("--name", required=True, metavar="NAME", help="who the appointment is for")
    add.add_argument(
        "--at",
        required=True,
        type=timestamp,
        metavar="ISO8601",
        help="when it starts (without an offset: local time)",
    )
    add.add_argument(
        "--remind-before",
        metavar="DURATION",
        help="when the reminder goes, e.g. 24h, 90m, P1D (default: the plugin's setting)",
    )
    _common(add)
    add.set_defaults(handler=_run(_add))

    show = command(actions, "show", help="show an appointment's status and history", provider=False)
    show.add_argument("id", metavar="ID", help="the appointment's id")
    _common(show)
    show.set_defaults(handler=_run(_show))

    listing = command(actions, "list", help="list appointments by start time", provider=False)
    listing.add_argument("--phone", metavar="NUMBER", help="only this number's")
    listing.add_argument(
        "--status",
        metavar="STATUS",
        help="only this status (scheduled, reminded, confirmed, cancelled, "
        "reschedule_requested, no_response, undeliverable)",
    )
    listing.add_argument(
        "--limit", type=int, default=100, metavar="N", help="at most N (1-500, %(default)s)"
    )
    _common(listing)
    listing.set_defaults(handler=_run(_list))

    load = command(
        actions,
        "import",
        help="create appointments from a CSV file",
        description=(
            "Create appointments from a CSV file with a header row: phone,name,starts_at and\n"
            "optionally remind_before. Bad rows are reported (exit status 1); good rows are\n"
            "kept."
        ),
        provider=False,
    )
    load.add_argument("file", metavar="FILE.csv", help="the CSV file ('-' for standard input)")
    _common(load)
    load.set_defaults(handler=_run(_import))

    cancel = command(
        actions, "cancel", help="cancel an appointment (no SMS is sent)", provider=False
    )
    cancel.add_argument("id", metavar="ID", help="the appointment's id")
    _common(cancel)
    cancel.set_defaults(handler=_run(_cancel))
