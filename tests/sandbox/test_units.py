"""Pure parts: receipt steps, outcomes, ids, billing units, payload shapes, template contexts."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime

import pytest

from bot.cli.main import build_parser
from bot.sandbox import velocity
from bot.sandbox.config import OPT_OUT_HANDLING, SandboxConfig
from bot.sandbox.delivery import steps_for
from bot.sandbox.payloads import dr_context, dr_push, encode, mo_context, mo_sample, reply_object
from bot.sandbox.schemas import parse_messages, parse_rcs, rcs_summary
from bot.sandbox.state import (
    FINAL_STATUSES,
    MessageRequest,
    Outcome,
    SandboxState,
    billing_units,
    is_opt_out,
    new_id,
)
from bot.sinch.models import DeliveryStatus, parse_inbound, parse_receipt
from bot.sinch.templates import DR_TEMPLATE, MO_TEMPLATE

UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
CONFIG = SandboxConfig()


def test_new_ids_are_uuid4_strings() -> None:
    ids = {new_id() for _ in range(2000)}
    assert len(ids) == 2000
    assert all(UUID4.match(i) for i in ids)


@pytest.mark.parametrize(
    ("outcome", "steps"),
    [
        (Outcome.of("delivered"), ["enroute", "submitted", "delivered"]),
        (Outcome.of(code=414), ["enroute", "submitted", "failed"]),
        (Outcome.of(code=302), ["rejected"]),
        (Outcome.of(code=412), ["enroute", "rejected"]),
        (Outcome.of(code=320), ["enroute", "expired"]),
        (Outcome.of(code=401), ["enroute", "submitted", "expired"]),
        (Outcome.of("submitted"), ["enroute", "submitted"]),
        (Outcome.of("enroute"), ["enroute"]),
    ],
)
def test_steps_for(outcome: Outcome, steps: list[str]) -> None:
    assert [str(s) for s, _ in steps_for(outcome)] == steps


def test_outcome_of() -> None:
    assert Outcome.of("FAILED") == Outcome(DeliveryStatus.FAILED, 400)
    assert Outcome.of(code=221) == Outcome(DeliveryStatus.DELIVERED, 221)
    with pytest.raises(ValueError, match="status or a status code"):
        Outcome.of()
    with pytest.raises(ValueError, match="lost"):
        Outcome.of("lost")
    assert {"delivered", "expired", "rejected", "failed"} == FINAL_STATUSES


def test_opt_out_keywords_and_billing_units() -> None:
    assert all(
        is_opt_out(k)
        for k in ("STOP", "stopall", " Unsubscribe ", "cancel", "End", "quit", "REVOKE", "OptOut")
    )
    assert not any(is_opt_out(k) for k in ("", "stop it", "halt", "STOP."))
    assert billing_units("a" * 160, "SMS") == 1
    assert billing_units("a" * 161, "SMS") == 2
    assert billing_units("😀" * 35, "SMS") == 1
    assert billing_units("😀" * 36, "SMS") == 2
    assert billing_units("x" * 3000, "MMS") == billing_units("x" * 3000, "RCS") == 1


def _delivered_message(state: SandboxState, **fields: object) -> tuple[object, list[object]]:
    [request] = parse_messages(
        {
            "messages": [
                {
                    "content": 'He said "hi"\n',
                    "destination_number": "+61491570156",
                    "delivery_report": True,
                    **fields,
                }
            ]
        }
    )
    [message] = state.accept([request], api_key="k", account=None)
    reports = [
        state.record_status(message, DeliveryStatus.ENROUTE, 101),
        state.record_status(message, DeliveryStatus.SUBMITTED, 200),
        state.record_status(message, DeliveryStatus.DELIVERED, 220),
    ]
    state.deliver(message)
    return message, reports


def test_dr_shapes_and_templates_agree() -> None:
    state = SandboxState(CONFIG)
    _, reports = _delivered_message(state, metadata={"k": 'v"1'}, source_number="+61491570157")
    for report in reports:
        pushed = dr_push(report, CONFIG)  # type: ignore[arg-type]
        rendered = json.loads(velocity.render(DR_TEMPLATE, dr_context(report, CONFIG)))  # type: ignore[arg-type]
        a, b = parse_receipt(pushed), parse_receipt(rendered)
        assert (
            a.event_id,
            a.message_id,
            a.status,
            a.status_code,
            a.recipient,
            a.content,
            a.metadata,
        ) == (
            b.event_id,
            b.message_id,
            b.status,
            b.status_code,
            b.recipient,
            b.content,
            b.metadata,
        )
        assert a.content == 'He said "hi"\n'
    assert len(state.reports) == 3


def test_mo_shapes_and_templates_agree() -> None:
    state = SandboxState(CONFIG)
    message, _ = _delivered_message(state, metadata={"conv": "42"})
    inbound = state.receive("+61491570156", "STOP", reply_to="latest")
    assert inbound.notification_id and "+61491570156" in state.blacklist
    reply = parse_inbound(reply_object(inbound, CONFIG))
    rendered = parse_inbound(json.loads(velocity.render(MO_TEMPLATE, mo_context(inbound, CONFIG))))
    opt_out = parse_inbound(
        json.loads(velocity.render(MO_TEMPLATE, mo_context(inbound, CONFIG, opt_out=True)))
    )
    sample = parse_inbound(mo_sample(inbound, CONFIG, opt_out=True))
    assert reply.event_id == rendered.event_id == inbound.reply_id
    assert opt_out.kind == sample.kind == "opt_out"
    assert opt_out.event_id == sample.event_id == inbound.notification_id
    for parsed in (reply, rendered, opt_out, sample):
        assert parsed.message_id == message.message_id  # type: ignore[attr-defined]
        assert parsed.metadata == {"conv": "42"}
        assert parsed.source_number == "+61491570156"


def test_unsolicited_mo_template_has_no_message_id() -> None:
    state = SandboxState(CONFIG)
    inbound = state.receive("+61491570156", "hello")
    body = json.loads(velocity.render(MO_TEMPLATE, mo_context(inbound, CONFIG, retry_count=2)))
    assert "message_id" not in body
    assert body["metadata"] == []
    assert body["destination_address"] == CONFIG.default_number


def test_encodings() -> None:
    body = {"a": "x y", "b": {"c": 1}, "d": [1, "<"], "e": None}
    assert json.loads(encode(body, "JSON")) == body
    assert (
        encode(body, "FORM_ENCODED") == "a=x+y&b=%7B%22c%22%3A+1%7D&d=%5B1%2C+%22%3C%22%5D&e=null"
    )
    assert (
        encode(body, "XML")
        == "<payload><a>x y</a><b><c>1</c></b><d><item>1</item><item>&lt;</item></d><e></e></payload>"
    )


def test_rcs_summaries() -> None:
    assert rcs_summary({"text_message": {"text": "t"}}) == "t"
    assert rcs_summary({"choice_message": {"text_message": {"text": "c"}, "choices": []}}) == "c"
    assert rcs_summary({"card_message": {"title": "T"}}) == "T"
    assert (
        rcs_summary({"carousel_message": {"cards": [{"title": "A"}, {"description": "B"}]}})
        == "A | B"
    )
    assert rcs_summary({"media_message": {"url": "https://x"}}) == "https://x"
    [request] = parse_rcs(
        {
            "destination_number": "+61491570156",
            "rcs_message": {"text_message": {"text": "hi"}},
            "fallback": {"content": "hi"},
        }
    )
    assert isinstance(request, MessageRequest)
    assert (request.format, request.content, request.fallback) == (
        "RCS",
        "hi",
        {"format": "SMS", "content": "hi"},
    )


def test_scheduled_and_eviction() -> None:
    state = SandboxState(SandboxConfig(max_messages=3))
    requests = parse_messages(
        {
            "messages": [
                {
                    "content": "x",
                    "destination_number": "+61491570156",
                    "scheduled": "2999-01-01T00:00:00Z",
                }
            ]
            * 5
        }
    )
    accepted = state.accept(requests, api_key="k", account=None)
    assert all(m.status == "scheduled" for m in accepted)
    assert list(state.messages) == [m.message_id for m in accepted[2:]]
    assert accepted[4].request.scheduled == datetime(2999, 1, 1, tzinfo=UTC)
    state.cancel(accepted[4].message_id)
    with pytest.raises(ValueError, match="only scheduled"):
        state.cancel(accepted[4].message_id)


def test_unconfirmed_queues_are_bounded() -> None:
    state = SandboxState(SandboxConfig(max_unconfirmed=5))
    for i in range(8):
        state.receive("+61491570156", f"m{i}")
    assert [r.content for r in state.unconfirmed_replies()] == [f"m{i}" for i in range(3, 8)]


def test_the_sandbox_command_offers_every_opt_out_handling() -> None:
    parser = build_parser()
    args = parser.parse_args(["sandbox", "--opt-outs", "account"])
    assert args.opt_outs == "account"
    assert parser.parse_args(["sandbox"]).opt_outs is None  # the config's default applies
    [command] = [a for a in parser._actions if a.dest == "command"]
    assert command.choices is not None
    sandbox = command.choices["sandbox"]
    [option] = [a for a in sandbox._actions if a.dest == "opt_outs"]
    assert tuple(option.choices or ()) == OPT_OUT_HANDLING
    assert SandboxConfig().opt_out_handling == "provider"
