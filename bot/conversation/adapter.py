"""Moved to :mod:`bot.inbox.engine`; this alias goes once every import uses the new path."""

import sys

from bot.inbox import engine
from bot.inbox.engine import *  # noqa: F403  (for type checkers)

sys.modules[__name__] = engine
