"""Moved to :mod:`bot.streams.pump`; this alias goes once every import uses the new path."""

import sys

from bot.streams import pump
from bot.streams.pump import *  # noqa: F403  (for type checkers)

sys.modules[__name__] = pump
