"""Moved to :mod:`bot.api.routes`; this alias goes once every import uses the new path."""

import sys

from bot.api import routes
from bot.api.routes import *  # noqa: F403  (for type checkers)

sys.modules[__name__] = routes
