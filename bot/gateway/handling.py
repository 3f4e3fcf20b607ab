"""Moved to :mod:`bot.inbox.handling`; this alias goes once every import uses the new path."""

import sys

from bot.inbox import handling
from bot.inbox.handling import *  # noqa: F403  (for type checkers)

sys.modules[__name__] = handling
