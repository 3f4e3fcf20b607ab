"""Run the sandbox: :class:`Sandbox` for tests and embedding, :func:`serve` for the CLI.

>>> async with Sandbox(SandboxConfig(step_delay=0.01)) as sb:  # doctest: +SKIP
...     async with sb.client() as client:
...         [sent] = await client.send_sms("+61491570156", "Hi", delivery_report=True)
...     await sb.wait_idle()
...     reply = await sb.handset("+61491570156").send("Yes", reply_to="latest")
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import sys
from collections.abc import Iterator, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TextIO

from aiohttp import web

from bot.sandbox.app import create_app
from bot.sandbox.appkeys import DELIVERY, FAULTS, STATE
from bot.sandbox.config import SandboxConfig
from bot.sandbox.delivery import Delivery
from bot.sandbox.faults import Faults, FaultSettings
from bot.sandbox.schemas import HandsetSend, OutcomeRule
from bot.sandbox.state import Handset, Message, SandboxState
from bot.sinch.signatures import SigningKey

if TYPE_CHECKING:
    from bot.sinch.client import SinchClient

__all__ = ["HandsetClient", "Sandbox", "serve"]


class HandsetClient:
    """A phone, as a test drives it: send messages to our numbers, read what arrived."""

    def __init__(self, sandbox: Sandbox, number: str) -> None:
        self._sandbox = sandbox
        self.number = number

    @property
    def _record(self) -> Handset:
        return self._sandbox.state.handset(self.number)

    @property
    def received(self) -> list[dict[str, Any]]:
        """Messages delivered to this handset, oldest first (a live list)."""
        return self._record.received

    @property
    def sent(self) -> list[dict[str, Any]]:
        """Messages this handset sent."""
        return self._record.sent

    @property
    def rcs(self) -> bool:
        return self._record.rcs

    @rcs.setter
    def rcs(self, value: bool) -> None:
        self._record.rcs = value

    @property
    def last(self) -> dict[str, Any] | None:
        """The newest received message, if any."""
        received = self._record.received
        return received[-1] if received else None

    async def send(
        self,
        content: str = "",
        *,
        to: str | None = None,
        reply_to: str | None = "latest",
        media: Sequence[Mapping[str, str]] | None = None,
        rcs: bool = False,
        choice: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """Send a message, exactly as ``POST /_sandbox/handsets/{number}/messages`` does.

        ``reply_to`` is a message id, ``"latest"`` (default: the last message from ``to``,
        as the provider correlates replies; unsolicited when there is none) or ``None``
        (unsolicited); ``media`` items are ``{"content_type", "content" (base64), "name"}``;
        ``choice`` is ``{"message_id", "postback_data"}`` (an RCS suggested-reply tap).
        Returns ``{"reply_id", "message_id", "metadata", "notification_id", ...}``.
        """
        body: dict[str, Any] = {"content": content, "rcs": rcs, "reply_to": reply_to}
        for name, value in (("to", to), ("choice", choice)):
            if value is not None:
                body[name] = dict(value) if isinstance(value, Mapping) else value
        if media is not None:
            body["media"] = [dict(m) for m in media]
        request = HandsetSend.model_validate(body)
        inbound = self._sandbox.delivery.inbound(
            self.number,
            request.content,
            to=request.to,
            reply_to=request.reply_to,
            attachments=request.attachments(),
            rcs=request.rcs,
            choice=request.choice.model_dump() if request.choice else None,
        )
        return inbound.to_result()

    async def wait_for(
        self,
        count: int = 1,
        timeout: float = 5.0,  # noqa: ASYNC109 (a default bound keeps a broken test from hanging)
    ) -> list[dict[str, Any]]:
        """Wait until at least ``count`` messages have arrived; returns them all."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(self.received) < count:
            if loop.time() >= deadline:
                raise TimeoutError(
                    f"{self.number} received {len(self.received)} of {count} messages"
                )
            await asyncio.sleep(0.005)
        return list(self.received)


class Sandbox:
    """The sandbox provider on a real socket. Use ``async with Sandbox(config) as sb:``.

    Keyword arguments override fields of ``config`` (``Sandbox(step_delay=0.01)``).
    """

    def __init__(self, config: SandboxConfig | None = None, **changes: Any) -> None:
        config = config or SandboxConfig()
        if changes:
            config = config.with_changes(**changes)
        self.config = config
        self.app = create_app(config)
        self._runner: web.AppRunner | None = None
        self._stopped = False
        self.port: int = config.port
        self.url = ""

    # ------------------------------------------------------------------ lifetime

    async def start(self) -> Self:
        """Listen; returns ``self``. A stopped sandbox cannot be started again."""
        if self._runner is not None:
            return self
        if self._stopped:
            raise RuntimeError("this Sandbox was stopped; create a new one")
        runner = web.AppRunner(
            self.app,
            access_log=None,
            handle_signals=False,
            shutdown_timeout=self.config.shutdown_timeout,
        )
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.config.host, self.config.port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        host = self.config.host
        if host in ("", "0.0.0.0"):
            host = "127.0.0.1"
        elif host == "::":
            host = "::1"
        if ":" in host:
            host = f"[{host}]"
        self.url = f"http://{host}:{self.port}"
        return self

    async def stop(self) -> None:
        """Stop listening, cancel receipt timers and pushes. Idempotent."""
        runner, self._runner = self._runner, None
        if runner is not None:
            self._stopped = True
            await runner.cleanup()

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # ------------------------------------------------------------------ parts

    @property
    def state(self) -> SandboxState:
        return self.app[STATE]

    @property
    def delivery(self) -> Delivery:
        return self.app[DELIVERY]

    @property
    def faults(self) -> Faults:
        return self.app[FAULTS]

    @property
    def api_key(self) -> str:
        return self.config.api_key

    @property
    def api_secret(self) -> str:
        return self.config.api_secret

    @property
    def signing_key(self) -> SigningKey | None:
        """The enabled signature key (which signs every push), if any."""
        return self.state.signing_key

    def client(self, **options: Any) -> SinchClient:
        """A :class:`~bot.sinch.client.SinchClient` for this sandbox (Basic auth unless
        ``auth="hmac"``); options are passed on."""
        from bot.sinch.client import SinchClient

        options.setdefault("api_key", self.api_key)
        options.setdefault("api_secret", self.api_secret)
        return SinchClient(base_url=self.url, **options)

    # ------------------------------------------------------------------ control

    def handset(self, number: str) -> HandsetClient:
        return HandsetClient(self, number)

    def message(self, message_id: str) -> Message:
        return self.state.message(message_id)

    def messages(self, destination: str | None = None) -> list[Message]:
        return list(self.state.iter_messages(destination))

    def stats(self) -> dict[str, Any]:
        return self.state.stats.to_api()

    def set_faults(
        self,
        rules: Sequence[Mapping[str, Any]] = (),
        *,
        receipts: Mapping[str, Any] | None = None,
        inbound: Mapping[str, Any] | None = None,
        seed: int | None = None,
    ) -> None:
        """Replace the faults (see :mod:`bot.sandbox.faults`)."""
        self.faults.set(
            FaultSettings.model_validate(
                {
                    "rules": [dict(r) for r in rules],
                    "receipts": dict(receipts or {}),
                    "inbound": dict(inbound or {}),
                    "seed": seed,
                }
            )
        )

    def clear_faults(self) -> None:
        self.faults.clear()

    def set_outcome(self, number: str, status: str | None = None, code: int | None = None) -> None:
        """Make messages to ``number`` end with ``status`` and/or ``code`` (``"failed"``,
        ``414``); ``"enroute"`` / ``"submitted"`` make them stop there."""
        rule = OutcomeRule.model_validate({"number": number, "status": status, "code": code})
        self.state.outcomes[number] = rule.outcome()

    def clear_outcomes(self) -> None:
        self.state.outcomes.clear()

    def reset(self) -> None:
        """Forget messages, handsets, webhooks, blacklist, stats; faults back to the config."""
        self.delivery.reset()
        self.faults.reset()

    async def wait_idle(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Wait until every due receipt step and every push (with retries) is done."""
        await asyncio.wait_for(self.delivery.wait_idle(), timeout)


@contextlib.contextmanager
def tuned_gc() -> Iterator[None]:
    """Tune the cyclic garbage collector for a sandbox process, once it listens (as
    ``sinchbot serve`` does for the gateway, :func:`bot.app.serve.freeze_startup_objects`);
    undone on exit.

    ``gc.freeze()`` keeps what start-up built (modules, models, the app) out of every later
    collection's scan, and a young generation of 10,000 objects instead of 700 makes
    collections far fewer. In the benchmark's outbound phase (a backlog of 8,000 messages
    drained at 20 calls per 2 s) full collections of 48-106 ms held the sandbox's answers
    during the drain, about 1.5 % of it, without this. Objects created later (messages,
    receipts) are collected as usual.
    """
    thresholds = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


async def serve(config: SandboxConfig | None = None, *, out: TextIO | None = None) -> None:
    """Run the sandbox until cancelled, after printing one line with its URL and credentials.

    The process's garbage collector is tuned while it listens (:func:`tuned_gc`): ``serve``
    is the sandbox as a process of its own (``sinchbot sandbox``)."""
    async with Sandbox(config) as sandbox:
        with tuned_gc():
            line = (
                f"Sinch sandbox on {sandbox.url}  api key: {sandbox.api_key}  "
                f"api secret: {sandbox.api_secret}  numbers: {', '.join(sandbox.config.numbers)}"
            )
            print(line, file=out or sys.stdout, flush=True)
            await asyncio.Event().wait()
