"""Flows: each plugin's own state and data in a conversation.

Every root router given to the :class:`~bot.conversation.engine.Engine` (one per plugin,
plus the built-in ``compliance`` and ``keywords``) owns one *flow* per conversation, named
after the router: its current state, its data and its pending state expiry. A handler sees
only its own plugin's flow as ``ctx.state`` and ``ctx.data``; ``ctx.end()`` ends only that
flow; the engine picks a plugin's handlers by that plugin's state. Two plugins can therefore
run flows on one number at once without touching each other's data (``ctx.flows`` reads the
others, ``ctx.end_all()`` ends every one).

In the session (:class:`~bot.storage.sessions.Session`), the flows are one JSON object, the
hash field ``flows``: the plugin's name → ``{"state": ..., "data": {...}, "expiry": ...}``,
each key left out when empty and a flow with none of them left out. ``expiry`` is the id of
the flow's pending state expiry (cancelled when the flow leaves the state).

Sessions stored before flows had namespaces hold one ``state`` and one ``data`` object for
the whole conversation. :func:`migrate` moves them into flows when such a session is loaded
(and the next save stores the new shape): the keys a router claims with
``Router(..., legacy_keys=[...])`` go to its flow; the state goes, with the data nobody
claimed, to the flow of the plugin that owns it: the plugin claiming it by name
(``Router(..., legacy_states=[...])``, for a state no group declares any more), else the one
whose handlers name it, else the one whose ``States`` groups declare it (a state of a group
a plugin's handlers use is that plugin's, even when only ``ctx.goto`` enters it); what has
no owner is kept, unrouted, under :data:`LEGACY_FLOW`, so nothing is lost.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final

from pydantic import BaseModel

from bot.conversation.states import State, States
from bot.storage.timers import STATE_TIMEOUT_ID

__all__ = ["LEGACY_FLOW", "FlowIndex", "FlowView", "expiry_id", "migrate"]

LEGACY_FLOW: Final = "_shared"
"""The flow holding what a pre-namespace session had that no plugin claims (no router
routes to it; ``ctx.flows`` shows it, ``ctx.end_all()`` ends it)."""


def expiry_id(flow: str) -> str:
    """The timer id of ``flow``'s state expiry: ``"state-timeout:<flow>"``."""
    return f"{STATE_TIMEOUT_ID}:{flow}"


@dataclass(frozen=True, slots=True)
class FlowView:
    """One flow of the conversation as a handler reads it (:attr:`Context.flows`).

    Attributes:
        name: The flow's name: its plugin's (its root router's).
        state: Its current state's name (``None``: none).
        data: Its data, read-only.
    """

    name: str
    state: str | None
    data: Mapping[str, Any]


@dataclass
class FlowIndex:
    """What the engine knows of its flows: their names (the root routers'), the states each
    one's handlers name and the other states of their groups, the data model each one
    declares, the pre-namespace data keys and state names each one claims. Built by the
    engine; an empty index (a context built outside an engine) knows nothing, and every name
    is a flow of its own.

    Attributes:
        names: The flows, in the order the engine tries their routers.
        states: Per flow, the states its handlers name, by name.
        declared: Per flow, the other states of the groups of those states, by name.
        models: Per flow, the pydantic model of its data (``Router(..., data=Model)``).
        legacy_keys: Per flow, the pre-namespace data keys it claims.
        legacy_states: Per flow, the pre-namespace state names it claims.
    """

    names: tuple[str, ...] = ()
    states: dict[str, dict[str, State]] = field(default_factory=dict)
    declared: dict[str, dict[str, State]] = field(default_factory=dict)
    models: dict[str, type[BaseModel]] = field(default_factory=dict)
    legacy_keys: dict[str, tuple[str, ...]] = field(default_factory=dict)
    legacy_states: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def add(
        self,
        name: str,
        states: Iterable[State] = (),
        *,
        model: type[BaseModel] | None = None,
        legacy_keys: Iterable[str] = (),
        legacy_states: Iterable[str] = (),
    ) -> None:
        """Index the flow ``name`` (``ValueError`` if it is indexed already)."""
        if name in self.states:
            raise ValueError(
                f"two root routers are named {name!r}; each plugin's flow is keyed by its "
                "router's name, so give them different names"
            )
        if name == LEGACY_FLOW:
            raise ValueError(f"{LEGACY_FLOW!r} is reserved; name the router otherwise")
        self.names = (*self.names, name)
        named = self.states[name] = {state.name: state for state in states}
        self.declared[name] = {
            sibling.name: sibling
            for state in named.values()
            for sibling in state.siblings
            if sibling.name not in named
        }
        if model is not None:
            self.models[name] = model
        keys = tuple(legacy_keys)
        if keys:
            self.legacy_keys[name] = keys
        claimed = tuple(legacy_states)
        if claimed:
            self.legacy_states[name] = claimed

    def state(self, flow: str, name: str | None) -> State | None:
        """The state ``name`` of ``flow``: the one its handlers name or its groups declare,
        else the one state declared under that name anywhere, else a state known by its
        name only."""
        if name is None:
            return None
        known = self.states.get(flow)
        found = known.get(name) if known is not None else None
        if found is None:
            found = self.declared.get(flow, {}).get(name) or States.get(name) or State._named(name)
            if known is not None:
                known[name] = found
        return found

    def owner(self, state: str) -> str | None:
        """The flow owning the state named ``state``: the first claiming it
        (``legacy_states``), else the first whose handlers name it, else the first whose
        groups declare it."""
        for owns in (self.legacy_states, self.states, self.declared):
            found = next((flow for flow in self.names if state in owns.get(flow, ())), None)
            if found is not None:
                return found
        return None


def migrate(
    state: str | None, data: Mapping[str, Any], index: FlowIndex, unowned: str = LEGACY_FLOW
) -> dict[str, dict[str, Any]]:
    """The flows of a pre-namespace session (one ``state``, one shared ``data``); see the
    module documentation. What no flow claims goes to ``unowned``. ``data`` is not changed
    (its values are shared, not copied)."""
    rest = dict(data)
    moved: dict[str, dict[str, Any]] = {}
    for flow, keys in index.legacy_keys.items():
        for key in keys:
            if key in rest:
                moved.setdefault(flow, {})[key] = rest.pop(key)
    flows: dict[str, dict[str, Any]] = {}
    if state is not None:
        owner = index.owner(state) or unowned
        record: dict[str, Any] = {"state": state}
        declared = (
            index.states.get(owner, {}).get(state)
            or index.declared.get(owner, {}).get(state)
            or States.get(state)
        )
        if declared is None or declared.expires:
            # Its pending expiry, if any, was stored under the one pre-namespace id.
            record["expiry"] = STATE_TIMEOUT_ID
        own = {**moved.pop(owner, {}), **rest}
        rest = {}
        if own:
            record["data"] = own
        flows[owner] = record
    if rest:
        moved.setdefault(unowned, {}).update(rest)
    for flow, own in moved.items():
        flows.setdefault(flow, {})["data"] = own
    return flows


EMPTY: Final[Mapping[str, Any]] = MappingProxyType({})
