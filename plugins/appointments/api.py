"""The appointments management API (mounted by the gateway behind the API's bearer token).

``POST /api/appointments``
    ``{"phone": "+61491570156", "name": "Sam", "starts_at": "2030-01-08T10:30:00+11:00",
    "remind_before": "PT24H"}`` (``remind_before`` optional: ISO 8601 or ``24h``/``90m``/
    ``2d``) → 201 ``{"id": "ap_...", "status": "scheduled", "remind_at": "..."}``. A phone
    without ``+`` is read in the default region; ``starts_at`` needs a UTC offset and must be
    in the future (422 otherwise, naming the field).
``POST /api/appointments/import``
    A CSV body (``Content-Type: text/csv``; columns ``phone,name,starts_at[,remind_before]``)
    → 200 ``{"created": [ids], "errors": [{"row": 3, "error": "..."}]}``: bad rows are
    reported (``row``: the line in the file, the header being row 1), good rows kept. A file
    that cannot be read as a whole (no header, unknown column) → 422, nothing created.
``GET /api/appointments/{id}``
    The appointment's document: ``status`` (scheduled, reminded, confirmed, cancelled,
    reschedule_requested, no_response, undeliverable), ``history``, ``reschedule``...
``GET /api/appointments?phone=&status=&limit=``
    ``{"appointments": [...], "truncated": false}``, by start time; at most ``limit``
    (default 100, at most 500).
``POST /api/appointments/{id}/cancel``
    → 202: the conversation cancels it in turn (no SMS is sent); 409 if already cancelled.

The API writes a new appointment's document, its index entry and the ``appointments.create``
command (one atomic batch in the phone's partition, after the index); every later change is
the conversation's (:mod:`plugins.appointments.flow`).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Final

import structlog
from aiohttp import web

from bot.api.routes import ApiError
from bot.core.http import BodyTooLarge, read_bounded
from bot.core.sms import InvalidPhoneNumber, normalise_phone
from bot.inbox.commands import command_fields
from bot.plugins import PluginHost
from bot.storage.keys import PartitionKeys, conversation_key, partition_of
from bot.storage.store import Batch, text
from plugins.appointments import csvimport
from plugins.appointments.flow import CANCEL, CREATE
from plugins.appointments.models import (
    INDEX,
    STATUSES,
    Appointment,
    InvalidAppointment,
    NewAppointment,
    appointment_key,
    dumps,
    new_document,
    ttl_ms,
    valid_id,
)
from plugins.appointments.settings import AppointmentSettings

__all__ = ["MAX_CSV_BYTES", "MAX_LIST", "AppointmentsApi", "routes"]

log = structlog.get_logger(__name__)

MAX_LIST: Final = 500
"""The most appointments one listing returns."""
MAX_SCAN: Final = 5000
"""The most documents one listing reads (``truncated`` says when there were more)."""
MAX_CSV_BYTES: Final = 1024 * 1024
"""The largest CSV import body."""
CSV_TYPES: Final = frozenset({"text/csv", "application/csv", "text/plain"})
FIELDS: Final = frozenset({"phone", "name", "starts_at", "remind_before"})
_READ_CHUNK: Final = 500
_WRITE_CHUNK: Final = 200


def routes(host: PluginHost) -> list[web.RouteDef]:
    """The plugin's routes, each behind the API's guard."""
    api = AppointmentsApi(host)
    return [
        web.post("/api/appointments", host.guard(api.create)),
        web.post("/api/appointments/import", host.guard(api.import_csv)),
        web.get("/api/appointments", host.guard(api.listing)),
        web.get("/api/appointments/{id}", host.guard(api.show)),
        web.post("/api/appointments/{id}/cancel", host.guard(api.cancel)),
    ]


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status)


class AppointmentsApi:
    """The route handlers, bound to the :class:`~bot.plugins.PluginHost`."""

    def __init__(self, host: PluginHost) -> None:
        self.host = host
        settings = host.settings
        self.settings = (
            settings if isinstance(settings, AppointmentSettings) else AppointmentSettings()
        )
        self.redis = host.store.redis

    # ------------------------------------------------------------------ creating

    def _check(self, raw: Mapping[str, Any], now: datetime) -> NewAppointment:
        return NewAppointment.check(
            raw,
            now=now,
            region=self.host.default_region,
            default_remind_before=self.settings.remind_before,
        )

    async def create(self, request: web.Request) -> web.StreamResponse:
        body = await self.host.read_json(request)
        if not isinstance(body, dict):
            raise ApiError(422, "body must be a JSON object")
        unknown = sorted(set(body) - FIELDS)
        if unknown:
            raise ApiError(
                422, f"{unknown[0][:40]}: unknown field (fields: {', '.join(sorted(FIELDS))})"
            )
        now = self.host.clock()
        try:
            new = self._check(body, now)
        except InvalidAppointment as exc:
            raise ApiError(422, str(exc)) from None
        doc = new_document(new, now=now, via="api")
        await self.store([doc], now)
        log.info("appointment created", appointment=doc["id"], remind_at=doc["remind_at"])
        return _json({"id": doc["id"], "status": doc["status"], "remind_at": doc["remind_at"]}, 201)

    async def import_csv(self, request: web.Request) -> web.StreamResponse:
        if request.content_type not in CSV_TYPES:
            raise ApiError(415, "Content-Type must be text/csv")
        raw = await _read_body(request, MAX_CSV_BYTES)
        try:
            content = raw.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise ApiError(400, "the CSV must be UTF-8 text") from None
        try:
            rows = csvimport.read_rows(content)
        except csvimport.CsvError as exc:
            raise ApiError(422, str(exc)) from None
        now = self.host.clock()
        docs: list[Appointment] = []
        errors: list[dict[str, Any]] = []
        for row in rows:
            if row.error is not None:
                errors.append({"row": row.row, "error": row.error})
                continue
            try:
                new = self._check(row.values, now)
            except InvalidAppointment as exc:
                errors.append({"row": row.row, "error": str(exc)})
                continue
            docs.append(new_document(new, now=now, via="csv import"))
        await self.store(docs, now)
        log.info("appointments imported", created=len(docs), errors=len(errors))
        return _json({"created": [doc["id"] for doc in docs], "errors": errors})

    def conversation(self, phone: str) -> str:
        """The conversation that owns the appointments of ``phone``."""
        return conversation_key(self.settings.from_number, phone)

    async def store(self, docs: Sequence[Appointment], now: datetime) -> None:
        """Index ``docs``, then write each with its ``appointments.create`` command (one
        atomic batch per partition: a document is never left without its command)."""
        if not docs:
            return
        partitions = self.host.partitions
        by_partition: dict[int, list[Appointment]] = {}
        for doc in docs:
            doc["conversation"] = self.conversation(str(doc["phone"]))
            by_partition.setdefault(partition_of(str(doc["phone"]), partitions), []).append(doc)
        await self.redis.hset(
            INDEX,
            mapping={str(doc["id"]): str(p) for p, group in by_partition.items() for doc in group},
        )
        for p, group in by_partition.items():
            keys = PartitionKeys(p)
            for start in range(0, len(group), _WRITE_CHUNK):
                await self._write(keys, group[start : start + _WRITE_CHUNK], now)

    async def _write(self, keys: PartitionKeys, docs: Sequence[Appointment], now: datetime) -> None:
        """Documents and their commands, in one atomic batch of one partition."""
        batch = Batch()
        for doc in docs:
            batch.set(appointment_key(keys, str(doc["id"])), dumps(doc), ttl_ms(doc, now))
            fields = command_fields(
                str(doc["conversation"]), CREATE, doc, command_id=uuid.uuid4().hex
            )
            batch.xadd(keys.inbox, fields)
        await batch.commit(self.host.store)

    # ------------------------------------------------------------------ reading

    async def find(self, appointment_id: str) -> Appointment:
        """The document of ``appointment_id``; 404 when unknown (or expired)."""
        if not valid_id(appointment_id):
            raise ApiError(404, "no such appointment")
        partition = text(await self.redis.hget(INDEX, appointment_id))
        if not partition.isdigit():
            raise ApiError(404, "no such appointment")
        raw = await self.redis.get(appointment_key(PartitionKeys(int(partition)), appointment_id))
        if raw is None:
            await self.redis.hdel(INDEX, appointment_id)  # its document expired
            raise ApiError(404, "no such appointment")
        return _loads(raw)

    async def show(self, request: web.Request) -> web.StreamResponse:
        return _json(await self.find(request.match_info["id"]))

    async def listing(self, request: web.Request) -> web.StreamResponse:
        query = request.query
        phone: str | None = None
        if query.get("phone", "").strip():
            try:
                phone = normalise_phone(query["phone"], self.host.default_region)
            except InvalidPhoneNumber:
                raise ApiError(
                    422, f"phone: {query['phone'][:40]!r} is not a valid phone number"
                ) from None
        status = query.get("status", "").strip() or None
        if status is not None and status not in STATUSES:
            raise ApiError(422, f"status: must be one of {', '.join(STATUSES)}")
        limit = _limit(query.get("limit"))
        wanted = None if phone is None else partition_of(phone, self.host.partitions)
        found: list[Appointment] = []
        stale: list[str] = []
        read = 0
        truncated = False
        pending: list[tuple[str, int]] = []

        async def fetch() -> None:
            pipe = self.redis.pipeline(transaction=False)
            for appointment_id, p in pending:
                pipe.get(appointment_key(PartitionKeys(p), appointment_id))
            for (appointment_id, _), raw in zip(pending, await pipe.execute(), strict=True):
                if raw is None:
                    stale.append(appointment_id)
                    continue
                doc = _loads(raw)
                if (phone is None or doc.get("phone") == phone) and (
                    status is None or doc.get("status") == status
                ):
                    found.append(doc)
            pending.clear()

        async for field, value in self.redis.hscan_iter(INDEX, count=_READ_CHUNK):
            partition = text(value)
            if not partition.isdigit() or (wanted is not None and int(partition) != wanted):
                continue
            if read >= MAX_SCAN:
                truncated = True
                break
            read += 1
            pending.append((text(field), int(partition)))
            if len(pending) >= _READ_CHUNK:
                await fetch()
        if pending:
            await fetch()
        if stale:
            await self.redis.hdel(INDEX, *stale)
        found.sort(key=lambda doc: (_start_key(doc), str(doc.get("id"))))
        truncated = truncated or len(found) > limit
        return _json({"appointments": found[:limit], "truncated": truncated})

    # ------------------------------------------------------------------ cancelling

    async def cancel(self, request: web.Request) -> web.StreamResponse:
        doc = await self.find(request.match_info["id"])
        if doc.get("status") == "cancelled":
            raise ApiError(409, "the appointment is already cancelled")
        conversation = str(doc.get("conversation") or self.conversation(str(doc["phone"])))
        our_number = conversation.rsplit(":", 1)[0]
        await self.host.post_command(
            str(doc["phone"]),
            CANCEL,
            {"id": doc["id"], "via": "api"},
            our_number=None if our_number == "default" else our_number,
        )
        return _json({"id": doc["id"], "status": doc["status"], "cancel": "requested"}, 202)


def _loads(raw: bytes | str) -> Appointment:
    value = json.loads(raw)
    return value if isinstance(value, dict) else {}


def _start_key(doc: Appointment) -> float:
    try:
        return datetime.fromisoformat(str(doc["starts_at"])).timestamp()
    except (KeyError, ValueError):
        return 0.0


def _limit(value: str | None) -> int:
    if value is None or value == "":
        return 100
    if not value.isdigit() or not 1 <= int(value) <= MAX_LIST:
        raise ApiError(422, f"limit: must be a whole number from 1 to {MAX_LIST}")
    return int(value)


async def _read_body(request: web.Request, limit: int) -> bytes:
    """The request body, at most ``limit`` bytes (413 otherwise)."""
    try:
        return await read_bounded(request, limit)
    except BodyTooLarge:
        raise ApiError(413, "body too large") from None
