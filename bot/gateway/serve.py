"""Moved to :mod:`bot.app.serve`; this alias goes once every import uses the new path."""

import sys

from bot.app import serve
from bot.app.serve import *  # noqa: F403  (for type checkers)

sys.modules[__name__] = serve
