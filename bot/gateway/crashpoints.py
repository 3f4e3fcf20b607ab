"""Moved to :mod:`bot.core.crashpoints`; this alias goes once every import uses the new path."""

import sys

from bot.core import crashpoints
from bot.core.crashpoints import *  # noqa: F403  (for type checkers)

sys.modules[__name__] = crashpoints
