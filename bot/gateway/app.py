"""Moved to :mod:`bot.app.gateway`; this alias goes once every import uses the new path."""

import sys

from bot.app import gateway
from bot.app.gateway import *  # noqa: F403  (for type checkers)

sys.modules[__name__] = gateway
