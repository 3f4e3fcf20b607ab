"""Moved to :mod:`bot.ingress.admission`; this alias goes once every import uses the new path."""

import sys

from bot.ingress import admission
from bot.ingress.admission import *  # noqa: F403  (for type checkers)

sys.modules[__name__] = admission
