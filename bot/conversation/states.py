"""Conversation states, declared as classes whose states know their own names.

A state machine is a subclass of :class:`States` with one :class:`State` attribute per
state. Each state learns its name from the attribute it is assigned to (``__set_name__``),
prefixed with the group's name::

    class Booking(States):
        awaiting = State(timeout=timedelta(hours=2))
        rescheduling = State()

    Booking.awaiting.name      # "Booking:awaiting"
    Booking.all()              # (Booking.awaiting, Booking.rescheduling)

Each plugin's flow keeps its own state (see :mod:`bot.conversation.context`), so a name
only has to be unique within the plugin declaring it: two plugins may both declare
``class Order(States)``, and their ``Order:size`` states never meet (the session stores each
under its plugin's name). The ``name=`` keyword (``class Booking(States, name="visit")``)
still renames a group, for instance to keep the names stored by an earlier version.

A state with a ``timeout`` expires: entering it (``ctx.goto``) schedules an expiry, and the
expiry is an event handled by ``@router.timeout(state)`` handlers, never a silent reset. The
timeout is a duration, or comes from the plugin's settings when the state is entered
(``State(timeout="order_timeout")`` reads ``settings.order_timeout``), or is given per
transition (``ctx.goto(state, timeout=...)``).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any, ClassVar

__all__ = ["State", "StateLike", "States", "Timeout"]

Timeout = timedelta | float | str | Callable[[Any], "timedelta | float | None"] | None
"""A state's timeout: a duration (a :class:`~datetime.timedelta` or seconds), the name of a
settings attribute holding one, a function of the settings returning one, or ``None``
(never expires)."""


def _duration(value: object, what: str) -> timedelta | None:
    if value is None:
        return None
    if isinstance(value, timedelta):
        duration = value
    elif isinstance(value, int | float) and not isinstance(value, bool):
        duration = timedelta(seconds=value)
    else:
        raise TypeError(f"{what} must be a timedelta or seconds, not {value!r}")
    if duration <= timedelta(0):
        raise ValueError(f"{what} must be positive, not {duration}")
    return duration


class State:
    """One state of a :class:`States` group.

    Args:
        timeout: How long the conversation may stay in this state before an expiry event
            fires (see :data:`Timeout`): a :class:`~datetime.timedelta` or seconds; the
            name of an attribute of the plugin's settings (``"order_timeout"``); a function
            taking the settings; or ``None`` (never expires, unless ``ctx.goto`` gives a
            timeout).

    A state compares equal to its name, so ``ctx.state == Booking.awaiting`` and
    ``ctx.state == "Booking:awaiting"`` both work.

    Attributes:
        timeout: The fixed timeout (``None`` when there is none, or when it comes from the
            settings: see :meth:`timeout_for`).
    """

    __slots__ = ("_attr", "_from_settings", "_group", "_owner", "timeout")

    def __init__(self, timeout: Timeout = None) -> None:
        self._from_settings: str | Callable[[Any], timedelta | float | None] | None = None
        if isinstance(timeout, str) or callable(timeout):
            if isinstance(timeout, str) and not timeout:
                raise ValueError("a state's timeout setting needs a name")
            self._from_settings = timeout
            timeout = None
        self.timeout: timedelta | None = _duration(timeout, "a state's timeout")
        self._attr: str | None = None
        self._group: str | None = None
        self._owner: type[States] | None = None
        """The group declaring it (set when the group's class is created)."""

    @classmethod
    def _named(cls, name: str) -> State:
        """A state known only by its stored name (no group declares it any more)."""
        state = cls()
        state._group, _, state._attr = name.rpartition(":")
        return state

    def __set_name__(self, owner: type, attr: str) -> None:
        if self._attr is not None:
            raise TypeError(
                f"state {self.name!r} is assigned twice (again as {owner.__name__}.{attr}); "
                "declare a new State() for each state"
            )
        self._attr = attr
        # States.__init_subclass__ runs after __set_name__ and may rename the group.
        self._group = owner.__name__

    @property
    def name(self) -> str:
        """``"<group>:<attribute>"``, e.g. ``"Booking:awaiting"``."""
        if self._attr is None:
            raise TypeError("this State was never assigned to a class attribute, so it has no name")
        return f"{self._group}:{self._attr}"

    @property
    def group(self) -> str:
        """The name of the group the state belongs to (``"Booking"``)."""
        return self.name.rsplit(":", 1)[0]

    @property
    def expires(self) -> bool:
        """Whether entering the state schedules an expiry by itself (a fixed timeout or one
        from the settings)."""
        return self.timeout is not None or self._from_settings is not None

    @property
    def siblings(self) -> tuple[State, ...]:
        """The states of the group declaring this one, itself included (only itself for a
        state known by its name alone)."""
        return self._owner.all() if self._owner is not None else (self,)

    def timeout_for(self, settings: Any) -> timedelta | None:
        """The timeout entering the state schedules, given the plugin's ``settings``.

        Raises:
            TypeError: the timeout comes from a setting the settings do not have, or that
                is not a duration.
        """
        source = self._from_settings
        if source is None:
            return self.timeout
        if isinstance(source, str):
            if not hasattr(settings, source):
                raise TypeError(
                    f"state {self.name!r} takes its timeout from settings.{source}, which "
                    f"{type(settings).__name__} does not have"
                )
            value = getattr(settings, source)
        else:
            value = source(settings)
        return _duration(value, f"the timeout of state {self.name!r}")

    def __str__(self) -> str:
        return self.name

    def __repr__(self) -> str:
        timeout = f", timeout={self.timeout}" if self.timeout else ""
        if isinstance(self._from_settings, str):
            timeout = f", timeout=settings.{self._from_settings}"
        elif self._from_settings is not None:
            timeout = ", timeout=<from settings>"
        label = self.name if self._attr is not None else "<unnamed>"
        return f"State({label}{timeout})"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, State):
            return self is other or (self._attr is not None and self.name == other.name)
        if isinstance(other, str):
            return self._attr is not None and self.name == other
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.name) if self._attr is not None else id(self)


StateLike = State | str
"""A state or its name, as accepted by :meth:`Context.goto` and the ``state=`` filters."""


class States:
    """Base class of a group of states; see the module documentation.

    Subclass keyword ``name`` sets the group's name (default: the class name).
    """

    __state_group__: ClassVar[str] = ""
    __states__: ClassVar[tuple[State, ...]] = ()
    _registry: ClassVar[dict[str, dict[str, State]]] = {}
    """Every declared state by name, then by the qualified name of the class declaring it
    (two plugins may declare the same name)."""

    def __init_subclass__(cls, name: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        group = name or cls.__name__
        if not group or ":" in group:
            raise ValueError(f"a state group's name must be non-empty without ':', not {group!r}")
        cls.__state_group__ = group
        own = [value for value in vars(cls).values() if isinstance(value, State)]
        owner = f"{cls.__module__}.{cls.__qualname__}"
        for state in own:
            state._group = group
            state._owner = cls
            States._registry.setdefault(state.name, {})[owner] = state
        inherited = [s for base in reversed(cls.__mro__[1:]) for s in vars(base).values()]
        seen: dict[str, State] = {}
        for state in [*inherited, *own]:
            if isinstance(state, State):
                seen.setdefault(state.name, state)
        cls.__states__ = tuple(seen.values())

    def __init__(self) -> None:
        raise TypeError(f"{type(self).__name__} is a group of states; use its attributes")

    @classmethod
    def all(cls) -> tuple[State, ...]:
        """The group's states in declaration order (inherited ones first); on
        :class:`States` itself, every state declared anywhere."""
        if cls is States:
            return tuple(state for found in States._registry.values() for state in found.values())
        return cls.__states__

    @classmethod
    def get(cls, name: str) -> State | None:
        """The state called ``name`` in this group, or ``None``. On :class:`States` itself:
        the one state of that name in any group (``None`` when none, or several groups of
        different plugins, declare it).

        >>> States.get("Booking:awaiting")  # doctest: +SKIP
        State(Booking:awaiting, timeout=2:00:00)
        """
        if cls is States:
            found = States._registry.get(name)
            return next(iter(found.values())) if found is not None and len(found) == 1 else None
        return next((state for state in cls.__states__ if state.name == name), None)

    @classmethod
    def resolve(cls, state: StateLike) -> State:
        """``state`` itself, or the declared state of that name; ``ValueError`` for a name
        no group declares, or several do (then pass the :class:`State` itself)."""
        if isinstance(state, State):
            if state._attr is None:
                raise TypeError(f"{state!r} was never assigned to a States class attribute")
            return state
        found = States._registry.get(state, {})
        if len(found) > 1:
            raise ValueError(
                f"several groups declare a state named {state!r} ({', '.join(sorted(found))}); "
                "pass the State itself"
            )
        if not found:
            raise ValueError(f"no States group declares a state named {state!r}")
        return next(iter(found.values()))
