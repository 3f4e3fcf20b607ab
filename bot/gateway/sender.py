"""Moved to :mod:`bot.sender.loop`; this alias goes once every import uses the new path."""

import sys

from bot.sender import loop
from bot.sender.loop import *  # noqa: F403  (for type checkers)

sys.modules[__name__] = loop
