"""Typed keys of the sandbox's aiohttp application state."""

from __future__ import annotations

from aiohttp import web

from bot.sandbox.config import SandboxConfig
from bot.sandbox.delivery import Delivery
from bot.sandbox.faults import Faults
from bot.sandbox.state import SandboxState

__all__ = ["CONFIG", "DELIVERY", "FAULTS", "STATE"]

CONFIG = web.AppKey("sandbox_config", SandboxConfig)
STATE = web.AppKey("sandbox_state", SandboxState)
DELIVERY = web.AppKey("sandbox_delivery", Delivery)
FAULTS = web.AppKey("sandbox_faults", Faults)
