"""Moved to :mod:`bot.receipts.timeline`; this alias goes once every import uses the new path."""

import sys

from bot.receipts import timeline
from bot.receipts.timeline import *  # noqa: F403  (for type checkers)

sys.modules[__name__] = timeline
