"""Moved to :mod:`bot.app.hosts`; this alias goes once every import uses the new path."""

import sys

from bot.app import hosts
from bot.app.hosts import *  # noqa: F403  (for type checkers)

sys.modules[__name__] = hosts
