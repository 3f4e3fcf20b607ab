"""Moved to :mod:`bot.inbox.commands`; this alias goes once every import uses the new path."""

import sys

from bot.inbox import commands
from bot.inbox.commands import *  # noqa: F403  (for type checkers)

sys.modules[__name__] = commands
