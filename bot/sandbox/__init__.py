"""A faithful fake of the Sinch MessageMedia / Engage REST API, for tests, development and benchmarks.

>>> async with Sandbox(SandboxConfig(step_delay=0.01)) as sb:  # doctest: +SKIP
...     ...  # point a SinchClient at sb.url with sb.api_key / sb.api_secret

Modules: :mod:`~bot.sandbox.config` (settings), :mod:`~bot.sandbox.state` (memory and
rules), :mod:`~bot.sandbox.schemas` (request bodies), :mod:`~bot.sandbox.payloads` (pushed
and polled shapes), :mod:`~bot.sandbox.delivery` (receipt timing and pushes),
:mod:`~bot.sandbox.push` (outbound HTTP), :mod:`~bot.sandbox.faults` (fault injection),
:mod:`~bot.sandbox.app` (provider API), :mod:`~bot.sandbox.control` (``/_sandbox/``),
:mod:`~bot.sandbox.server` (:class:`Sandbox`, :func:`serve`), :mod:`~bot.sandbox.velocity`
(webhook templates).
"""

from bot.sandbox.app import create_app
from bot.sandbox.config import SandboxConfig
from bot.sandbox.server import HandsetClient, Sandbox, serve

__all__ = ["HandsetClient", "Sandbox", "SandboxConfig", "create_app", "serve"]
