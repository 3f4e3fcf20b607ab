"""Moved to :mod:`bot.app.assembly`; this alias goes once every import uses the new path."""

import sys

from bot.app import assembly
from bot.app.assembly import *  # noqa: F403  (for type checkers)

sys.modules[__name__] = assembly
