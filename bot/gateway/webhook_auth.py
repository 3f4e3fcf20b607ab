"""Moved to :mod:`bot.ingress.webhook_auth`; this alias goes once every import uses the new path."""

import sys

from bot.ingress import webhook_auth
from bot.ingress.webhook_auth import *  # noqa: F403  (for type checkers)

sys.modules[__name__] = webhook_auth
