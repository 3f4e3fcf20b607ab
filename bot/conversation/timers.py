"""Timer events and the timers handlers ask for: :class:`TimeoutEvent`, :class:`TimerEvent`,
:class:`TimerRef`, :data:`STATE_TIMEOUT_ID` and :func:`timer_key` (see :mod:`bot.storage.timers`, where they
live with the inbox stream's other encodings)."""

from bot.storage.timers import STATE_TIMEOUT_ID, TimeoutEvent, TimerEvent, TimerRef, timer_key

__all__ = ["STATE_TIMEOUT_ID", "TimeoutEvent", "TimerEvent", "TimerRef", "timer_key"]
