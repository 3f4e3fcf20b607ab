"""The ``sinchbot`` command line: the provider's actions from a shell, and the sandbox.

Every connector action is a subcommand (``send``, ``mms``, ``rcs``, ``status``, ``cancel``,
``senders``, ``webhooks``, ``blacklist``), plus ``sandbox`` to run the fake provider. Output is
for people by default; ``--json`` prints the provider's objects for scripts. Any failure is
one line on stderr and a non-zero exit status: 1 for an error, 2 for a usage error, 130 when
interrupted, 70 for a bug (``SINCHBOT_DEBUG=1`` shows its traceback).

Settings come from ``SINCHBOT_*`` variables and ``.env`` (see :mod:`bot.core.config`);
``--base-url``, ``--api-key`` and ``--api-secret`` override them. ``SINCHBOT_BASE_URL``
points every command at a sandbox.

Layout: :mod:`bot.cli.base` (parsers, argument types, the provider-command runner, output),
:mod:`bot.cli.messaging` (the provider's actions), :mod:`bot.cli.services` (serve, sandbox,
dlq), :mod:`bot.cli.main` (the parser and ``main``). Adding a command: write a
``_add_<name>(commands)`` builder that creates its parser and sets ``handler`` (with
:func:`bot.cli.base.provider_command` for commands that call the provider), and list it in
:data:`bot.cli.main.COMMANDS`.
"""

from bot.cli.base import CONTENT_PREVIEW, Context, UsageError
from bot.cli.main import COMMANDS, build_parser, describe_error, main

__all__ = [
    "COMMANDS",
    "CONTENT_PREVIEW",
    "Context",
    "UsageError",
    "build_parser",
    "describe_error",
    "main",
]
