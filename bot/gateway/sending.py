"""Moved to :mod:`bot.sender.batching`; this alias goes once every import uses the new path."""

import sys

from bot.sender import batching
from bot.sender.batching import *  # noqa: F403  (for type checkers)

sys.modules[__name__] = batching
