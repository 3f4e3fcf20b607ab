"""Moved to :mod:`bot.storage.events`; this alias goes once every import uses the new path."""

import sys

from bot.storage import events
from bot.storage.events import *  # noqa: F403  (for type checkers)

sys.modules[__name__] = events
