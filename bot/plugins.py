"""Moved to :mod:`bot.app.plugins`; this alias goes once every import uses the new path."""

import sys

from bot.app import plugins
from bot.app.plugins import *  # noqa: F403  (for type checkers)

sys.modules[__name__] = plugins
