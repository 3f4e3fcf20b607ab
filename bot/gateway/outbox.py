"""Moved to :mod:`bot.outbox.queue`; this alias goes once every import uses the new path."""

import sys

from bot.outbox import queue
from bot.outbox.queue import *  # noqa: F403  (for type checkers)

sys.modules[__name__] = queue
