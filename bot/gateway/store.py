"""Moved to :mod:`bot.storage.store`; this alias goes once every import uses the new path."""

import sys

from bot.storage import store
from bot.storage.store import *  # noqa: F403  (for type checkers)

sys.modules[__name__] = store
