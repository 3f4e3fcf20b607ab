"""Moved to :mod:`bot.core.sms`; this alias goes once every import uses the new path."""

import sys

from bot.core import sms
from bot.core.sms import *  # noqa: F403  (for type checkers)

sys.modules[__name__] = sms
