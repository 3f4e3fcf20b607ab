"""Deliberate crashes for tests: ``SINCHBOT_CRASH_AT=<name>`` makes the process exit at once
(``os._exit(137)``, as a SIGKILL would leave it) when it reaches that point. Names:

- ``after_enqueue_before_answer``: a webhook's event is stored, the 200 not yet sent.
- ``after_handle_before_commit``: a batch of inbox events was handled, nothing committed.
- ``after_send_before_record``: the provider accepted a batch, nothing recorded yet.

``SINCHBOT_CRASH_AFTER=N`` crashes on the N-th time the point is reached (default 1).
Without the variable, :func:`crash_point` costs one dictionary lookup.
"""

from __future__ import annotations

import os
import sys

_TARGET = os.environ.get("SINCHBOT_CRASH_AT", "")
_AFTER = int(os.environ.get("SINCHBOT_CRASH_AFTER", "1") or "1")
_seen: dict[str, int] = {}


def crash_point(name: str) -> None:
    """Exit the process here if the environment asks for a crash at ``name``."""
    if name != _TARGET:
        return
    _seen[name] = _seen.get(name, 0) + 1
    if _seen[name] >= _AFTER:
        sys.stderr.write(f"crash point {name} reached: exiting\n")
        sys.stderr.flush()
        os._exit(137)
