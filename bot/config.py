"""Moved to :mod:`bot.core.config`; this alias goes once every import uses the new path."""

import sys

from bot.core import config
from bot.core.config import *  # noqa: F403  (for type checkers)

sys.modules[__name__] = config
