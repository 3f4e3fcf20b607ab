"""Property-based: random handset answers, clock moves and receipts drive one appointment
through the appointments state machine, and its invariants hold after every step:

- the status is always one of the documented ones, and the history starts ``scheduled``;
- an outcome (confirmed, cancelled, reschedule_requested, undeliverable) is final: the
  status never changes again, nothing more is sent and no timer of it stays pending;
- at most one nudge, and an unrecognised answer is asked about at most once in a row;
- every message sent fits the two-segment budget.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from bot.conversation.testing_backend import receipt
from plugins.appointments import AppointmentSettings
from plugins.appointments.flow import timer_ids
from tests.plugins.test_appointments_flow import SLOTS, Harness

STATUSES = {
    "scheduled",
    "reminded",
    "confirmed",
    "cancelled",
    "reschedule_requested",
    "no_response",
    "undeliverable",
}
FINAL = {"confirmed", "cancelled", "reschedule_requested", "undeliverable"}

answers = st.sampled_from(["Y", "yes", "N", "no", "R", "1", "2", "3", "maybe", "Tuesday 3pm", "?"])
steps = st.one_of(
    st.tuples(st.just("send"), answers),
    st.tuples(st.just("advance"), st.integers(min_value=1, max_value=14 * 60)),  # minutes
    st.tuples(st.just("receipt"), st.sampled_from(["delivered", "failed", "expired"])),
)


async def drive(sequence: list[tuple[str, object]], with_slots: bool) -> None:
    h = Harness(AppointmentSettings(slots=SLOTS) if with_slots else None)
    appointment = await h.create(starts_in=timedelta(days=2))
    await h.advance(timedelta(days=1))  # the reminder
    started = h.now + timedelta(days=1)
    final: str | None = None
    sent_when_final = 0
    for kind, value in sequence:
        if kind == "send":
            if h.backend.replies:
                await h.send(str(value))
        elif kind == "advance":
            assert isinstance(value, int)
            await h.advance(timedelta(minutes=value))
        elif h.backend.replies:
            await h.engine.dispatch(receipt(str(value), of=h.backend.replies[0]), h.backend)

        docs = h.backend.flow("appointments").data.get("appointments", {})
        if appointment not in docs:
            # Pruned from the session once over and started; its document stays at its key.
            stored, _ = h.run_writes()
            (document,) = stored.values()
            assert document["status"] in FINAL | {"no_response"}, f"pruned while {document}"
            assert h.now >= started
            continue
        doc = h.doc(appointment)
        history = [entry["status"] for entry in doc["history"]]
        assert doc["status"] in STATUSES
        assert history[0] == "scheduled" and set(history) <= STATUSES
        assert sum(entry.get("note") == "nudge sent" for entry in doc["history"]) <= 1
        assert doc.get("asked_again", 0) <= 1 or with_slots
        assert all(reply.segments.segments <= 2 for reply in h.backend.replies)
        if final is not None:
            assert doc["status"] == final, f"{final} changed to {doc['status']}"
            assert len(h.backend.replies) == sent_when_final, "sent after the outcome"
        elif doc["status"] in FINAL:
            final, sent_when_final = doc["status"], len(h.backend.replies)
            ids = timer_ids(appointment).values()
            pending = {i for i in ids if h.backend.timer("appointments", i) is not None}
            assert not pending, f"timers left after {final}: {pending}"


@settings(max_examples=150, deadline=None)
@given(st.lists(steps, max_size=25), st.booleans())
def test_random_answers_and_clocks_keep_the_appointments_invariants(
    sequence: list[tuple[str, object]], with_slots: bool
) -> None:
    asyncio.run(drive(sequence, with_slots))
