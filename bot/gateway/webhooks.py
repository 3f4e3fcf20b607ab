"""Moved to :mod:`bot.ingress.webhooks`; this alias goes once every import uses the new path."""

import sys

from bot.ingress import webhooks
from bot.ingress.webhooks import *  # noqa: F403  (for type checkers)

sys.modules[__name__] = webhooks
