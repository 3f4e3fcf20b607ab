"""The control API under ``/_sandbox/``: what tests, the web simulator and benchmarks use to
play the handsets and steer the provider. No authentication, no faults.

=======================================================  =========================================
``GET /_sandbox``                                         numbers, account, timing
``GET /_sandbox/handsets``                                every handset seen
``PUT /_sandbox/handsets/{number}``                       ``{"rcs": false}``
``GET /_sandbox/handsets/{number}/messages``              what it received (``?offset=n``)
``GET /_sandbox/handsets/{number}/sent``                  what it sent
``POST /_sandbox/handsets/{number}/messages``             the handset sends (201)
``GET /_sandbox/messages``, ``…/messages/{id}``           everything sent, with status history
``GET /_sandbox/stats``                                   counters and the send-call history
``GET|POST|DELETE /_sandbox/faults``                      fault injection
``GET|POST|DELETE /_sandbox/outcomes``, ``…/{number}``    per-destination final outcome
``GET /_sandbox/signing``                                 the enabled signature key
``GET /_sandbox/idle?timeout=s``                          wait until all receipts/pushes are done
``POST /_sandbox/reset``                                  forget everything
=======================================================  =========================================
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from bot.sandbox.appkeys import CONFIG, DELIVERY, FAULTS, STATE
from bot.sandbox.faults import FaultSettings
from bot.sandbox.httputil import json_body, json_error, respond
from bot.sandbox.schemas import BadRequest, HandsetSend, OutcomeRule
from bot.sinch.models import E164_PATTERN

__all__ = ["add_routes"]

PREFIX = "/_sandbox"


def _handset_number(request: web.Request) -> str:
    number = request.match_info["number"].strip()
    if not E164_PATTERN.match(number):
        raise BadRequest("the handset number must be E.164 ('+' then 8 to 15 digits)")
    return number


def _object(body: Any) -> dict[str, Any]:
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise BadRequest("The body must be a JSON object.")
    return body


async def _info(request: web.Request) -> web.StreamResponse:
    config = request.app[CONFIG]
    return respond(
        {
            "numbers": list(config.numbers),
            "default_number": config.default_number,
            "account_id": config.account_id,
            "vendor_id": config.vendor_id,
            "api_keys": list(config.credentials),
            "rcs_paths": list(config.rcs_paths),
            "step_delay": config.step_delay,
            "time_scale": config.time_scale,
            "webhook_url": config.webhook_url,
            "receipt_url": config.effective_receipt_url,
        }
    )


async def _handsets(request: web.Request) -> web.StreamResponse:
    return respond([h.summary() for h in request.app[STATE].handsets.values()])


async def _update_handset(request: web.Request) -> web.StreamResponse:
    number = _handset_number(request)
    body = _object(await json_body(request))
    rcs = body.get("rcs")
    if not isinstance(rcs, bool) or set(body) - {"rcs"}:
        raise BadRequest('The body must be {"rcs": true|false}.')
    handset = request.app[STATE].handset(number)
    handset.rcs = rcs
    return respond(handset.summary())


async def _handset_received(request: web.Request) -> web.StreamResponse:
    number = _handset_number(request)
    handset = request.app[STATE].handsets.get(number)
    received = handset.received if handset else []
    offset = request.query.get("offset", "0")
    if not offset.isdigit():
        raise BadRequest("offset must be a non-negative integer")
    return respond(received[int(offset) :])


async def _handset_sent(request: web.Request) -> web.StreamResponse:
    number = _handset_number(request)
    handset = request.app[STATE].handsets.get(number)
    return respond(handset.sent if handset else [])


async def _handset_send(request: web.Request) -> web.StreamResponse:
    number = _handset_number(request)
    send = HandsetSend.model_validate(_object(await json_body(request)))
    try:
        inbound = request.app[DELIVERY].inbound(
            number,
            send.content,
            to=send.to,
            reply_to=send.reply_to,
            attachments=send.attachments(),
            rcs=send.rcs,
            choice=send.choice.model_dump() if send.choice else None,
        )
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    return respond(inbound.to_result(), status=201)


async def _messages(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    destination = request.query.get("destination") or None
    limit = request.query.get("limit", "1000")
    if not limit.isdigit():
        raise BadRequest("limit must be a non-negative integer")
    wanted = int(limit)
    items = [m.to_debug() for m in state.iter_messages(destination)]
    return respond(items[-wanted:] if wanted else [])


async def _message(request: web.Request) -> web.StreamResponse:
    return respond(request.app[STATE].message(request.match_info["message_id"]).to_debug())


async def _stats(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    body = state.stats.to_api()
    delivery = request.app[DELIVERY]
    body["pending"] = {"work": delivery.pending.count, "queued_pushes": delivery.pusher.queued}
    return respond(body)


async def _get_faults(request: web.Request) -> web.StreamResponse:
    return respond(request.app[FAULTS].to_api())


async def _set_faults(request: web.Request) -> web.StreamResponse:
    settings = FaultSettings.parse(await json_body(request))
    faults = request.app[FAULTS]
    faults.set(settings)
    return respond(faults.to_api())


async def _clear_faults(request: web.Request) -> web.StreamResponse:
    request.app[FAULTS].clear()
    return web.Response(status=204)


async def _get_outcomes(request: web.Request) -> web.StreamResponse:
    outcomes = request.app[STATE].outcomes
    return respond({number: outcome.to_api() for number, outcome in outcomes.items()})


async def _set_outcome(request: web.Request) -> web.StreamResponse:
    body = await json_body(request)
    rules = body if isinstance(body, list) else [body]
    parsed = [OutcomeRule.model_validate(rule) for rule in rules]
    state = request.app[STATE]
    for rule in parsed:
        state.outcomes[rule.number] = rule.outcome()
    return respond({rule.number: state.outcomes[rule.number].to_api() for rule in parsed})


async def _clear_outcomes(request: web.Request) -> web.StreamResponse:
    request.app[STATE].outcomes.clear()
    return web.Response(status=204)


async def _clear_outcome(request: web.Request) -> web.StreamResponse:
    number = _handset_number(request)
    if request.app[STATE].outcomes.pop(number, None) is None:
        return json_error(404)
    return web.Response(status=204)


async def _signing(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    key = state.signing_key
    if key is None:
        return respond({"enabled": False, "key_id": None, "digest": None, "public_key": None})
    return respond(
        {
            "enabled": True,
            "key_id": key.key_id,
            "digest": key.digest,
            "cipher": "RSA",
            "public_key": key.public_key_b64,
        }
    )


async def _idle(request: web.Request) -> web.StreamResponse:
    raw = request.query.get("timeout", "30")
    try:
        timeout = float(raw)
    except ValueError:
        raise BadRequest("timeout must be a number of seconds") from None
    try:
        await asyncio.wait_for(request.app[DELIVERY].wait_idle(), timeout=max(0.0, timeout))
    except TimeoutError:
        return respond({"idle": False}, status=408)
    return respond({"idle": True})


async def _reset(request: web.Request) -> web.StreamResponse:
    request.app[DELIVERY].reset()
    request.app[FAULTS].reset()
    return web.Response(status=204)


def add_routes(app: web.Application) -> None:
    p = PREFIX
    app.add_routes(
        [
            web.get(p, _info, allow_head=False),
            web.get(p + "/handsets", _handsets, allow_head=False),
            web.put(p + "/handsets/{number}", _update_handset),
            web.get(p + "/handsets/{number}/messages", _handset_received, allow_head=False),
            web.post(p + "/handsets/{number}/messages", _handset_send),
            web.get(p + "/handsets/{number}/sent", _handset_sent, allow_head=False),
            web.get(p + "/messages", _messages, allow_head=False),
            web.get(p + "/messages/{message_id}", _message, allow_head=False),
            web.get(p + "/stats", _stats, allow_head=False),
            web.get(p + "/faults", _get_faults, allow_head=False),
            web.post(p + "/faults", _set_faults),
            web.delete(p + "/faults", _clear_faults),
            web.get(p + "/outcomes", _get_outcomes, allow_head=False),
            web.post(p + "/outcomes", _set_outcome),
            web.delete(p + "/outcomes", _clear_outcomes),
            web.delete(p + "/outcomes/{number}", _clear_outcome),
            web.get(p + "/signing", _signing, allow_head=False),
            web.get(p + "/idle", _idle, allow_head=False),
            web.post(p + "/reset", _reset),
        ]
    )
