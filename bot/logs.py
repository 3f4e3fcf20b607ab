"""Moved to :mod:`bot.core.logs`; this alias goes once every import uses the new path."""

import sys

from bot.core import logs
from bot.core.logs import *  # noqa: F403  (for type checkers)

sys.modules[__name__] = logs
