"""Moved to :mod:`bot.core.botconfig`; this alias goes once every import uses the new path."""

import sys

from bot.core import botconfig
from bot.core.botconfig import *  # noqa: F403  (for type checkers)

sys.modules[__name__] = botconfig
