"""``autoreply``: table-driven replies, with business-hours variants.

Rules map a whole-message keyword or a regular expression to a reply; the first rule that
matches answers. They come inline from the plugin's table in the bot's config file, or from
a TOML or YAML file (YAML needs PyYAML installed), or both (inline first)::

    plugins = ["autoreply"]

    [plugin.autoreply]
    file = "replies.toml"                        # optional: more rules, tried after these
    timezone = "Australia/Sydney"
    business_hours = { mon-fri = "09:00-17:00", sat = "10:00-13:00" }

    [[plugin.autoreply.rules]]
    keyword = ["hours", "opening hours"]         # the whole message, any case/punctuation
    text = "We are open 9-5 weekdays and 10-1 Saturdays."
    after_hours = "We're closed now; we open at 9am."   # outside business_hours

    [[plugin.autoreply.rules]]
    regex = "price of (?P<item>\\\\w+)"            # found anywhere, case-insensitive
    text = "Prices for {item}: see example.com/{item}"   # named groups fill the reply

``replies.toml`` holds ``[[rules]]`` tables of the same shape (YAML: a ``rules:`` list).
``business_hours`` keys are days (``mon``), ranges (``mon-fri``) or lists (``sat,sun``);
values are windows (``09:00-17:00``, several comma-separated, or ``closed``); unnamed days
are closed. A message no rule matches goes on to the keyword replies and the fallback.

Settings: :class:`~plugins.autoreply.settings.AutoreplySettings`; router:
:func:`~plugins.autoreply.router.build_router`.
"""

from bot.plugins import Plugin
from plugins.autoreply.router import build_router
from plugins.autoreply.settings import AutoreplySettings, BusinessHours, Rule, load_rules_file

__all__ = [
    "AutoreplySettings",
    "BusinessHours",
    "Rule",
    "build_router",
    "load_rules_file",
    "plugin",
]

plugin = Plugin(
    "autoreply",
    build_router,
    settings=AutoreplySettings,
    description="Keyword and regex auto-replies, with business-hours variants.",
)
"""The plugin, as the ``sinchbot.plugins`` entry point ``autoreply`` names it."""
