"""Moved to :mod:`bot.outbox.suppression`; this alias goes once every import uses the new path."""

import sys

from bot.outbox import suppression
from bot.outbox.suppression import *  # noqa: F403  (for type checkers)

sys.modules[__name__] = suppression
