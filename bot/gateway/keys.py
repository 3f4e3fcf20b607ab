"""Moved to :mod:`bot.storage.keys`; this alias goes once every import uses the new path."""

import sys

from bot.storage import keys
from bot.storage.keys import *  # noqa: F403  (for type checkers)

sys.modules[__name__] = keys
