"""Moved to :mod:`bot.streams.leases`; this alias goes once every import uses the new path."""

import sys

from bot.streams import leases
from bot.streams.leases import *  # noqa: F403  (for type checkers)

sys.modules[__name__] = leases
