"""Moved to :mod:`bot.streams.dlq`; this alias goes once every import uses the new path."""

import sys

from bot.streams import dlq
from bot.streams.dlq import *  # noqa: F403  (for type checkers)

sys.modules[__name__] = dlq
