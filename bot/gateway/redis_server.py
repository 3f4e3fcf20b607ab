"""Moved to :mod:`bot.storage.redis_server`; this alias goes once every import uses the new path."""

import sys

from bot.storage import redis_server
from bot.storage.redis_server import *  # noqa: F403  (for type checkers)

sys.modules[__name__] = redis_server
