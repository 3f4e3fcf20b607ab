"""The sandbox as an aiohttp application: the provider's REST API (spec §1 to §7) plus the
control API under ``/_sandbox/`` (see :mod:`bot.sandbox.control`).

Every provider route needs Basic or HMAC credentials (401 ``{"message": "Invalid
authentication credentials"}`` otherwise) and passes through the fault injector and, when
configured, the scaled call limit (:mod:`bot.sandbox.throttle`); the control API needs none
of them. Unknown routes answer 404 and wrong methods 405, both as JSON.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import phonenumbers
from aiohttp import web

from bot.sandbox import control, velocity
from bot.sandbox.appkeys import CONFIG, DELIVERY, FAULTS, STATE
from bot.sandbox.config import SandboxConfig
from bot.sandbox.delivery import Delivery
from bot.sandbox.faults import DROPPED, Faults
from bot.sandbox.httputil import error_middleware, json_body, json_error, respond
from bot.sandbox.payloads import dr_push, reply_object
from bot.sandbox.schemas import (
    BadRequest,
    parse_connector_mms,
    parse_connector_sms,
    parse_messages,
    parse_rcs,
)
from bot.sandbox.state import MessageRequest, SandboxState
from bot.sandbox.throttle import CallThrottle
from bot.sinch.auth import verify
from bot.sinch.models import E164_PATTERN, WebhookSpec, format_timestamp
from bot.sinch.signatures import SigningKey, normalise_digest
from bot.sinch.templates import DR_EVENTS, MO_EVENTS

__all__ = ["CONTROL_PREFIX", "THROTTLE", "create_app"]

CONTROL_PREFIX = "/_sandbox"
MAX_BODY = 8 * 1024 * 1024
MAX_ACCOUNTS_TRACKED = 1000

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Parser = Callable[[Any], list[MessageRequest]]


def _is_control(request: web.Request) -> bool:
    path = request.path
    return path == CONTROL_PREFIX or path.startswith(CONTROL_PREFIX + "/")


# --------------------------------------------------------------------------- middlewares


@web.middleware
async def _stats_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count provider calls by route, and record every send call (time, size, status)."""
    if _is_control(request):
        return await handler(request)
    state = request.app[STATE]
    resource = request.match_info.route.resource
    canonical = resource.canonical if resource is not None else "(unmatched)"
    state.stats.api_calls[f"{request.method} {canonical}"] += 1
    entry: dict[str, Any] | None = None
    if request.method == "POST" and canonical in request.app[_SEND_PATHS]:
        entry = {
            "time": time.time(),
            "path": canonical,
            "messages": 0,
            "status": None,
            "dropped": False,
        }
        state.stats.send_calls.append(entry)
        request[_SEND_ENTRY] = entry
    response = await handler(request)
    if entry is not None:
        entry["status"] = response.status
        entry["dropped"] = request.get(DROPPED, False)
    return response


@web.middleware
async def _cors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The control API may be called from a browser page on another origin (the web
    simulator); it holds nothing secret."""
    if not _is_control(request):
        return await handler(request)
    if request.method == "OPTIONS":
        response: web.StreamResponse = web.Response(status=204)
    else:
        response = await handler(request)
    response.headers["Access-Control-Allow-Origin"] = "*"
    response.headers["Access-Control-Allow-Methods"] = "GET, POST, PUT, DELETE, OPTIONS"
    response.headers["Access-Control-Allow-Headers"] = "Content-Type"
    return response


@web.middleware
async def _fault_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if _is_control(request):
        return await handler(request)
    return await request.app[FAULTS].apply(request, handler)


@web.middleware
async def _auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if _is_control(request) or request.match_info.http_exception is not None:
        return await handler(request)
    config = request.app[CONFIG]
    body = await request.read()
    api_key = verify(
        request.headers,
        method=request.method,
        path_qs=request.raw_path,
        body=body,
        credentials=config.credentials,
    )
    if api_key is None:
        return json_error(401, "Invalid authentication credentials")
    request[_API_KEY] = api_key
    account = request.headers.get("Account") or None
    if account is not None and not account.isprintable():  # bytes not UTF-8, controls
        return json_error(400, "Invalid Account header")
    request[_ACCOUNT] = account
    if account is not None:
        accounts = request.app[STATE].stats.accounts
        if account in accounts or len(accounts) < MAX_ACCOUNTS_TRACKED:
            accounts[account] += 1
    return await handler(request)


@web.middleware
async def _throttle_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The scaled call limit (``SandboxConfig.throttle``), after authentication: a call
    without valid credentials is refused 401 and not counted."""
    throttle = request.app[THROTTLE]
    if throttle is None or _is_control(request) or request.match_info.http_exception is not None:
        return await handler(request)
    wait = throttle.admit(f"{request[_API_KEY]}|{request[_ACCOUNT] or ''}")
    if wait:
        return web.json_response(
            {"message": "Too many requests"}, status=429, headers={"Retry-After": f"{wait:g}"}
        )
    return await handler(request)


THROTTLE: web.AppKey[CallThrottle | None] = web.AppKey("sandbox_throttle")
"""The scaled call limit, when the configuration sets one."""
_API_KEY = web.RequestKey("sandbox_api_key", str)
_ACCOUNT: web.RequestKey[str | None] = web.RequestKey("sandbox_account")
_SEND_ENTRY: web.RequestKey[dict[str, Any]] = web.RequestKey("sandbox_send_call")
_SEND_PATHS = web.AppKey("sandbox_send_paths", frozenset)


# --------------------------------------------------------------------------- helpers


def _int_param(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"{name} property value is invalid") from None
    if not low <= value <= high:
        raise BadRequest(f"{name} must be between {low} and {high}")
    return value


def _token_page(
    request: web.Request, items: Sequence[Any], *, default_size: int = 20, max_size: int = 100
) -> tuple[list[Any], str | None, int]:
    """Token pagination: the token is an opaque offset."""
    size = _int_param(request, "page_size", default_size, 1, max_size)
    token = request.query.get("token") or request.query.get("page_token") or "0"
    if not token.isdigit():
        raise BadRequest("token is invalid")
    offset = int(token)
    page = list(items[offset : offset + size])
    following = str(offset + size) if offset + size < len(items) else None
    return page, following, size


def _account_id(request: web.Request) -> str:
    return request.get(_ACCOUNT) or request.app[CONFIG].account_id


def _number_id(number: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"sandbox-number:{number}"))


def _region(number: str) -> str:
    try:
        parsed = phonenumbers.parse(number)
    except phonenumbers.NumberParseException:
        return "AU"
    region = phonenumbers.region_code_for_number(parsed)
    if region is None:  # a fictional or unallocated number: go by its country code
        region = phonenumbers.region_code_for_country_code(parsed.country_code or 0)
    return region if region and region != "ZZ" else "AU"


def _require_e164(numbers: Sequence[Any], pointer: str) -> list[str]:
    details = [
        f"{pointer}/{i}: number must be in international E.164 format"
        for i, n in enumerate(numbers)
        if not isinstance(n, str) or not E164_PATTERN.match(n)
    ]
    if details:
        raise BadRequest("Bad Request", details=details)
    return [str(n) for n in numbers]


# --------------------------------------------------------------------------- messages


def _send_handler(parse: Parser) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        state = request.app[STATE]
        try:
            requests = parse(await json_body(request, send=True))
        except BadRequest:
            state.stats.messages["rejected_calls"] += 1
            raise
        messages = state.accept(requests, api_key=request[_API_KEY], account=request[_ACCOUNT])
        request.app[DELIVERY].submit(messages)
        entry = request.get(_SEND_ENTRY)
        if entry is not None:
            entry["messages"] = len(messages)
        return respond(
            {
                "messages": [
                    {**m.request.wire, "message_id": m.message_id, "status": "queued"}
                    for m in messages
                ]
            },
            status=202,
        )

    return handler


async def _get_message(request: web.Request) -> web.StreamResponse:
    message = request.app[STATE].message(request.match_info["message_id"])
    return respond(message.to_api())


async def _update_message(request: web.Request) -> web.StreamResponse:
    message_id = request.match_info["message_id"]
    request.app[STATE].message(message_id)  # 404 first
    body = await json_body(request)
    if not isinstance(body, dict) or body.get("status") != "cancelled" or len(body) != 1:
        raise BadRequest('The only supported update is {"status": "cancelled"}.')
    try:
        request.app[DELIVERY].cancel(message_id)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    return web.Response(status=200)


# --------------------------------------------------------------------------- polling


async def _get_replies(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    return respond(
        {"replies": [reply_object(i, state.config) for i in state.unconfirmed_replies()]}
    )


async def _get_reports(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    return respond(
        {"delivery_reports": [dr_push(r, state.config) for r in state.unconfirmed_reports()]}
    )


def _confirm_handler(field: str, confirm: Callable[[SandboxState, list[str]], int]) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        body = await json_body(request)
        ids = body.get(field) if isinstance(body, dict) else None
        if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
            raise BadRequest(f"{field} must be an array of 1 to 100 ids")
        if len(ids) > 100:
            raise BadRequest(f"at most 100 {field} can be confirmed at once")
        confirm(request.app[STATE], ids)
        return web.Response(status=202, text="", content_type="text/plain")

    return handler


# --------------------------------------------------------------------------- webhooks API


def _validate_webhook(body: dict[str, Any]) -> dict[str, Any]:
    spec = WebhookSpec.model_validate(body)
    if spec.template is not None:
        try:
            velocity.parse(spec.template)
        except velocity.TemplateError as exc:
            raise BadRequest(f"Invalid template: {exc}") from None
    return spec.to_api()


def _create_webhook_handler(default_events: Sequence[str]) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        body = await json_body(request)
        if not isinstance(body, dict):
            raise BadRequest("The body must be a webhook object.")
        if "events" not in body:  # the connector subscribes without events
            body = {**body, "events": list(default_events)}
        record = request.app[STATE].add_webhook(_validate_webhook(body))
        return respond(record.to_api(), status=201)

    return handler


async def _list_webhooks(request: web.Request) -> web.StreamResponse:
    page = _int_param(request, "page", 0, 0, 1_000_000)
    size = _int_param(request, "page_size", 10, 1, 1000)
    records = request.app[STATE].webhook_page(page, size)
    return respond({"page": page, "pageSize": size, "pageData": [r.to_api() for r in records]})


async def _update_webhook(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    record = state.webhook(request.match_info["webhook_id"])
    body = await json_body(request)
    if not isinstance(body, dict):
        raise BadRequest("The body must be an object of webhook fields.")
    changes = {k: v for k, v in body.items() if v is not None}
    if not changes:
        raise BadRequest("At least one field must be given.")
    spec = _validate_webhook({**record.spec, **changes})
    return respond(state.update_webhook(record.id, spec).to_api())


async def _delete_webhook(request: web.Request) -> web.StreamResponse:
    request.app[STATE].delete_webhook(request.match_info["webhook_id"])
    return web.Response(status=204)


# --------------------------------------------------------------------------- senders


async def _sender_ids(request: web.Request) -> web.StreamResponse:
    config = request.app[CONFIG]
    senders = [
        {
            "display_type": "NUMBER",
            "is_default": index == 0,
            "label": f"Sandbox number {index + 1}",
            "mms_capable": True,
            "number": number,
            "display_name": number,
            "number_id": _number_id(number),
            "source_type": "DEDICATED",
            "type": "INTERNATIONAL",
            "number_status": "ACTIVE",
        }
        for index, number in enumerate(config.numbers)
    ]
    return respond(
        {
            "pagination": {
                "page": 1,
                "page_size": len(senders),
                "total_count": len(senders),
                "page_count": 1,
            },
            "default_sender": {
                "type": "INTERNATIONAL",
                "number": config.default_number,
                "source_type": "DEDICATED",
                "mms_capable": True,
            },
            "senders": senders,
            "account_id": _account_id(request),
            "vendor_id": config.vendor_id,
        }
    )


async def _account(request: web.Request) -> web.StreamResponse:
    config = request.app[CONFIG]
    return respond(
        {
            "account_id": _account_id(request),
            "vendor_id": config.vendor_id,
            "name": "Sinch sandbox account",
            "status": "ACTIVE",
            "country": _region(config.default_number),
        }
    )


async def _sender_addresses(request: web.Request) -> web.StreamResponse:
    config = request.app[CONFIG]
    created = format_timestamp(request.app[_STARTED])
    items = [
        {
            "id": _number_id(number),
            "sender_address": number,
            "sender_address_type": "INTERNATIONAL",
            "usage_type": "DEDICATED",
            "destination_countries": [_region(number)],
            "reason": None,
            "label": f"Sandbox number {index + 1}",
            "account_id": _account_id(request),
            "created_date": created,
            "last_modified_date": created,
            "display_status": "APPROVED",
        }
        for index, number in enumerate(config.numbers)
    ]
    for name in ("sender_address", "sender_address_type", "usage_type"):
        wanted = request.query.get(name)
        if wanted:
            items = [item for item in items if item[name] == wanted]
    page, following, size = _token_page(request, items)
    return respond({"data": page, "pagination": {"page_size": size, "next_token": following}})


async def _dedicated_assignments(request: web.Request) -> web.StreamResponse:
    config = request.app[CONFIG]
    items = [
        {
            "assignment": {
                "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"sandbox-assignment:{number}")),
                "number_id": _number_id(number),
                "label": f"Sandbox number {index + 1}",
                "metadata": {},
            },
            "number": {
                "id": _number_id(number),
                "phone_number": number,
                "country": _region(number),
                "type": "MOBILE",
                "classification": "BRONZE",
                "capabilities": ["SMS", "MMS"],
            },
        }
        for index, number in enumerate(config.numbers)
    ]
    page, following, size = _token_page(request, items)
    return respond({"data": page, "pagination": {"page_size": size, "next_token": following}})


async def _credits(request: web.Request) -> web.StreamResponse:
    return respond({"credits": request.app[STATE].credits(), "expiry_date": None})


# --------------------------------------------------------------------------- blacklist

_BLACKLIST_URI = "/v1/number_authorisation/mt/blacklist"


async def _get_blacklist(request: web.Request) -> web.StreamResponse:
    numbers = list(request.app[STATE].blacklist)
    page, following, _ = _token_page(request, numbers, default_size=100, max_size=100)
    return respond(
        {"uri": _BLACKLIST_URI, "numbers": page, "pagination": {"next_token": following}}
    )


async def _add_blacklist(request: web.Request) -> web.StreamResponse:
    body = await json_body(request)
    numbers = body.get("numbers") if isinstance(body, dict) else None
    if not isinstance(numbers, list) or not 1 <= len(numbers) <= 10:
        raise BadRequest("numbers must be an array of 1 to 10 numbers")
    valid = _require_e164(numbers, "/numbers")
    added = request.app[STATE].blacklist_add(valid)
    return respond({"uri": _BLACKLIST_URI, "numbers": valid}, status=201 if added else 200)


async def _delete_blacklist(request: web.Request) -> web.StreamResponse:
    request.app[STATE].blacklist_remove(request.match_info["number"])
    return web.Response(status=200)


async def _is_authorised(request: web.Request) -> web.StreamResponse:
    raw = request.match_info["numbers"]
    numbers = _require_e164([n.strip() for n in raw.split(",") if n.strip()], "/numbers")
    if not numbers:
        raise BadRequest("give one or more numbers")
    blacklist = request.app[STATE].blacklist
    return respond(
        {
            "uri": f"/v1/number_authorisation/is_authorised/{raw}",
            "numbers": [{"number": n, "authorised": n not in blacklist} for n in numbers],
        }
    )


# --------------------------------------------------------------------------- signature keys


def _keys_handler(handler: Handler) -> Handler:
    async def wrapper(request: web.Request) -> web.StreamResponse:
        if not request.app[CONFIG].secure_callbacks:
            return json_error(403, "This feature has not been enabled in your account.")
        return await handler(request)

    return wrapper


async def _create_key(request: web.Request) -> web.StreamResponse:
    body = await json_body(request)
    if not isinstance(body, dict):
        raise BadRequest("The body must be an object with digest and cipher.")
    details = []
    digest = body.get("digest")
    try:
        digest = normalise_digest(str(digest)) if isinstance(digest, str) else None
    except ValueError:
        digest = None
    if digest is None:
        details.append(f"/digest: [{body.get('digest')}] is invalid")
    if body.get("cipher") != "RSA":
        details.append(f"/cipher: [{body.get('cipher')}] is invalid")
    if details or digest is None:
        raise BadRequest("Bad Request", details=details)
    loop = asyncio.get_running_loop()
    key = await loop.run_in_executor(None, SigningKey.generate, digest)
    record = request.app[STATE].add_key(key)
    return respond(record.to_api(enabled=False, public=True), status=201)


async def _list_keys(request: web.Request) -> web.StreamResponse:
    page = _int_param(request, "page", 1, 1, 1_000_000)
    size = _int_param(request, "page_size", 20, 1, 1000)
    state = request.app[STATE]
    records = list(state.keys.values())[(page - 1) * size : page * size]
    return respond([r.to_api(enabled=r.key.key_id == state.enabled_key_id) for r in records])


async def _get_key(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    record = state.key(request.match_info["key_id"])
    return respond(record.to_api(enabled=record.key.key_id == state.enabled_key_id, public=True))


async def _delete_key(request: web.Request) -> web.StreamResponse:
    request.app[STATE].delete_key(request.match_info["key_id"])
    return web.Response(status=204)


async def _enable_key(request: web.Request) -> web.StreamResponse:
    body = await json_body(request)
    key_id = body.get("key_id") if isinstance(body, dict) else None
    if not isinstance(key_id, str):
        raise BadRequest("key_id is required")
    record = request.app[STATE].enable_key(key_id)
    return respond(record.to_api(enabled=True, public=True))


async def _get_enabled_key(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    if state.enabled_key_id is None:
        return json_error(404, "No signature key is enabled.")
    return respond(state.key(state.enabled_key_id).to_api(enabled=True, public=True))


async def _disable_key(request: web.Request) -> web.StreamResponse:
    request.app[STATE].enabled_key_id = None
    return web.Response(status=204)


# --------------------------------------------------------------------------- application

_STARTED = web.AppKey("sandbox_started", datetime)


def _routes(config: SandboxConfig) -> list[web.RouteDef]:
    sms = _send_handler(parse_connector_sms)
    mms = _send_handler(parse_connector_mms)
    rcs = _send_handler(parse_rcs)
    keys = "/v1/iam/signature_keys"
    routes = [
        web.post("/v1/messages", _send_handler(parse_messages)),
        web.get("/v1/messages/{message_id}", _get_message, allow_head=False),
        web.put("/v1/messages/{message_id}", _update_message),
        web.get("/v1/replies", _get_replies, allow_head=False),
        web.post(
            "/v1/replies/confirmed",
            _confirm_handler("reply_ids", lambda s, ids: s.confirm_replies(ids)),
        ),
        web.get("/v1/delivery_reports", _get_reports, allow_head=False),
        web.post(
            "/v1/delivery_reports/confirmed",
            _confirm_handler("delivery_report_ids", lambda s, ids: s.confirm_reports(ids)),
        ),
        web.post("/v1/webhooks/messages", _create_webhook_handler([e.value for e in MO_EVENTS])),
        web.get("/v1/webhooks/messages", _list_webhooks, allow_head=False),
        web.patch("/v1/webhooks/messages/{webhook_id}", _update_webhook),
        web.delete("/v1/webhooks/messages/{webhook_id}", _delete_webhook),
        web.post(
            "/v1/webhooks/deliveryreports", _create_webhook_handler([e.value for e in DR_EVENTS])
        ),
        web.patch("/v1/webhooks/deliveryreports/{webhook_id}", _update_webhook),
        web.delete("/v1/webhooks/deliveryreports/{webhook_id}", _delete_webhook),
        web.get("/v1/int-crm/integrations/account/sender-id", _sender_ids, allow_head=False),
        web.get(
            "/v1/int-power-automate/v1/int-crm/integrations/account/sender-id",
            _sender_ids,
            allow_head=False,
        ),
        web.get("/v1/int-crm/integrations/account", _account, allow_head=False),
        web.get(
            "/v1/messaging/numbers/sender_address/addresses", _sender_addresses, allow_head=False
        ),
        web.get(
            "/v1/messaging/numbers/dedicated/assignments",
            _dedicated_assignments,
            allow_head=False,
        ),
        web.get("/v1/messaging/credits", _credits, allow_head=False),
        web.post("/v1/int-power-automate/send-message", sms),
        web.post("/v1/int-power-automate/send-mms", mms),
        web.get(_BLACKLIST_URI, _get_blacklist, allow_head=False),
        web.post(_BLACKLIST_URI, _add_blacklist),
        web.delete(_BLACKLIST_URI + "/{number}", _delete_blacklist),
        web.get(
            "/v1/number_authorisation/is_authorised/{numbers}", _is_authorised, allow_head=False
        ),
        web.post(keys, _keys_handler(_create_key)),
        web.get(keys, _keys_handler(_list_keys), allow_head=False),
        web.patch(keys + "/enabled", _keys_handler(_enable_key)),
        web.get(keys + "/enabled", _keys_handler(_get_enabled_key), allow_head=False),
        web.delete(keys + "/enabled", _keys_handler(_disable_key)),
        web.get(keys + "/{key_id}", _keys_handler(_get_key), allow_head=False),
        web.delete(keys + "/{key_id}", _keys_handler(_delete_key)),
    ]
    routes.extend(web.post(path, rcs) for path in dict.fromkeys(config.rcs_paths))
    return routes


def create_app(config: SandboxConfig | None = None) -> web.Application:
    """The sandbox application. Its background work (receipt timers, the push workers) lives
    as long as the application runs (``cleanup_ctx``)."""
    config = config or SandboxConfig()
    app = web.Application(
        middlewares=[
            _cors_middleware,
            _stats_middleware,
            error_middleware,
            _fault_middleware,
            _auth_middleware,
            _throttle_middleware,
        ],
        client_max_size=MAX_BODY,
    )
    state = SandboxState(config)
    faults = Faults(config.faults, config.receipt_faults, seed=config.seed)
    app[CONFIG] = config
    app[STATE] = state
    app[FAULTS] = faults
    app[THROTTLE] = CallThrottle(*config.throttle) if config.throttle else None
    app[DELIVERY] = Delivery(state, faults)
    app[_SEND_PATHS] = frozenset(
        {
            "/v1/messages",
            "/v1/int-power-automate/send-message",
            "/v1/int-power-automate/send-mms",
            *config.rcs_paths,
        }
    )
    app[_STARTED] = datetime.now(UTC)
    app.add_routes(_routes(config))
    control.add_routes(app)
    app.cleanup_ctx.append(_lifetime)
    return app


async def _lifetime(app: web.Application) -> AsyncIterator[None]:
    delivery = app[DELIVERY]
    state = app[STATE]
    config = app[CONFIG]
    await delivery.start()
    if config.signing and state.enabled_key_id is None:
        loop = asyncio.get_running_loop()
        key = await loop.run_in_executor(None, SigningKey.generate, config.signing_digest)
        state.startup_key = state.add_key(key)
        state.enable_key(key.key_id)
    yield
    await delivery.close()
