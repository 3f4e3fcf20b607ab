"""The appointments conversation: reminder, answer, nudge, outcome.

Every change to an appointment happens here, in the handlers of the conversation that owns
it (one writer, events in order). The live copy of each appointment is in the plugin's flow
of the session, under ``ctx.data["appointments"][id]``; after each change the handler writes
the whole document to its key in the event's batch
(:meth:`~bot.conversation.context.Context.on_commit`), and forwards ``appointment.<status>``
for an outcome. The plugin's data is its own (another plugin's flow in the same
conversation never sees it); sessions stored before plugins had their own data had it
under the same key of the shared data, which the router claims (``legacy_keys``).

The life of one appointment::

    appointments.create (command from the API)  → scheduled; timer "remind" at remind_at
    remind   → reminder sent (prompt "appointment", metadata {"appointment": id})
               → reminded; timer "nudge" in T
    Y / YES  → confirmed       N / NO → cancelled
    R        → reschedule step: the slots by number, or "what time suits you?"
               → the choice or the text → reschedule_requested (T without one: requested
               without a preferred time)
    other    → asked once more; a second unrecognised answer is left to the fallback
               (in the reschedule step too; there Y and N still confirm and cancel)
    nudge    → one nudge (same prompt), timer "final" in T;  final → no_response
    receipt failed / expired / rejected of our prompt → undeliverable
    appointments.cancel (command from the API) → cancelled

Only answers are taken at once (Y, N, R and their words, an offered slot). Everything else
is left to the routers after this one first: "other" above, and the free-text preferred
time of the reschedule step, are fallback handlers (``fallback=True``), so a keyword another
router knows (``HOURS``) gets its own answer while a question waits, and the question stays
open (no repeat: it is still on the handset's screen, and the nudge repeats it in time).

Which appointment an answer is for: the prompt the handset answered names it (its metadata
is echoed on the reply). A reply that answers no prompt goes to the one appointment waiting
for an answer or, when several are, the one asked about last. With several waiting, the
texts say which one a bare answer is for: a reminder sent while another appointment waits
adds that the reply is about this one and names the one asked about next, and the answer
to one appointment asks about the next one waiting in the same message (a prompt naming
it). Answers count only before the appointment's start; a late answer to a ``no_response``
appointment still counts then. Once the start has passed, no nudge goes (the appointment
becomes ``no_response`` at once), nor a reminder whose timer fired too late.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Final

import structlog

from bot.conversation import (
    PROMPT_KEY,
    Context,
    Custom,
    FilterResult,
    Keyword,
    Router,
    Status,
    normalise,
)
from bot.inbox.handling import EventContext
from bot.receipts.forwarding import forward
from bot.storage.events import GW_ID
from plugins.appointments.models import (
    FINAL,
    Appointment,
    appointment_key,
    dumps,
    history_entry,
    ttl_ms,
)
from plugins.appointments.settings import AppointmentSettings

__all__ = [
    "APPOINTMENT",
    "CANCEL",
    "CREATE",
    "DATA_KEY",
    "PROMPT",
    "build_router",
    "timer_ids",
]

log = structlog.get_logger(__name__)

PROMPT: Final = "appointment"
"""The prompt name of every question we ask (reminder, nudge, asked again, reschedule)."""
APPOINTMENT: Final = "appointment"
"""Metadata key naming the appointment a prompt is about."""
DATA_KEY: Final = "appointments"
"""The key of the plugin's data holding its appointments (id → document)."""
CREATE: Final = "appointments.create"
"""Command: a new appointment (payload: its document)."""
CANCEL: Final = "appointments.cancel"
"""Command: cancel an appointment (payload: ``{"id": ..., "via": ...}``)."""
REMIND: Final = "appointments.remind"
NUDGE: Final = "appointments.nudge"
FINAL_TIMER: Final = "appointments.final"

ANSWER: Final = "answer"
"""``step`` while the reminder waits for Y, N or R."""
RESCHEDULE: Final = "reschedule"
"""``step`` while we wait for a slot or a preferred time."""
MAX_REQUEST: Final = 160
"""The longest free-text reschedule request kept."""
UNDELIVERABLE_STATUSES: Final = ("failed", "expired", "rejected")


def timer_ids(appointment_id: str) -> dict[str, str]:
    """The ids of an appointment's timers, by purpose (``remind``, ``nudge``, ``final``)."""
    return {purpose: f"appt:{appointment_id}:{purpose}" for purpose in ("remind", "nudge", "final")}


def _docs(data: dict[str, Any]) -> dict[str, Appointment]:
    """This plugin's part of the session data (created when missing)."""
    docs = data.get(DATA_KEY)
    if not isinstance(docs, dict):
        docs = data[DATA_KEY] = {}
    return docs


def _peek(data: dict[str, Any]) -> dict[str, Appointment]:
    """This plugin's part of the session data, without creating it (for filters)."""
    docs = data.get(DATA_KEY)
    return docs if isinstance(docs, dict) else {}


def _start(doc: Appointment) -> datetime:
    return datetime.fromisoformat(str(doc["starts_at"]))


def _answerable(doc: Appointment, now: datetime) -> bool:
    """Not started yet, and waiting for an answer or ``no_response`` (a late answer)."""
    if _start(doc) <= now:
        return False
    return doc.get("step") is not None or doc.get("status") == "no_response"


def _prune(data: dict[str, Any], now: datetime) -> None:
    """Forget appointments that are over: an outcome, and started already (their documents
    stay at their keys)."""
    docs = _peek(data)
    for appointment_id in [i for i, d in docs.items() if d.get("status") in FINAL]:
        if _start(docs[appointment_id]) <= now:
            del docs[appointment_id]
    if DATA_KEY in data and not docs:
        del data[DATA_KEY]


def _named(ctx: Context, payload: Any) -> Appointment | None:
    """The appointment a timer's or command's payload names (``{"id": ...}``), if known."""
    if not isinstance(payload, dict):
        return None
    return _peek(ctx.data).get(str(payload.get("id", "")))


def _asked_at(doc: Appointment) -> str:
    """When we last asked the handset about ``doc`` (ISO 8601, UTC; sortable)."""
    return str(doc.get("asked_at") or doc.get("reminded_at") or "")


def _target(ctx: Context) -> str | None:
    """The appointment a message answers (see the module documentation), or ``None``."""
    docs = _peek(ctx.data)
    if not docs:
        return None  # most conversations: no appointment at all
    now = ctx.now()
    prompt = ctx.prompt
    if prompt is not None:
        if prompt.get(PROMPT_KEY) != PROMPT:
            return None  # another flow's question
        doc = docs.get(prompt.get(APPOINTMENT, ""))
        return str(doc["id"]) if doc is not None and _answerable(doc, now) else None
    candidates = [doc for doc in docs.values() if _answerable(doc, now)]
    if not candidates:
        return None
    best = max(candidates, key=lambda d: (d.get("step") is not None, _asked_at(d)))
    return str(best["id"])


def _waiting_besides(ctx: Context, doc: Appointment) -> Appointment | None:
    """Another appointment of the conversation waiting for Y, N or R: the soonest."""
    now = ctx.now()
    others = [
        other
        for other in _peek(ctx.data).values()
        if other["id"] != doc["id"] and other.get("step") == ANSWER and _answerable(other, now)
    ]
    return min(others, key=_start) if others else None


class _Flow:
    """The handlers' shared helpers, bound to the settings."""

    def __init__(self, settings: AppointmentSettings) -> None:
        self.settings = settings

    @property
    def wait(self) -> timedelta:
        return self.settings.no_reply_after

    def text(self, template: str, doc: Appointment, *, slot: str = "", signed: bool = False) -> str:
        return self.settings.render(
            template, name=str(doc["name"]), starts_at=_start(doc), slot=slot, signed=signed
        )

    def ask(self, ctx: Context, doc: Appointment, text: str) -> None:
        """Send a question about ``doc``: its answer carries the appointment's id."""
        ctx.reply(text, prompt=PROMPT, metadata={APPOINTMENT: str(doc["id"])})
        doc["asked_at"] = ctx.now().astimezone(UTC).isoformat()

    def conclude(self, ctx: Context, doc: Appointment, template: str, *, slot: str = "") -> None:
        """Answer the handset about ``doc``'s outcome; when another appointment still waits
        for an answer, the same message asks about it (see the module documentation)."""
        text = self.text(template, doc, slot=slot)
        other = _waiting_besides(ctx, doc)
        if other is None:
            ctx.reply(text)
            return
        self.ask(ctx, other, f"{text} {self.text(self.settings.next_question_text, other)}")
        self.store(ctx, other)

    def note(self, ctx: Context, doc: Appointment, status: str, note: str) -> None:
        doc["status"] = status
        doc.setdefault("history", []).append(history_entry(ctx.now(), status, note))

    def store(self, ctx: Context, doc: Appointment, *, event: str | None = None) -> None:
        """Write ``doc`` to its key with the event (and forward ``event`` if given). Call it
        after the last change to ``doc`` in the handler."""
        value = dumps(doc)
        ttl = ttl_ms(doc, ctx.now())
        payload = dict(doc)
        appointment_id = str(doc["id"])

        def write(gw: EventContext) -> None:
            gw.batch.set(appointment_key(gw.keys, appointment_id), value, ttl)
            if event is not None and gw.limits.forward:
                forward(gw.batch, gw.keys, f"appointment.{event}", payload)

        ctx.on_commit(write)

    def finish(self, ctx: Context, doc: Appointment, status: str, note: str) -> None:
        """An outcome: timers cancelled, no step, written and forwarded."""
        for timer_id in timer_ids(str(doc["id"])).values():
            ctx.cancel(timer_id)
        doc["step"] = None
        self.note(ctx, doc, status, note)
        _prune(ctx.data, ctx.now())
        self.store(ctx, doc, event=status)
        log.info("appointment outcome", appointment=doc["id"], status=status)


def _answer_note(ctx: Context) -> str:
    return f"answered {ctx.text.strip()[:20]!r}"


def build_router(settings: AppointmentSettings | None) -> Router:
    """The appointments router, configured with ``settings`` (``None``: the defaults)."""
    settings = settings if settings is not None else AppointmentSettings()
    flow = _Flow(settings)
    router = Router("appointments", settings=settings, legacy_keys=(DATA_KEY,))

    def answering(step: str | None = None, *, unrecognised: bool = False) -> Custom:
        """Matches a message answering one of our appointments (in ``step``, if given);
        ``unrecognised``: only while it has not been asked again yet."""

        def check(ctx: Context) -> FilterResult:
            appointment_id = _target(ctx)
            if appointment_id is None:
                return False
            doc = _peek(ctx.data)[appointment_id]
            if step is not None and doc.get("step") != step:
                return False
            if unrecognised and doc.get("asked_again", 0) >= 1:
                return False  # asked once already: leave it to the fallback
            return {"appointment": appointment_id}

        return Custom(check, provides=("appointment",))

    def rescheduling(ctx: Context) -> Appointment | None:
        """The appointment a message answers, if it is in the reschedule step."""
        appointment_id = _target(ctx)
        if appointment_id is None:
            return None
        doc = _peek(ctx.data)[appointment_id]
        return doc if doc.get("step") == RESCHEDULE else None

    def slot_choice(ctx: Context) -> FilterResult:
        """In the reschedule step: an offered slot, by its number or its text (``choice``:
        its index)."""
        doc = rescheduling(ctx)
        if doc is None:
            return False
        text = normalise(ctx.text)
        for index, slot in enumerate(settings.slots):
            if text in (str(index + 1), normalise(slot)):
                return {"appointment": str(doc["id"]), "choice": index}
        return False

    def not_a_slot(ctx: Context) -> FilterResult:
        """In the reschedule step, anything else: without slots the preferred time in the
        handset's words; with slots, to be asked again (once)."""
        doc = rescheduling(ctx)
        if doc is None:
            return False
        # with slots: asked again once already, the rest is the fallback reply's
        wanted = doc.get("asked_again", 0) < 1 if settings.slots else bool(normalise(ctx.text))
        return {"appointment": str(doc["id"])} if wanted else False

    # -- commands from the API ------------------------------------------------------------

    @router.timer(CREATE)
    async def create(ctx: Context, payload: Any) -> None:
        try:
            appointment_id = str(payload["id"])
            remind_at = max(datetime.fromisoformat(str(payload["remind_at"])), ctx.now())
            _start(payload)
        except (TypeError, KeyError, ValueError):
            log.warning("appointments.create without a valid document")
            return
        docs = _docs(ctx.data)
        if appointment_id in docs:
            return  # already known
        doc: Appointment = dict(payload)
        doc.setdefault("step", None)
        docs[appointment_id] = doc
        ctx.schedule(
            REMIND,
            at=remind_at,
            payload={"id": appointment_id},
            id=timer_ids(appointment_id)["remind"],
        )
        _prune(ctx.data, ctx.now())

    @router.timer(CANCEL)
    async def cancel(ctx: Context, payload: Any) -> None:
        doc = _named(ctx, payload)
        if doc is None or doc.get("status") == "cancelled":
            return
        via = str(payload.get("via") or "api")
        flow.finish(ctx, doc, "cancelled", f"cancelled via {via}")

    # -- timers ---------------------------------------------------------------------------

    @router.timer(REMIND)
    async def remind(ctx: Context, payload: Any) -> None:
        doc = _named(ctx, payload)
        if doc is None or doc.get("status") != "scheduled":
            return
        if _start(doc) <= ctx.now():  # the timer fired late (the gateway was down)
            doc["step"] = None
            flow.finish(ctx, doc, "no_response", "not reminded: the appointment had started")
            return
        text = flow.text(settings.reminder_text, doc, signed=True)
        other = _waiting_besides(ctx, doc)
        if other is not None:  # say which appointment a bare Y is for
            text = f"{text} {flow.text(settings.also_waiting_text, other)}"
        flow.ask(ctx, doc, text)
        reply = ctx.replies[-1]
        doc.update(
            step=ANSWER,
            asked_again=0,
            nudged=False,
            reminded_at=ctx.now().isoformat(),
            reminder_gw_id=reply.request.gw_id,
        )
        flow.note(ctx, doc, "reminded", "reminder sent")
        ctx.schedule(
            NUDGE, delay=flow.wait, payload={"id": doc["id"]}, id=timer_ids(str(doc["id"]))["nudge"]
        )
        flow.store(ctx, doc)

    @router.timer(NUDGE)
    async def nudge(ctx: Context, payload: Any) -> None:
        doc = _named(ctx, payload)
        if doc is None or doc.get("step") != ANSWER:
            return
        if _start(doc) <= ctx.now():
            flow.finish(ctx, doc, "no_response", "no answer before the start")
            return
        flow.ask(ctx, doc, flow.text(settings.nudge_text, doc, signed=True))
        doc["nudged"] = True
        doc.setdefault("history", []).append(history_entry(ctx.now(), "reminded", "nudge sent"))
        ctx.schedule(
            FINAL_TIMER,
            delay=flow.wait,
            payload={"id": doc["id"]},
            id=timer_ids(str(doc["id"]))["final"],
        )
        flow.store(ctx, doc)

    @router.timer(FINAL_TIMER)
    async def final(ctx: Context, payload: Any) -> None:
        doc = _named(ctx, payload)
        if doc is None:
            return
        if doc.get("step") == ANSWER:
            flow.finish(ctx, doc, "no_response", "no answer")
        elif doc.get("step") == RESCHEDULE:
            doc["reschedule"] = {"slot": None, "text": None}
            flow.finish(ctx, doc, "reschedule_requested", "no preferred time given")

    # -- answers --------------------------------------------------------------------------

    @router.message(Keyword("Y", "YES"), answering())
    async def confirmed(ctx: Context, appointment: str) -> None:
        doc = _peek(ctx.data)[appointment]
        flow.finish(ctx, doc, "confirmed", _answer_note(ctx))
        flow.conclude(ctx, doc, settings.confirmed_text)

    @router.message(Keyword("N", "NO"), answering())
    async def cancelled(ctx: Context, appointment: str) -> None:
        doc = _peek(ctx.data)[appointment]
        flow.finish(ctx, doc, "cancelled", _answer_note(ctx))
        flow.conclude(ctx, doc, settings.cancelled_text)

    @router.message(Keyword("R", "RESCHEDULE"), answering())
    async def reschedule(ctx: Context, appointment: str) -> None:
        doc = _peek(ctx.data)[appointment]
        ids = timer_ids(appointment)
        ctx.cancel(ids["nudge"])
        template = settings.slots_text if settings.slots else settings.reschedule_text
        flow.ask(ctx, doc, flow.text(template, doc))
        # "reminded" again also after a late answer to a no_response reminder
        doc.update(step=RESCHEDULE, asked_again=0)
        flow.note(ctx, doc, "reminded", "asked to reschedule")
        ctx.schedule(FINAL_TIMER, delay=flow.wait, payload={"id": appointment}, id=ids["final"])
        flow.store(ctx, doc)

    @router.message(Custom(slot_choice, provides=("appointment", "choice")))
    async def slot_chosen(ctx: Context, appointment: str, choice: int) -> None:
        doc = _peek(ctx.data)[appointment]
        slot = settings.slots[choice]
        doc["reschedule"] = {"slot": slot, "choice": choice + 1, "text": ctx.text.strip()}
        flow.finish(ctx, doc, "reschedule_requested", f"asked for {slot[:40]!r}")
        flow.conclude(ctx, doc, settings.rescheduled_text, slot=_short(slot))

    # -- what no router understood (fallbacks: every other router's handlers go first) ---

    @router.message(Custom(not_a_slot, provides=("appointment",)), fallback=True)
    async def preferred(ctx: Context, appointment: str) -> None:
        doc = _peek(ctx.data)[appointment]
        if settings.slots:
            doc["asked_again"] = doc.get("asked_again", 0) + 1
            flow.ask(ctx, doc, flow.text(settings.slot_again_text, doc))
            flow.store(ctx, doc)
            return
        slot = " ".join(ctx.text.split())[:MAX_REQUEST]
        doc["reschedule"] = {"slot": None, "text": slot}
        flow.finish(ctx, doc, "reschedule_requested", f"asked for {slot[:40]!r}")
        flow.conclude(ctx, doc, settings.rescheduled_text, slot=_short(slot))

    @router.message(answering(ANSWER, unrecognised=True), fallback=True)
    async def unrecognised(ctx: Context, appointment: str) -> None:
        doc = _peek(ctx.data)[appointment]
        doc["asked_again"] = doc.get("asked_again", 0) + 1
        flow.ask(ctx, doc, flow.text(settings.ask_again_text, doc))
        flow.store(ctx, doc)

    # -- receipts -------------------------------------------------------------------------

    def failed_prompt(ctx: Context) -> FilterResult:
        prompt = ctx.prompt
        if prompt is None or prompt.get(PROMPT_KEY) != PROMPT:
            return False
        doc = _peek(ctx.data).get(prompt.get(APPOINTMENT, ""))
        if doc is None or doc.get("status") not in ("reminded", "no_response"):
            return False
        return {"appointment": str(doc["id"])}

    @router.receipt(
        Status(*UNDELIVERABLE_STATUSES), Custom(failed_prompt, provides=("appointment",))
    )
    async def undeliverable(ctx: Context, appointment: str) -> None:
        doc = _peek(ctx.data)[appointment]
        receipt = ctx.receipt
        status = str(receipt.status) if receipt is not None else "failed"
        flow.finish(ctx, doc, "undeliverable", f"receipt {status}")

    def delivered_reminder(ctx: Context) -> FilterResult:
        prompt = ctx.prompt
        if prompt is None or prompt.get(PROMPT_KEY) != PROMPT:
            return False
        doc = _peek(ctx.data).get(prompt.get(APPOINTMENT, ""))
        if doc is None or doc.get("step") != ANSWER or doc.get("nudged"):
            return False
        if prompt.get(GW_ID) != doc.get("reminder_gw_id"):
            return False
        return {"appointment": str(doc["id"])}

    @router.receipt(Status("delivered"), Custom(delivered_reminder, provides=("appointment",)))
    async def reminder_delivered(ctx: Context, appointment: str) -> None:
        # "Delivered but no reply within T": T counts from the reminder's delivery, so a
        # reminder held overnight by quiet hours is not nudged the moment it arrives.
        ctx.schedule(
            NUDGE, delay=flow.wait, payload={"id": appointment}, id=timer_ids(appointment)["nudge"]
        )

    return router


def _short(text: str, limit: int = 60) -> str:
    """``text`` cut to ``limit`` characters (with ``...``, which keeps GSM-7 text GSM-7)."""
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."
