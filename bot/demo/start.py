"""The zero-configuration demo: something to talk to as soon as ``sinchbot serve`` starts.

With no provider configured and no ``SINCHBOT_CONFIG``, the gateway runs
:func:`demo_config`: the ``appointments`` and ``autoreply`` plugins with sample settings, a
few keyword replies, quiet hours off (a demo at night must still answer) and a fallback
that echoes. Once it runs, :func:`seed` books a sample appointment for the demo handset
(when the demo's Redis holds none yet), so the simulator already shows a reminder to
answer.

**A restarted demo starts clean.** The in-process sandbox keeps its handsets in memory, so
a new process starts with empty inboxes, while the embedded Redis keeps its data (AOF).
Kept, that data would contradict the handsets: an appointment waiting for an answer to a
reminder no handset shows, receipts of messages the sandbox never sent. So
:func:`begin`, run by every gateway start before its workers, empties the embedded Redis
of the demo (zero-configuration mode, no ``SINCHBOT_REDIS_URL``) when it holds an earlier
demo's data, then books the sample appointment again. An earlier demo's data is what a
demo start marked (:data:`DEMO_MARKER`); a start outside the demo removes the mark, so the
data of a run with a provider is never cleared, and ``SINCHBOT_REDIS_URL`` is never
touched. :func:`try_it` is the banner's account of it.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from datetime import UTC, timedelta
from typing import Any, Final, Protocol

import structlog

from bot.core.botconfig import BotConfig
from bot.core.clock import Clock
from bot.core.config import Settings
from bot.storage.connection import RedisClient
from bot.storage.keys import PREFIX

__all__ = [
    "DEMO_HANDSET",
    "DEMO_MARKER",
    "DEMO_NUMBER",
    "DemoGateway",
    "DemoStart",
    "begin",
    "demo_config",
    "seed",
    "try_it",
]

log = structlog.get_logger(__name__)

DEMO_NUMBER: Final = "+61491570157"
"""The demo's own number (the sandbox's first dedicated number)."""
DEMO_HANDSET: Final = "+61491570156"
"""The virtual handset the demo's sample appointment belongs to."""
DEMO_MARKER: Final = f"{PREFIX}:demo"
"""String key (when the demo started, ISO 8601): the embedded Redis holds a demo's data."""


class DemoGateway(Protocol):
    """What the demo's start needs of its gateway (:class:`bot.app.gateway.Gateway` is the
    one implementation; the demo does not depend on it)."""

    @property
    def settings(self) -> Settings: ...
    @property
    def redis(self) -> RedisClient: ...
    @property
    def clock(self) -> Clock: ...
    @property
    def demo(self) -> bool:
        """Zero-configuration mode (the in-process sandbox is the provider)."""

    @property
    def demo_config(self) -> bool:
        """The demo runs :func:`demo_config` (no config file was given)."""

    @property
    def embedded(self) -> bool:
        """Redis is the gateway's own embedded redis-server."""

    def plugin_host(self, name: str) -> Any:
        """The host the loaded plugin ``name`` is given (``None`` when it is not loaded)."""


@dataclass(frozen=True)
class DemoStart:
    """What a demo's start found in its Redis and did (for the banner)."""

    cleared: bool = False
    """The embedded Redis held an earlier demo's data: emptied."""
    kept: bool = False
    """Redis held data that is not a demo's (``SINCHBOT_REDIS_URL``, or a run with a
    provider on this data folder): left as it was."""
    booked: str | None = None
    """The sample appointment booked by this start, if any."""


_starts: weakref.WeakKeyDictionary[DemoGateway, DemoStart] = weakref.WeakKeyDictionary()


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


async def seed(gateway: DemoGateway) -> str | None:
    """Book the demo's sample appointment (two hours from now, so its reminder goes at
    once) unless the demo's Redis already holds appointments; returns its id."""
    host = gateway.plugin_host("appointments")
    if host is None:
        return None
    from plugins.appointments.api import AppointmentsApi
    from plugins.appointments.models import INDEX, NewAppointment, new_document

    if await gateway.redis.hlen(INDEX):
        return None
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


async def begin(gateway: DemoGateway) -> DemoStart | None:
    """A gateway's start, before its workers: outside the demo, remove :data:`DEMO_MARKER`;
    in the demo, start clean if need be and book the sample appointment (see the module
    documentation). Returns what the demo's start did (``None`` outside the demo)."""
    redis = gateway.redis
    if not gateway.demo:
        await redis.delete(DEMO_MARKER)  # this data is no longer only a demo's
        return None
    cleared = kept = False
    if gateway.embedded:
        if await redis.exists(DEMO_MARKER):
            await redis.flushdb()
            cleared = True
            log.info("demo restarted clean: earlier demo conversations were cleared")
        elif await redis.dbsize():
            kept = True
            log.warning("demo on data that is not a demo's: kept, not cleared")
        if not kept:
            await redis.set(DEMO_MARKER, gateway.clock().astimezone(UTC).isoformat())
    elif await redis.dbsize():
        kept = True
    booked = await seed(gateway) if gateway.demo_config else None
    start = DemoStart(cleared=cleared, kept=kept, booked=booked)
    _starts[gateway] = start
    return start


def try_it(gateway: DemoGateway) -> list[str]:
    """The banner's demo lines: how to try it, and what this start did with earlier data."""
    start = _starts.get(gateway, DemoStart())
    line = f"  try it:    sinchbot chat --as {DEMO_HANDSET}"
    if start.booked is not None:
        line += "  (a sample appointment reminder is waiting: reply Y, N or R)"
    lines = [line]
    if start.cleared:
        lines.append(
            "  restart:   demo restarted clean: earlier demo conversations were cleared "
            "(the sandbox's handsets start empty)"
        )
    elif start.kept:
        lines.append(
            "  restart:   Redis holds data that is not a demo's: kept; the sandbox's handsets "
            "start empty, so earlier conversations may refer to messages they never got"
        )
    return lines
