"""Conversation states, declared as classes whose states know their own names.

A state machine is a subclass of :class:`States` with one :class:`State` attribute per
state. Each state learns its name from the attribute it is assigned to (``__set_name__``),
prefixed with the group's name::

    class Booking(States):
        awaiting = State(timeout=timedelta(hours=2))
        rescheduling = State()

    Booking.awaiting.name      # "Booking:awaiting"
    Booking.all()              # (Booking.awaiting, Booking.rescheduling)
    States.get("Booking:awaiting") is Booking.awaiting

The session stores the name, so names must be unique across every plugin a gateway runs:
two groups declaring the same name is an error at import time. Give a group an explicit
name when its class name is too generic: ``class Booking(States, name="appointments.booking")``.

A state with a ``timeout`` expires: entering it (``ctx.goto``) schedules an expiry, and the
expiry is an event handled by ``@router.timeout(state)`` handlers, never a silent reset.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, ClassVar

__all__ = ["State", "StateLike", "States"]


class State:
    """One state of a :class:`States` group.

    Args:
        timeout: How long the conversation may stay in this state before an expiry event
            fires (a :class:`~datetime.timedelta` or seconds). ``None``: never expires.

    A state compares equal to its name, so ``ctx.state == Booking.awaiting`` works whether
    ``ctx.state`` holds the name (it does) or the state itself.

    Attributes:
        timeout: How long the conversation may stay in the state (``None``: for ever).
    """

    __slots__ = ("_attr", "_group", "timeout")

    def __init__(self, timeout: timedelta | float | None = None) -> None:
        if timeout is not None and not isinstance(timeout, timedelta):
            timeout = timedelta(seconds=timeout)
        if timeout is not None and timeout <= timedelta(0):
            raise ValueError(f"a state's timeout must be positive, not {timeout}")
        self.timeout: timedelta | None = timeout
        self._attr: str | None = None
        self._group: str | None = None

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

    def __str__(self) -> str:
        return self.name

    def __repr__(self) -> str:
        timeout = f", timeout={self.timeout}" if self.timeout else ""
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
    _registry: ClassVar[dict[str, tuple[str, State]]] = {}
    """Every declared state by name, with the qualified name of the class declaring it."""

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
            known = States._registry.get(state.name)
            if known is not None and known[0] != owner:
                raise ValueError(
                    f"state {state.name!r} is already declared by {known[0]}; give one of "
                    f"the groups its own name: class {cls.__name__}(States, name='...')"
                )
        for state in own:
            States._registry[state.name] = (owner, state)
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
            return tuple(state for _, state in States._registry.values())
        return cls.__states__

    @classmethod
    def get(cls, name: str) -> State | None:
        """The state called ``name`` in this group (on :class:`States` itself: in any
        group), or ``None``.

        >>> States.get("Booking:awaiting")  # doctest: +SKIP
        State(Booking:awaiting, timeout=2:00:00)
        """
        if cls is States:
            entry = States._registry.get(name)
            return None if entry is None else entry[1]
        return next((state for state in cls.__states__ if state.name == name), None)

    @classmethod
    def resolve(cls, state: StateLike) -> State:
        """``state`` itself, or the declared state of that name; ``ValueError`` for a name
        no group declares."""
        if isinstance(state, State):
            if state._attr is None:
                raise TypeError(f"{state!r} was never assigned to a States class attribute")
            return state
        found = States.get(state)
        if found is None:
            raise ValueError(f"no States group declares a state named {state!r}")
        return found
