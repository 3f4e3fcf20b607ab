"""States learn their own names, are looked up by name and carry timeouts."""

from __future__ import annotations

from datetime import timedelta

import pytest

from bot.conversation import State, States


class Visit(States):
    asked = State(timeout=timedelta(hours=2))
    rescheduling = State(timeout=90)
    done = State()


class Renamed(States, name="clinic.visit"):
    asked = State()


def test_states_learn_their_names_from_their_attributes() -> None:
    assert Visit.asked.name == "Visit:asked"
    assert str(Visit.rescheduling) == "Visit:rescheduling"
    assert Visit.asked.group == "Visit"
    assert Renamed.asked.name == "clinic.visit:asked"
    assert repr(Visit.asked) == "State(Visit:asked, timeout=2:00:00)"
    assert repr(Visit.done) == "State(Visit:done)"


def test_timeouts_are_timedeltas_and_positive() -> None:
    assert Visit.asked.timeout == timedelta(hours=2)
    assert Visit.rescheduling.timeout == timedelta(seconds=90)
    assert Visit.done.timeout is None
    with pytest.raises(ValueError, match="positive"):
        State(timeout=0)
    with pytest.raises(ValueError, match="positive"):
        State(timeout=timedelta(seconds=-1))


def test_all_lists_a_group_in_declaration_order_and_get_finds_by_name() -> None:
    assert Visit.all() == (Visit.asked, Visit.rescheduling, Visit.done)
    assert Visit.get("Visit:done") is Visit.done
    assert Visit.get("clinic.visit:asked") is None  # another group's
    assert States.get("clinic.visit:asked") is Renamed.asked
    assert States.get("Nope:nothing") is None
    assert {Visit.asked, Renamed.asked} <= set(States.all())


def test_resolve_accepts_states_and_declared_names_only() -> None:
    assert States.resolve(Visit.done) is Visit.done
    assert States.resolve("Visit:asked") is Visit.asked
    with pytest.raises(ValueError, match="no States group declares"):
        States.resolve("Visit:askd")
    with pytest.raises(TypeError, match="never assigned"):
        States.resolve(State())


def test_a_state_equals_its_name_and_hashes_alike() -> None:
    assert Visit.asked == "Visit:asked"
    assert "Visit:asked" == Visit.asked  # noqa: SIM300 - the reflected comparison is the point
    assert Visit.asked != "Visit:done"
    assert Visit.asked != Visit.done
    assert Visit.asked != 3
    by_state: dict[object, int] = {Visit.asked: 1}
    assert by_state["Visit:asked"] == 1


def test_subclasses_inherit_states() -> None:
    class Extended(Visit):
        extra = State()

    assert Extended.extra.name == "Extended:extra"
    assert Extended.all() == (*Visit.all(), Extended.extra)


def test_two_plugins_may_declare_the_same_name_then_only_objects_resolve() -> None:
    # Each plugin's flow keeps its own state, so names need only be unique per plugin.
    class Visit(States):  # the same name as the module's group, declared elsewhere
        asked = State()

    assert Visit.asked.name == "Visit:asked" == globals()["Visit"].asked.name
    assert States.get("Visit:asked") is None  # ambiguous by name alone
    with pytest.raises(ValueError, match="several groups declare"):
        States.resolve("Visit:asked")
    assert States.resolve(Visit.asked) is Visit.asked

    class Other(States, name="other.visit"):
        asked = State()

    assert Other.asked.name == "other.visit:asked"


def test_declaring_a_group_again_from_the_same_place_replaces_it() -> None:
    def declare() -> type[States]:
        class Again(States, name="again"):
            one = State()

        return Again

    first, second = declare(), declare()
    assert States.get("again:one") is second.all()[0]
    assert first.all()[0] is not second.all()[0]


def test_group_names_and_misuse_are_checked() -> None:
    with pytest.raises(ValueError, match="without ':'"):

        class Bad(States, name="a:b"):
            pass

    with pytest.raises(TypeError, match="group of states"):
        Visit()
    shared = State()
    # Python 3.11 wraps errors of __set_name__ in a RuntimeError; 3.12 does not.
    with pytest.raises((TypeError, RuntimeError)) as info:

        class Twice(States, name="twice"):
            one = shared
            two = shared

    assert "assigned twice" in str(info.value.__cause__ or info.value)
    with pytest.raises(TypeError, match="no name"):
        _ = State().name
    assert repr(State()) == "State(<unnamed>)"
