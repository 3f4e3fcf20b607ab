"""When things happen at the sandbox provider, and who hears about it.

**Receipts.** An accepted message moves queued → enroute (101) → submitted (200) →
delivered (220), one step every ``step_delay`` seconds (times ``time_scale``). The steps of
all messages accepted by one call share one timer per step, so a 100-message call costs three
timer callbacks, not three hundred tasks. Other endings:

* a blacklisted destination is rejected at once (302, no enroute), unless the account
  handles opt-outs itself (``opt_out_handling="account"``);
* a per-destination outcome replaces the final step (``failed 414`` after submitted,
  ``rejected 412`` or ``expired 320`` after enroute, ``enroute`` / ``submitted`` stop there);
* a passed ``message_expiry_timestamp`` ends the message as expired (320 before submission,
  401 after);
* RCS to a handset without RCS goes out as the fallback SMS, or fails with 413 when there is
  no fallback;
* a scheduled message waits (one timer each) until its time and can be cancelled until then.

**Pushes.** Each delivery report (when the message asked for reports) goes to the message's
``callback_url`` in the documented DR shape, to every webhook registered for its ``*_DR``
event (rendered with the webhook's Velocity template, or the provider's sample shape), and to
``receipt_url`` with the connector's DR template. Each inbound message goes to the original
message's ``callback_url`` (Reply object), to ``RECEIVED_SMS``/``RECEIVED_MMS`` webhooks and
to ``webhook_url`` with the connector's MO template; an opt-out keyword additionally fires
``OPT_OUT_SMS`` (to its webhooks and to ``webhook_url``). The provider's own opt-out
confirmation (:meth:`~bot.sandbox.state.SandboxState.confirm_opt_out`) reaches the handset
at once and is pushed nowhere: it is not the account's message.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, TypeVar

from bot.sandbox import payloads, velocity
from bot.sandbox.config import SandboxConfig
from bot.sandbox.faults import Faults
from bot.sandbox.push import Pending, Push, Pusher, Rendered
from bot.sandbox.state import (
    Inbound,
    Message,
    Outcome,
    Report,
    SandboxState,
    WebhookRecord,
    now_utc,
)
from bot.sinch.models import DeliveryStatus, WebhookEvent, dr_event_for
from bot.sinch.templates import DR_TEMPLATE, MO_TEMPLATE

__all__ = ["Delivery", "steps_for"]

log = logging.getLogger(__name__)

_JSON = "application/json"
_ENROUTE = (DeliveryStatus.ENROUTE, 101)
_SUBMITTED = (DeliveryStatus.SUBMITTED, 200)
_EXPIRABLE = frozenset({"enroute", "submitted", "delivered"})
_OUT_OF_ORDER_GAP = 0.02
_T = TypeVar("_T")
_DR_EVENTS = {str(status): dr_event_for(status) for status in DeliveryStatus}


def steps_for(outcome: Outcome) -> list[tuple[DeliveryStatus, int]]:
    """The receipt steps that lead to an outcome."""
    final = (outcome.status, outcome.code)
    status = outcome.status
    if status is DeliveryStatus.ENROUTE:
        return [final]
    if status is DeliveryStatus.SUBMITTED:
        return [_ENROUTE, final]
    if status is DeliveryStatus.REJECTED and 301 <= outcome.code <= 305:
        return [final]  # discarded by the gateway itself
    if status is DeliveryStatus.REJECTED or outcome.code == 320:
        return [_ENROUTE, final]
    return [_ENROUTE, _SUBMITTED, final]


@dataclass(slots=True, eq=False)
class _Progress:
    message: Message
    steps: list[tuple[DeliveryStatus, int]]
    index: int = 0
    held: list[Report] | None = None
    """Reports held back to be pushed after the final one (out-of-order fault)."""


class Delivery:
    """The provider's clockwork: progressions, scheduled messages, inbound, pushes."""

    def __init__(self, state: SandboxState, faults: Faults) -> None:
        self.state = state
        self.config: SandboxConfig = state.config
        self.faults = faults
        self.pending = Pending()
        self.pusher = Pusher(
            stats=state.stats,
            pending=self.pending,
            signing_key=lambda: state.signing_key,
            concurrency=self.config.push_concurrency,
        )
        self._timers: set[asyncio.TimerHandle] = set()
        self._scheduled: dict[str, asyncio.TimerHandle] = {}

    # ------------------------------------------------------------------ lifetime

    async def start(self) -> None:
        await self.pusher.start()

    async def close(self) -> None:
        self._cancel_timers()
        await self.pusher.close()

    def _cancel_timers(self) -> None:
        for handle in self._timers:
            handle.cancel()
        self.pending.done(len(self._timers))
        self._timers.clear()
        for handle in self._scheduled.values():
            handle.cancel()
        self._scheduled.clear()

    def reset(self) -> None:
        """Stop every progression and push, and forget all state."""
        self._cancel_timers()
        self.pusher.drop_all()
        self.state.reset()

    async def wait_idle(self) -> None:
        """Until every due progression step and every push (with its retries) is done.
        Scheduled messages whose time has not come are not waited for."""
        await self.pending.wait()

    # ------------------------------------------------------------------ messages

    def submit(self, messages: Sequence[Message]) -> None:
        """Start the progression of freshly accepted messages."""
        loop = asyncio.get_running_loop()
        now = now_utc()
        batch: list[_Progress] = []
        for message in messages:
            scheduled = message.request.scheduled
            if message.status == "scheduled" and scheduled is not None:
                delay = max(0.0, (scheduled - now).total_seconds())
                self._scheduled[message.message_id] = loop.call_later(delay, self._release, message)
            else:
                batch.append(self._plan(message))
        if batch:
            self._schedule(batch)

    def cancel(self, message_id: str) -> Message:
        """Cancel a scheduled message (:class:`ValueError` if not scheduled)."""
        message = self.state.cancel(message_id)
        handle = self._scheduled.pop(message_id, None)
        if handle is not None:
            handle.cancel()
        return message

    def _release(self, message: Message) -> None:
        self._scheduled.pop(message.message_id, None)
        if message.status == "scheduled":
            message.status = "queued"
            self._schedule([self._plan(message)])

    def _plan(self, message: Message) -> _Progress:
        outcome = self.state.outcome_for(message)
        held: list[Report] | None = [] if self.faults.out_of_order() else None
        return _Progress(message, steps_for(outcome), held=held)

    def _schedule(self, batch: list[_Progress]) -> None:
        self._later(self.config.scaled(self.config.step_delay), self._step, batch)

    def _later(self, delay: float, callback: Callable[[_T], None], arg: _T) -> None:
        """Run ``callback(arg)`` after ``delay`` seconds, counted as pending work."""
        loop = asyncio.get_running_loop()
        self.pending.add()
        handle: asyncio.TimerHandle

        def fire() -> None:
            self._timers.discard(handle)
            try:
                callback(arg)
            finally:
                self.pending.done()

        handle = loop.call_later(delay, fire)
        self._timers.add(handle)

    def _step(self, batch: list[_Progress]) -> None:
        now = now_utc()
        following: list[_Progress] = []
        for progress in batch:
            try:
                if self._advance(progress, now):
                    following.append(progress)
            except Exception:  # one bad message must not stall the others
                log.exception("sandbox: progression of %s failed", progress.message.message_id)
        if following:
            self._schedule(following)

    def _advance(self, progress: _Progress, now: datetime) -> bool:
        """Take one step; whether there are more."""
        message = progress.message
        if message.is_final:
            return False
        status, code = progress.steps[progress.index]
        expires = message.request.expires
        if expires is not None and expires <= now and str(status) in _EXPIRABLE:
            submitted = message.status == "submitted"
            status, code = DeliveryStatus.EXPIRED, 401 if submitted else 320
        report = self.state.record_status(message, status, code, when=now)
        if status is DeliveryStatus.DELIVERED:
            self.state.deliver(message)
        last = message.is_final or progress.index + 1 >= len(progress.steps)
        if progress.held is not None and not last:
            progress.held.append(report)
        else:
            self._emit_report(report)
            if progress.held:
                # A short gap, so the final report really arrives first.
                self._later(_OUT_OF_ORDER_GAP, self._emit_reports, list(progress.held))
        if not last:
            progress.index += 1
        return not last

    # ------------------------------------------------------------------ inbound

    def inbound(
        self,
        handset: str,
        content: str = "",
        *,
        to: str | None = None,
        reply_to: str | None = None,
        attachments: Sequence[Mapping[str, str]] = (),
        rcs: bool = False,
        choice: Mapping[str, Any] | None = None,
    ) -> Inbound:
        """A handset sends a message: record it and push it everywhere it goes."""
        inbound = self.state.receive(
            handset,
            content,
            to=to,
            reply_to=reply_to,
            attachments=attachments,
            rcs=rcs,
            choice=choice,
        )
        self._emit_inbound(inbound)
        return inbound

    # ------------------------------------------------------------------ pushes

    def _emit(self, pushes: list[Push], copies: int) -> None:
        for push in pushes:
            self.pusher.push(push)
        for _ in range(copies - 1):  # duplicate deliveries: same body, own retry state
            for push in pushes:
                self.pusher.push(replace(push, attempt=0))

    def _emit_reports(self, reports: list[Report]) -> None:
        for report in reports:
            self._emit_report(report)

    def _emit_report(self, report: Report) -> None:
        message = report.message
        config = self.config
        if not (message.wants_reports or config.delivery_reports_always):
            return
        state = self.state
        if not (message.request.callback_url or state.has_webhooks or config.effective_receipt_url):
            return
        pushes: list[Push] = []
        if message.request.callback_url:
            pushes.append(
                self._callback_push(
                    message.request.callback_url, lambda: payloads.dr_push(report, config)
                )
            )
        for webhook in state.webhooks_for(_DR_EVENTS[str(report.status)]):
            pushes.append(
                self._webhook_push(
                    webhook,
                    lambda retry: payloads.dr_context(report, config, retry),
                    lambda: payloads.dr_sample(report, config),
                )
            )
        receipt_url = config.effective_receipt_url
        if receipt_url:
            pushes.append(
                self._connector_push(
                    receipt_url,
                    DR_TEMPLATE,
                    lambda retry: payloads.dr_context(report, config, retry),
                )
            )
        if pushes:
            self._emit(pushes, 2 if self.faults.duplicate_receipt() else 1)

    def _emit_inbound(self, inbound: Inbound) -> None:
        config = self.config
        pushes: list[Push] = []
        original = inbound.original
        if original is not None and original.request.callback_url:
            pushes.append(
                self._callback_push(
                    original.request.callback_url,
                    lambda: payloads.reply_object(inbound, config),
                )
            )
        event = WebhookEvent.RECEIVED_MMS if inbound.attachments else WebhookEvent.RECEIVED_SMS
        for webhook in self.state.webhooks_for(event):
            pushes.append(
                self._webhook_push(
                    webhook,
                    lambda retry: payloads.mo_context(inbound, config, retry_count=retry),
                    lambda: payloads.mo_sample(inbound, config),
                )
            )
        if config.webhook_url:
            pushes.append(
                self._connector_push(
                    config.webhook_url,
                    MO_TEMPLATE,
                    lambda retry: payloads.mo_context(inbound, config, retry_count=retry),
                )
            )
        if inbound.notification_id is not None:
            for webhook in self.state.webhooks_for(WebhookEvent.OPT_OUT_SMS):
                pushes.append(
                    self._webhook_push(
                        webhook,
                        lambda retry: payloads.mo_context(
                            inbound, config, opt_out=True, retry_count=retry
                        ),
                        lambda: payloads.mo_sample(inbound, config, opt_out=True),
                    )
                )
            if config.webhook_url:
                pushes.append(
                    self._connector_push(
                        config.webhook_url,
                        MO_TEMPLATE,
                        lambda retry: payloads.mo_context(
                            inbound, config, opt_out=True, retry_count=retry
                        ),
                    )
                )
        if pushes:
            self._emit(pushes, 2 if self.faults.duplicate_inbound() else 1)

    def _backoff(self, attempt: int) -> float:
        config = self.config
        return config.scaled(
            min(config.callback_backoff * 2 ** (attempt - 1), config.callback_max_delay)
        )

    def _callback_push(self, url: str, body: Callable[[], dict[str, Any]]) -> Push:
        def render(_retry: int) -> Rendered:
            text = json.dumps(body(), ensure_ascii=False, separators=(",", ":"))
            return Rendered(text.encode(), _JSON)

        return Push(
            url=url,
            render=render,
            kind="callback",
            attempts=self.config.callback_attempts,
            delay=self._backoff,
            timeout=self.config.push_timeout,
        )

    def _connector_push(
        self, url: str, template: str, context: Callable[[int], Mapping[str, object]]
    ) -> Push:
        def render(retry: int) -> Rendered:
            return Rendered(velocity.render(template, context(retry)).encode(), _JSON)

        return Push(
            url=url,
            render=render,
            kind="connector",
            attempts=self.config.callback_attempts,
            delay=self._backoff,
            timeout=self.config.push_timeout,
        )

    def _webhook_push(
        self,
        webhook: WebhookRecord,
        context: Callable[[int], Mapping[str, object]],
        sample: Callable[[], dict[str, Any]],
    ) -> Push:
        spec = webhook.spec
        method = str(spec.get("method", "POST"))
        encoding = str(spec.get("encoding", "JSON"))
        template: str | None = spec.get("template")
        bodiless = method in ("GET", "DELETE")

        def render(retry: int) -> Rendered:
            if template:
                text = velocity.render(template, context(retry))
            else:
                text = payloads.encode(sample(), "FORM_ENCODED" if bodiless else encoding)
            if bodiless:
                return Rendered(b"", None, query=text)
            return Rendered(text.encode(), payloads.content_type(encoding))

        retries = int(spec.get("retries") or 0)
        retry_delay = float(spec.get("retry_delay") or 5)
        read_timeout = spec.get("read_timeout")
        return Push(
            url=str(spec["url"]),
            render=render,
            kind="webhook",
            method=method,
            headers=dict(spec.get("headers") or {}),
            attempts=1 + retries,
            delay=lambda _attempt: self.config.scaled(retry_delay),
            timeout=(read_timeout / 1000.0) if read_timeout else 20.0,
        )
