"""Moved to :mod:`bot.api.openapi`; this alias goes once every import uses the new path."""

import sys

from bot.api import openapi
from bot.api.openapi import *  # noqa: F403  (for type checkers)

sys.modules[__name__] = openapi
