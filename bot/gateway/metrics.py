"""Moved to :mod:`bot.app.metrics`; this alias goes once every import uses the new path."""

import sys

from bot.app import metrics
from bot.app.metrics import *  # noqa: F403  (for type checkers)

sys.modules[__name__] = metrics
