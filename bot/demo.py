"""The zero-configuration demo: something to talk to as soon as ``sinchbot serve`` starts.

With no provider configured and no ``SINCHBOT_CONFIG``, the gateway runs
:func:`demo_config`: the ``appointments`` and ``autoreply`` plugins with sample settings, a
few keyword replies, quiet hours off (a demo at night must still answer) and a fallback
that echoes. Once it runs, :func:`seed` books a sample appointment for the demo handset
(when the demo's Redis holds none yet), so the simulator already shows a reminder to
answer.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any, Final

import structlog

from bot.botconfig import BotConfig
from bot.plugins import PluginHost

if TYPE_CHECKING:
    from bot.gateway.app import Gateway

__all__ = ["DEMO_HANDSET", "DEMO_NUMBER", "demo_config", "seed"]

log = structlog.get_logger(__name__)

DEMO_NUMBER: Final = "+61491570157"
"""The demo's own number (the sandbox's first dedicated number)."""
DEMO_HANDSET: Final = "+61491570156"
"""The virtual handset the demo's sample appointment belongs to."""


def demo_config() -> BotConfig:
    """The demo's configuration (what a config file would say)."""
    tables: dict[str, Any] = {
        "plugins": ["appointments", "autoreply"],
        "fallback": 'We got "{text}". Try HOURS, PRICE OF CLEANING or HELP.',
        "compliance": {
            "help_text": "Sinchbot demo clinic: appointment reminders and answers. "
            "Reply STOP to opt out, START to opt back in."
        },
        "keywords": {"PING": "PONG"},
        "plugin": {
            "appointments": {
                "business": "Demo Clinic",
                "from_number": DEMO_NUMBER,
                "slots": ["Tue 10:00", "Wed 14:30", "Fri 09:15"],
                "no_reply_after": "10m",
            },
            "autoreply": {
                "timezone": "UTC",
                "business_hours": {"mon-fri": "08:00-18:00", "sat": "09:00-12:00"},
                "rules": [
                    {
                        "keyword": ["hours", "opening hours", "open"],
                        "text": "We are open 8am-6pm weekdays and 9am-12pm Saturdays (UTC).",
                        "after_hours": "We are closed now; we open at 8am (UTC) on weekdays.",
                    },
                    {
                        "regex": r"price of (?P<item>[a-z ]+)",
                        "text": "A {item} costs $120. Reply BOOK to ask for an appointment.",
                    },
                    {
                        "keyword": ["book"],
                        "text": "Thanks! We will text you a time. (Demo: create one with "
                        "POST /api/appointments.)",
                    },
                ],
            },
        },
    }
    return BotConfig.model_validate(tables)


async def seed(gateway: Gateway) -> str | None:
    """Book the demo's sample appointment (two hours from now, so its reminder goes at
    once) unless the demo's Redis already holds appointments; returns its id."""
    bot = gateway.bot
    if bot is None:
        return None
    loaded = {p.name: p for p in bot.plugins.loaded}
    if "appointments" not in loaded:
        return None
    from plugins.appointments.api import AppointmentsApi
    from plugins.appointments.models import INDEX, NewAppointment, new_document

    if await gateway.redis.hlen(INDEX):
        return None

    async def unused(_request: Any) -> Any:  # pragma: no cover - the seed serves no routes
        raise NotImplementedError

    host = PluginHost(
        store=gateway.store,
        partitions=gateway.settings.partitions,
        settings=loaded["appointments"].settings,
        guard=lambda handler: handler,
        read_json=unused,
        clock=gateway.clock,
        default_region=gateway.settings.default_region,
    )
    api = AppointmentsApi(host)
    now = gateway.clock()
    new = NewAppointment.check(
        {
            "phone": DEMO_HANDSET,
            "name": "Alex",
            "starts_at": (now + timedelta(hours=2)).isoformat(),
        },
        now=now,
        region=gateway.settings.default_region,
        default_remind_before=api.settings.remind_before,
    )
    doc = new_document(new, now=now, via="demo")
    await api.store([doc], now)
    log.info("demo appointment booked", appointment=doc["id"])
    return str(doc["id"])
