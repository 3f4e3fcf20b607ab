"""``appointments``: two-way appointment confirmations by SMS, end to end.

Appointments come in through the management API (``POST /api/appointments``), the CLI
(``sinchbot appointments add``, which calls the API) and CSV import
(``POST /api/appointments/import``, ``sinchbot appointments import FILE.csv``). A reminder goes
out ``remind_before`` ahead of the start ("Reply Y to confirm, N to cancel, R to
reschedule"), and the handset's answer decides the appointment's status:

=====================  =====================================================================
``scheduled``          created; the reminder is pending
``reminded``           the reminder went; waiting for an answer (or for a reschedule choice)
``confirmed``          answered Y or YES
``cancelled``          answered N or NO, or cancelled through the API
``reschedule_requested``  answered R, then chose an offered slot or wrote a preferred time
``no_response``        no answer ``no_reply_after`` after the reminder (counted from its
                       delivery) nor after one nudge
``undeliverable``      a reminder's receipt said failed, expired or rejected
=====================  =====================================================================

Only answers are taken at once: a keyword another router knows (``HOURS``) gets its own
answer while the question waits, and the question stays open. A message nobody understands
is asked once more; a second one is left to the fallback reply. Two pending appointments of
one number are told apart by the prompt the handset answers (the reminder's metadata names
its appointment), else the one asked about last; the texts say which one a bare Y is for. Outcomes are forwarded to event
subscribers as ``appointment.confirmed``, ``.cancelled``, ``.reschedule_requested``,
``.no_response`` and ``.undeliverable``, with the appointment's document as data.

**N, not CANCEL.** The compliance handler runs before every plugin and treats ``CANCEL``
(like STOP, END, QUIT...) as an opt-out word: a handset answering "CANCEL" is opted out of
every message, and this plugin never sees the answer. The reminder therefore asks for N.
(``YES`` is an opt-in word only for a number that opted out; otherwise it reaches us.)

Settings: :class:`~plugins.appointments.settings.AppointmentSettings` (``[plugin.appointments]``
in the bot's config file). Flow: :mod:`plugins.appointments.flow`; API:
:mod:`plugins.appointments.api`; storage: :mod:`plugins.appointments.models`.
"""

from bot.plugins import Plugin
from plugins.appointments.api import routes
from plugins.appointments.flow import build_router
from plugins.appointments.models import FINAL, INDEX, STATUSES, appointment_key
from plugins.appointments.settings import AppointmentSettings, format_duration, parse_duration

__all__ = [
    "FINAL",
    "INDEX",
    "STATUSES",
    "AppointmentSettings",
    "appointment_key",
    "build_router",
    "format_duration",
    "parse_duration",
    "plugin",
    "routes",
]

plugin = Plugin(
    "appointments",
    build_router,
    settings=AppointmentSettings,
    routes=routes,
    description="Two-way appointment confirmations: reminder, Y/N/R, nudge, status and events.",
)
"""The plugin, as the ``sinchbot.plugins`` entry point ``appointments`` names it."""
