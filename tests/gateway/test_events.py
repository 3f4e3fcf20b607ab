"""Stream entry encoding round trips."""

import pytest
from pydantic import ValidationError

from bot.sinch.models import (
    DeliveryStatus,
    OutboundMessage,
    RcsMessage,
    parse_inbound,
    parse_receipt,
)
from bot.storage.events import (
    GW_CONVERSATION,
    GW_ID,
    InboxEvent,
    OutboundRequest,
    prepare_rcs,
    prepare_sms,
)

H = "+61491570156"


def test_inbox_round_trip_for_messages_and_receipts() -> None:
    inbound = parse_inbound(
        {"reply_id": "r1", "source_number": H, "content": "Y", "metadata": {"gw_id": "a"}}
    )
    receipt = parse_receipt(
        {"delivery_report_id": "d1", "message_id": "m", "status": "delivered", "status_code": "220"}
    )
    for event in (inbound, receipt):
        original = InboxEvent("+61491570157:" + H, event, received_at=12.5)
        fields = {k.encode(): v.encode() for k, v in original.to_fields().items()}
        back = InboxEvent.from_fields(b"1-0", fields, partition=3)
        assert back.event == event
        assert (back.entry_id, back.partition, back.received_at) == ("1-0", 3, 12.5)
    assert InboxEvent("c", receipt).kind == "receipt"
    assert isinstance(
        InboxEvent.from_fields("1-0", InboxEvent("c", receipt).to_fields(), 0).event.status,
        DeliveryStatus,
    )


@pytest.mark.parametrize(
    "fields", [{}, {"k": "nope", "c": "x", "e": "{}"}, {"k": "message", "c": "x", "e": "{"}]
)
def test_garbage_inbox_entries_raise_value_error(fields: dict[str, str]) -> None:
    with pytest.raises((ValueError, KeyError)):
        InboxEvent.from_fields("1-0", fields, 0)


def test_prepare_sms_puts_our_id_in_metadata() -> None:
    request = prepare_sms(
        OutboundMessage(content="hi", destination_number=H, metadata={"a": "b"}),
        "default:" + H,
        origin="reply",
    )
    assert request.body["metadata"] == {
        "a": "b",
        GW_ID: request.gw_id,
        GW_CONVERSATION: "default:" + H,
    }
    assert (request.destination, request.text, request.origin) == (H, "hi", "reply")
    back = OutboundRequest.from_fields("2-0", request.to_fields(), 4)
    assert back.body == request.body
    assert (back.gw_id, back.text, back.partition, back.entry_id) == (request.gw_id, "hi", 4, "2-0")


def test_metadata_limit_still_holds_with_our_two_keys() -> None:
    full = OutboundMessage(
        content="hi", destination_number=H, metadata={f"k{i}": "v" for i in range(9)}
    )
    with pytest.raises(ValidationError):
        prepare_sms(full, "c")


def test_prepare_rcs_text_is_the_fallback() -> None:
    request = prepare_rcs(
        RcsMessage(destination_number=H, text="Pick", fallback_text="Reply 1 or 2"), "c"
    )
    assert request.channel == "rcs"
    assert request.text == "Reply 1 or 2"
    assert request.body["metadata"][GW_ID] == request.gw_id
    assert OutboundRequest.from_fields("1-0", request.to_fields(), 0).text == "Reply 1 or 2"


def test_garbage_outbox_entries_raise_value_error() -> None:
    with pytest.raises(ValueError, match="not an outbound entry"):
        OutboundRequest.from_fields("1-0", {"id": "x"}, 0)
    with pytest.raises(ValueError, match="channel"):
        OutboundRequest.from_fields("1-0", {"id": "x", "c": "c", "ch": "fax", "b": "{}"}, 0)
