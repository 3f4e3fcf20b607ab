"""The demo's provider: a sandbox in the gateway's own process, and a client for it.

With no provider configured (no API key, no base URL), ``sinchbot serve`` talks to a
:class:`~bot.sandbox.Sandbox` it starts itself on a free port (or ``SINCHBOT_SANDBOX_PORT``):
the sandbox pushes inbound messages and receipts to the gateway's webhooks (with the webhook
secret as a token when one is set), and moves its messages along at a visible pace so the
simulator shows the receipts ticking.
"""

from __future__ import annotations

from typing import Final
from urllib.parse import quote

from bot.core.config import Settings
from bot.sandbox import Sandbox, SandboxConfig
from bot.sinch.client import SinchClient
from bot.storage.redis_server import free_port

__all__ = ["SANDBOX_KEY", "SANDBOX_SECRET", "InProcessSandbox", "Sandbox", "is_zero_config"]

SANDBOX_KEY: Final = "sandbox-key"
SANDBOX_SECRET: Final = "sandbox-secret"
"""The in-process sandbox's only credentials (it listens on loopback or ``SINCHBOT_HOST``)."""


def is_zero_config(settings: Settings) -> bool:
    """No provider configured: run against an in-process sandbox (the demo mode)."""
    return not settings.has_credentials and settings.base_url is None


class InProcessSandbox:
    """The sandbox the demo gateway uses as its provider (started and stopped by the
    gateway), and the client that calls it."""

    def __init__(self, settings: Settings) -> None:
        port = settings.sandbox_port or free_port(settings.host)
        secret = settings.webhook_secret
        token = f"?token={quote(secret.get_secret_value())}" if secret else ""
        self.sandbox = Sandbox(
            SandboxConfig(
                host=settings.host,
                port=port,
                credentials={SANDBOX_KEY: SANDBOX_SECRET},
                webhook_url=f"{settings.gateway_url}/webhooks/messages{token}",
                receipt_url=f"{settings.gateway_url}/webhooks/receipts{token}",
                step_delay=0.5,
                delivery_reports_always=True,
            )
        )
        self.client = SinchClient(
            api_key=SANDBOX_KEY,
            api_secret=SANDBOX_SECRET,
            base_url=f"http://{settings.host}:{port}",
            default_region=settings.default_region,
        )
