"""Moved to :mod:`bot.core.aio`; this alias goes once every import uses the new path."""

import sys

from bot.core import aio
from bot.core.aio import *  # noqa: F403  (for type checkers)

sys.modules[__name__] = aio
