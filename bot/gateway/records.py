"""Moved to :mod:`bot.receipts.records`; this alias goes once every import uses the new path."""

import sys

from bot.receipts import records
from bot.receipts.records import *  # noqa: F403  (for type checkers)

sys.modules[__name__] = records
