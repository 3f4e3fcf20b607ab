"""Timer events and the timers handlers ask for: :class:`TimeoutEvent`, :class:`TimerEvent`,
:class:`TimerRef` and :data:`STATE_TIMEOUT_ID` (see :mod:`bot.storage.timers`, where they
live with the inbox stream's other encodings)."""

from bot.storage.timers import STATE_TIMEOUT_ID, TimeoutEvent, TimerEvent, TimerRef

__all__ = ["STATE_TIMEOUT_ID", "TimeoutEvent", "TimerEvent", "TimerRef"]
