"""Moved to :mod:`bot.outbox.quiet_hours`; this alias goes once every import uses the new path."""

import sys

from bot.outbox import quiet_hours
from bot.outbox.quiet_hours import *  # noqa: F403  (for type checkers)

sys.modules[__name__] = quiet_hours
