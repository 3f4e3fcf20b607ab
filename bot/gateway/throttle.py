"""Moved to :mod:`bot.sender.throttle`; this alias goes once every import uses the new path."""

import sys

from bot.sender import throttle
from bot.sender.throttle import *  # noqa: F403  (for type checkers)

sys.modules[__name__] = throttle
