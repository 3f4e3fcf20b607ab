"""Fault injection: make the sandbox misbehave the ways a real provider does.

Request faults are rules matched against each provider API call (never the ``/_sandbox/``
control API)::

    {"endpoint": "POST /v1/messages", "kind": "rate_limit", "retry_after": 30, "count": 2}

``endpoint`` is ``"*"``, a path prefix (``"/v1/messages"``, any method), ``"METHOD prefix"`` or
``"METHOD *"``; a prefix matches the path itself and anything below it. ``rate`` (0 to 1, default 1) is the
probability a matching call is hit; ``count`` limits a rule to its next *n* hits. Kinds:

``error``       answer ``status`` (default 500) with ``{"message": ...}``; nothing is processed.
``rate_limit``  answer 429 with ``Retry-After`` and ``{"message": "Too many requests"}``.
``latency``     wait ``delay`` seconds (default 0.2), then carry on (latency rules add up).
``timeout``     wait ``delay`` seconds (default 30), then process and answer: the client gives
                up first, although the provider acts on the call (the "unknown outcome" case).
``drop``        abort the connection before processing: nothing happened.
``drop_after``  process the call fully (messages ARE accepted), then abort instead of
                answering: the "202 then dropped connection" case that makes duplicates.

The first matching non-latency rule that fires wins. Receipt and inbound faults change the
pushes::

    {"receipts": {"duplicate_rate": 0.3, "out_of_order": true}, "inbound": {"duplicate_rate": 0.1}}

``duplicate_rate`` pushes a report (same ``delivery_report_id``) or an inbound message (same
``reply_id``) twice; ``out_of_order`` (true or a probability) pushes a message's final report
before its enroute and submitted ones. All randomness comes from one seedable
:class:`random.Random`.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = [
    "DROPPED",
    "FaultKind",
    "FaultRule",
    "FaultSettings",
    "Faults",
    "InboundFaults",
    "ReceiptFaults",
]

FaultKind = Literal["error", "rate_limit", "latency", "timeout", "drop", "drop_after"]

_DEFAULT_DELAY = {"latency": 0.2, "timeout": 30.0}
_DEFAULT_STATUS = {"error": 500, "rate_limit": 429}
_DEFAULT_MESSAGES = {
    400: "Bad Request",
    403: "This feature has not been enabled in your account.",
    429: "Too many requests",
    500: "Internal server error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


class FaultRule(BaseModel):
    """One request fault."""

    model_config = ConfigDict(extra="forbid")

    endpoint: str = Field(default="*", min_length=1, max_length=300)
    kind: FaultKind
    rate: float = Field(default=1.0, ge=0.0, le=1.0)
    count: int | None = Field(default=None, ge=1)
    status: int | None = Field(default=None, ge=400, le=599)
    retry_after: float | None = Field(default=None, ge=0)
    delay: float | None = Field(default=None, ge=0, le=3600)
    message: str | None = Field(default=None, max_length=1000)

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        value = value.strip()
        if value == "*":
            return value
        method, _, path = value.rpartition(" ")
        if not (path.startswith("/") or (path == "*" and method.strip())):
            raise ValueError(
                "endpoint must be '*', a path prefix, 'METHOD /path/prefix' or 'METHOD *'"
            )
        return f"{method.strip().upper()} {path}".strip()

    def matches(self, method: str, path: str) -> bool:
        if self.endpoint == "*":
            return True
        wanted_method, _, prefix = self.endpoint.rpartition(" ")
        if wanted_method and wanted_method not in ("*", method):
            return False
        if prefix == "*":
            return True
        prefix = prefix.rstrip("/") or "/"
        return path == prefix or path.startswith(prefix if prefix == "/" else prefix + "/")

    @property
    def effective_delay(self) -> float:
        return self.delay if self.delay is not None else _DEFAULT_DELAY.get(self.kind, 0.0)

    @property
    def effective_status(self) -> int:
        return self.status or _DEFAULT_STATUS.get(self.kind, 500)


class ReceiptFaults(BaseModel):
    model_config = ConfigDict(extra="forbid")

    duplicate_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    out_of_order: bool | float = False

    @field_validator("out_of_order")
    @classmethod
    def _probability(cls, value: bool | float) -> bool | float:
        if not isinstance(value, bool) and not 0.0 <= value <= 1.0:
            raise ValueError("out_of_order is true, false or a probability")
        return value


class InboundFaults(BaseModel):
    model_config = ConfigDict(extra="forbid")

    duplicate_rate: float = Field(default=0.0, ge=0.0, le=1.0)


class FaultSettings(BaseModel):
    """Body of ``POST /_sandbox/faults``: a list of rules, or an object."""

    model_config = ConfigDict(extra="forbid")

    rules: list[FaultRule] = Field(default_factory=list, max_length=100)
    receipts: ReceiptFaults = Field(default_factory=ReceiptFaults)
    inbound: InboundFaults = Field(default_factory=InboundFaults)
    seed: int | None = None

    @classmethod
    def parse(cls, body: Any) -> FaultSettings:
        """Accept ``[rule, ...]``, ``{"rules": [...], "receipts": {...}, ...}`` or one rule."""
        if isinstance(body, list):
            return cls.model_validate({"rules": body})
        if isinstance(body, Mapping) and "kind" in body:
            return cls.model_validate({"rules": [body]})
        return cls.model_validate(body)


@dataclass(slots=True)
class _Active:
    rule: FaultRule
    remaining: int | None


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

DROPPED = web.RequestKey("sandbox_dropped", bool)
"""Set on a request whose connection a fault aborted."""


class Faults:
    """The active faults and the random source that decides when they fire."""

    def __init__(
        self,
        rules: Sequence[Mapping[str, Any]] = (),
        receipts: Mapping[str, Any] | None = None,
        *,
        seed: int | None = None,
    ) -> None:
        self._initial = FaultSettings.model_validate(
            {"rules": list(rules), "receipts": dict(receipts or {}), "seed": seed}
        )
        self.rng = random.Random(seed)
        self._active: list[_Active] = []
        self.receipts = ReceiptFaults()
        self.inbound = InboundFaults()
        self.set(self._initial)

    def set(self, settings: FaultSettings) -> None:
        """Replace every fault."""
        self._active = [_Active(rule, rule.count) for rule in settings.rules]
        self.receipts = settings.receipts
        self.inbound = settings.inbound
        if settings.seed is not None:
            self.rng.seed(settings.seed)

    def clear(self) -> None:
        self.set(FaultSettings())

    def reset(self) -> None:
        """Back to the configured faults."""
        self.rng.seed(self._initial.seed)
        self.set(self._initial)

    def to_api(self) -> dict[str, Any]:
        return {
            "rules": [
                {**a.rule.model_dump(exclude_none=True), "remaining": a.remaining}
                for a in self._active
            ],
            "receipts": self.receipts.model_dump(),
            "inbound": self.inbound.model_dump(),
        }

    @property
    def active(self) -> bool:
        return bool(self._active)

    def select(self, method: str, path: str) -> tuple[float, FaultRule | None]:
        """The faults a call meets: total latency, and the rule that decides its fate."""
        latency = 0.0
        chosen: FaultRule | None = None
        for active in self._active:
            rule = active.rule
            if active.remaining == 0 or not rule.matches(method, path):
                continue
            if rule.kind != "latency" and chosen is not None:
                continue
            if rule.rate < 1.0 and self.rng.random() >= rule.rate:
                continue
            if active.remaining is not None:
                active.remaining -= 1
            if rule.kind == "latency":
                latency += rule.effective_delay
            else:
                chosen = rule
        if any(a.remaining == 0 for a in self._active):
            self._active = [a for a in self._active if a.remaining != 0]
        return latency, chosen

    def duplicate_receipt(self) -> bool:
        rate = self.receipts.duplicate_rate
        return rate > 0 and self.rng.random() < rate

    def duplicate_inbound(self) -> bool:
        rate = self.inbound.duplicate_rate
        return rate > 0 and self.rng.random() < rate

    def out_of_order(self) -> bool:
        value = self.receipts.out_of_order
        if isinstance(value, bool):
            return value
        return value > 0 and self.rng.random() < value

    async def apply(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Run ``handler`` under the faults that match ``request``."""
        if not self._active:
            return await handler(request)
        latency, rule = self.select(request.method, request.path)
        if latency or rule is not None:
            # Read the body now: a client that gives up during a delay takes it with it.
            await request.read()
        if latency:
            await asyncio.sleep(latency)
        if rule is None:
            return await handler(request)
        kind = rule.kind
        if kind == "error":
            status = rule.effective_status
            message = rule.message or _DEFAULT_MESSAGES.get(status, "Something went wrong.")
            return web.json_response({"message": message}, status=status)
        if kind == "rate_limit":
            retry_after = 30.0 if rule.retry_after is None else rule.retry_after
            value = str(int(retry_after)) if retry_after == int(retry_after) else str(retry_after)
            return web.json_response(
                {"message": rule.message or "Too many requests"},
                status=rule.effective_status,
                headers={"Retry-After": value},
            )
        if kind == "timeout":
            await asyncio.sleep(rule.effective_delay)
            return await handler(request)
        if kind == "drop":
            _abort(request)
            return web.Response(status=500)
        # drop_after: the call takes effect, the answer is lost.
        response = await handler(request)
        _abort(request)
        return response


def _abort(request: web.Request) -> None:
    request[DROPPED] = True
    transport = request.transport
    if transport is not None:
        transport.abort()
