"""Provider models: outbound validation with the provider's rules, and normalisation of every
inbound and receipt shape to one type."""

import contextlib
import json
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from bot.sinch.models import (
    Channel,
    DeliveryStatus,
    Format,
    MessageStatus,
    OutboundMessage,
    PayloadError,
    ProviderMessage,
    RcsCard,
    RcsChoice,
    RcsMessage,
    SenderIds,
    WebhookSpec,
    format_timestamp,
    is_address,
    parse_event,
    parse_inbound,
    parse_receipt,
    status_for_code,
    validation_details,
)

HANDSET, OURS = "+61491570156", "+61491570157"


def msg(**kw: object) -> OutboundMessage:
    base: dict[str, object] = {"content": "Hello", "destination_number": HANDSET}
    base.update(kw)
    return OutboundMessage.model_validate(base)


class TestOutbound:
    def test_minimal_message_serialises_without_nones(self) -> None:
        assert msg().to_api() == {
            "content": "Hello",
            "destination_number": HANDSET,
            "format": "SMS",
        }

    def test_full_message(self) -> None:
        when = datetime(2016, 11, 3, 11, 49, 2, 807000, tzinfo=UTC)
        body = msg(
            source_number=OURS,
            source_number_type="INTERNATIONAL",
            delivery_report=True,
            callback_url="https://my.callback.url.com",
            scheduled=when,
            message_expiry_timestamp=when,
            metadata={"key1": "value1"},
        ).to_api()
        assert body["scheduled"] == "2016-11-03T11:49:02.807Z"
        assert body["message_expiry_timestamp"] == "2016-11-03T11:49:02.807Z"
        assert body["metadata"] == {"key1": "value1"}
        assert body["source_number_type"] == "INTERNATIONAL"

    @pytest.mark.parametrize(
        ("fields", "where"),
        [
            ({"content": ""}, "content"),
            ({"content": "x" * 5001}, "content"),
            ({"destination_number": "0491570156"}, "destination_number"),
            ({"destination_number": "+1234567"}, "destination_number"),
            ({"destination_number": "+1234567890123456"}, "destination_number"),
            ({"destination_number": "+6149157O156"}, "destination_number"),
            ({"metadata": {f"k{i}": "v" for i in range(11)}}, "metadata"),
            ({"metadata": {"k" * 101: "v"}}, "metadata"),
            ({"metadata": {"k": "v" * 257}}, "metadata"),
            ({"format": "FAX"}, "format"),
            ({"media": ["https://x.test/a.png"]}, "media needs format MMS"),
            ({"format": "MMS", "media": ["ftp://x"]}, "media"),
            ({"format": "MMS", "subject": "s" * 65}, "subject"),
            ({"subject": "hi"}, "subject is only for MMS"),
            ({"source_number_type": "INTERNATIONAL"}, "needs source_number"),
            ({"callback_url": "not a url"}, "callback_url"),
            ({"unknown_field": 1}, "unknown_field"),
        ],
    )
    def test_provider_rules(self, fields: dict[str, object], where: str) -> None:
        with pytest.raises(ValidationError) as info:
            msg(**fields)
        assert where in str(info.value)

    def test_limits_inclusive(self) -> None:
        msg(content="x" * 5000, metadata={f"k{i}": "v" * 256 for i in range(10)})
        msg(
            destination_number="+12345678",
            format="MMS",
            media=["https://x.test/a.png"],
            subject="s" * 64,
        )

    def test_alphanumeric_and_shortcode_sources(self) -> None:
        assert msg(source_number="MyBrand").source_number == "MyBrand"
        assert msg(source_number="12345").source_number == "12345"
        with pytest.raises(ValidationError):
            msg(source_number="Way too long brand")

    def test_validation_details_in_provider_wording(self) -> None:
        with pytest.raises(ValidationError) as info:
            msg(destination_number="nope")
        details = validation_details(info.value, prefix="/messages/3")
        assert details[0].startswith("/messages/3/destination_number: ")
        assert "E.164" in details[0]


class TestProviderMessage:
    def test_unknown_status_is_kept(self) -> None:
        m = ProviderMessage.model_validate({"message_id": "a", "status": "teleported"})
        assert m.status == "teleported"
        assert (
            ProviderMessage.model_validate({"message_id": "a", "status": "DELIVERED"}).status
            is MessageStatus.DELIVERED
        )

    @pytest.mark.parametrize("status", [s.value for s in MessageStatus])
    def test_every_documented_status(self, status: str) -> None:
        assert (
            ProviderMessage.model_validate({"message_id": "a", "status": status}).status == status
        )

    def test_connector_extras_survive(self) -> None:
        m = ProviderMessage.model_validate(
            {
                "message_id": "a",
                "status": "queued",
                "message_flags": [],
                "metadata": {"Source": "x"},
            }
        )
        assert m.model_extra == {"message_flags": []}
        assert m.metadata == {"Source": "x"}


class TestRcs:
    def test_text_with_choices(self) -> None:
        m = RcsMessage(
            destination_number=HANDSET,
            text="Confirm?",
            choices=[
                RcsChoice(text="Yes", postback_data="Y"),
                RcsChoice(text="Site", url="https://x.test"),
            ],
            fallback_text="Reply Y to confirm",
        )
        body = m.to_api()
        assert body["format"] == "RCS"
        assert body["fallback"] == {"format": "SMS", "content": "Reply Y to confirm"}
        choice = body["rcs_message"]["choice_message"]
        assert choice["text_message"] == {"text": "Confirm?"}
        assert choice["choices"][0] == {"text_message": {"text": "Yes"}, "postback_data": "Y"}
        assert choice["choices"][1] == {"url_message": {"title": "Site", "url": "https://x.test"}}

    def test_card_and_carousel(self) -> None:
        card = RcsCard(
            title="Dr Smith",
            description="Tue 10:00",
            media_url="https://x.test/a.png",
            choices=[RcsChoice(text="Book")],
        )
        body = RcsMessage(destination_number=HANDSET, card=card).to_api()["rcs_message"]
        assert body["card_message"]["media_message"] == {"url": "https://x.test/a.png"}
        carousel = RcsMessage(destination_number=HANDSET, carousel=[card, card]).to_api()
        assert len(carousel["rcs_message"]["carousel_message"]["cards"]) == 2

    @pytest.mark.parametrize(
        "fields",
        [
            {},
            {"text": "a", "card": {"title": "t"}},
            {"carousel": [{"title": "only one"}]},
            {"carousel": [{"title": "t"}] * 11},
            {"card": {"title": "t"}, "choices": [{"text": "x"}]},
            {"text": "a", "choices": [{"text": "x" * 26}]},
        ],
    )
    def test_invalid(self, fields: dict[str, object]) -> None:
        with pytest.raises(ValidationError):
            RcsMessage.model_validate({"destination_number": HANDSET, **fields})


class TestInbound:
    def test_connector_mo_template_sms(self) -> None:
        payload = {
            "content": "Yes please",
            "message_id": "877c19ef-fa2e-4cec-827a-e1df9b5509f7",
            "type": "SMS",
            "reply_id": "a175e797-2b54-468b-9850-41a3eab32f74",
            "submitted_date": "2016-12-07T08:43:00.850Z",
            "date_received": "2016-12-07T08:44:00.850Z",
            "source_address": HANDSET,
            "destination_address": "+61491593156",
            "attachments": [],
            "metadata": [{"metadata_key": "conv", "metadata_value": "42"}],
        }
        m = parse_inbound(payload)
        assert (m.event_id, m.reply_id, m.kind, m.channel) == (
            payload["reply_id"],
            payload["reply_id"],
            "message",
            Channel.SMS,
        )
        assert (m.source_number, m.destination_number, m.content) == (
            HANDSET,
            "+61491593156",
            "Yes please",
        )
        assert m.message_id == payload["message_id"]
        assert m.metadata == {"conv": "42"}
        assert m.received_at == datetime(2016, 12, 7, 8, 44, 0, 850000, tzinfo=UTC)

    def test_callback_reply_push(self) -> None:
        payload = {
            "metadata": {"key1": "value1"},
            "message_id": "877c",
            "reply_id": "a175",
            "date_received": "2016-12-07T08:43:00.850Z",
            "callback_url": "https://my.callback.url.com",
            "destination_number": OURS,
            "source_number": HANDSET,
            "vendor_account_id": {"vendor_id": "SinchEU", "account_id": "MyAccount"},
            "content": "My first reply!",
        }
        m = parse_inbound(payload)
        assert (m.source_number, m.destination_number, m.content) == (
            HANDSET,
            OURS,
            "My first reply!",
        )
        assert (m.account_id, m.vendor_id) == ("MyAccount", "SinchEU")
        assert m.metadata == {"key1": "value1"}

    def test_webhooks_api_sample_sms_and_mms(self) -> None:
        sms = parse_inbound(
            {
                "account_id": "DeveloperPortal7000",
                "reply_id": "r1",
                "destination_number": "+61491593156",
                "source_number": HANDSET,
                "date_received": "2016-12-07T08:44:00.850Z",
                "message_id": "m1",
                "content": "Hello Derpina",
                "metadata": {"myKey": "myValue"},
            }
        )
        assert (sms.account_id, sms.content, sms.metadata) == (
            "DeveloperPortal7000",
            "Hello Derpina",
            {"myKey": "myValue"},
        )
        mms = parse_inbound(
            {
                "reply_id": "r2",
                "source_number": HANDSET,
                "attachments": [
                    {
                        "content_type": "image/png",
                        "content": "iVBORw0KGgo=",
                        "original_name": "a.png",
                    }
                ],
            }
        )
        assert mms.channel is Channel.MMS
        assert mms.attachments[0].content_type == "image/png"
        assert mms.attachments[0].name == "a.png"

    def test_connector_mms_attachments(self) -> None:
        m = parse_inbound(
            {
                "type": "MMS",
                "reply_id": "r",
                "source_address": HANDSET,
                "content": "look",
                "attachments": [
                    {
                        "attachment_type": "image/jpeg",
                        "attachment_content": "/9j/",
                        "attachment_name": "p.jpg",
                    }
                ],
            }
        )
        assert m.channel is Channel.MMS and m.attachments[0].content == "/9j/"

    def test_rcs_text_and_choice_and_media(self) -> None:
        text = parse_inbound(
            {
                "reply_id": "r",
                "source_address": HANDSET,
                "contact_message": {"text_message": {"text": "hi"}},
            }
        )
        assert (text.channel, text.content, text.choice) == (Channel.RCS, "hi", None)
        choice = parse_inbound(
            {
                "reply_id": "r2",
                "source_address": HANDSET,
                "contact_message": {
                    "choice_response_message": {"message_id": "m9", "postback_data": "Y"}
                },
            }
        )
        assert (
            choice.choice is not None
            and choice.choice.postback_data == "Y"
            and choice.choice.message_id == "m9"
        )
        assert choice.content == "Y"
        media = parse_inbound(
            {
                "reply_id": "r3",
                "source_address": HANDSET,
                "contact_message": {"media_message": {"url": "https://x.test/p.jpg"}},
            }
        )
        assert media.attachments[0].url == "https://x.test/p.jpg"

    def test_opt_out_notification(self) -> None:
        m = parse_inbound({"notification_id": "n1", "source_number": HANDSET, "content": "STOP"})
        assert (m.kind, m.event_id, m.reply_id) == ("opt_out", "n1", None)

    def test_missing_id_gets_stable_content_hash(self) -> None:
        payload = {"source_number": HANDSET, "content": "hello"}
        assert parse_inbound(payload).event_id == parse_inbound(dict(payload)).event_id
        assert (
            parse_inbound(payload).event_id
            != parse_inbound({**payload, "content": "other"}).event_id
        )

    @pytest.mark.parametrize(
        "payload",
        [
            [],
            "x",
            {},
            {"content": "no source"},
            {"source_number": HANDSET},
            {"source_number": HANDSET, "contact_message": {"location_message": {}}},
            {"source_number": [], "content": "hi"},
            {"source_number": {"n": HANDSET}, "content": "hi"},
            {"source_number": "9" * 20_000, "content": "hi"},
            {"source_number": HANDSET, "destination_number": "+1", "content": "hi"},
            {"source_number": HANDSET, "content": ["hi"]},
            {"source_number": HANDSET, "content": "x" * 5001},
            {"source_number": HANDSET, "content": "hi", "reply_id": "r" * 101},
            {"source_number": HANDSET, "content": "hi", "metadata": {"k": {"nested": 1}}},
            {"source_number": HANDSET, "contact_message": {"text_message": {"text": []}}},
        ],
    )
    def test_rejects_garbage(self, payload: object) -> None:
        with pytest.raises(PayloadError):
            parse_inbound(payload)  # type: ignore[arg-type]


class TestReceipts:
    def test_template_shape(self) -> None:
        r = parse_receipt(
            {
                "delivery_report_id": "01e1fa0a",
                "status_code": "220",
                "status": "delivered",
                "submitted_date": "2016-11-03T11:49:01.551Z",
                "date_received": "2016-11-03T11:49:02.807Z",
                "type": "SMS",
                "message_id": "d781dcab",
                "source_address": HANDSET,
                "content": "My first message!",
                "attachments": [],
                "metadata": [{"metadata_key": "gw_id", "metadata_value": "abc"}],
            }
        )
        assert (r.event_id, r.status, r.status_code, r.status_meaning) == (
            "01e1fa0a",
            DeliveryStatus.DELIVERED,
            220,
            "delivered",
        )
        assert (r.recipient, r.metadata, r.is_final) == (HANDSET, {"gw_id": "abc"}, True)

    def test_callback_push_shape(self) -> None:
        r = parse_receipt(
            {
                "callback_url": "http://mockbin.org/bin/x",
                "delivery_report_id": "693e",
                "source_number": HANDSET,
                "date_received": "2016-11-03T11:49:02.807Z",
                "status": "delivered",
                "delay": 0,
                "billing_units": 1,
                "submitted_date": "2016-11-03T11:49:01.551Z",
                "original_text": "Hello world!",
                "message_id": "389d",
                "vendor_account_id": {"vendor_id": "SinchEU", "account_id": "MyAccount"},
                "error_code": "220",
                "metadata": {"key": "value"},
            }
        )
        assert (r.billing_units, r.status_code, r.content, r.account_id) == (
            1,
            220,
            "Hello world!",
            "MyAccount",
        )

    def test_status_from_code_only_and_unknown_status_kept(self) -> None:
        assert (
            parse_receipt({"message_id": "m", "status_code": "414"}).status is DeliveryStatus.FAILED
        )
        assert parse_receipt({"message_id": "m", "status": "weird"}).status == "weird"

    @pytest.mark.parametrize("payload", [{}, {"message_id": "m"}, {"status": "delivered"}, []])
    def test_rejects_garbage(self, payload: object) -> None:
        with pytest.raises(PayloadError):
            parse_receipt(payload)  # type: ignore[arg-type]

    def test_parse_event_tells_receipts_from_replies(self) -> None:
        assert (
            parse_event(
                {"delivery_report_id": "d", "message_id": "m", "status": "enroute"}
            ).__class__.__name__
            == "DeliveryReceipt"
        )
        assert (
            parse_event(
                {"reply_id": "r", "source_number": HANDSET, "content": "x", "message_id": "m"}
            ).__class__.__name__
            == "InboundMessage"
        )

    @pytest.mark.parametrize(
        ("code", "status"),
        [
            (101, "enroute"),
            (151, "enroute"),
            (200, "submitted"),
            (213, "submitted"),
            (220, "delivered"),
            (221, "delivered"),
            (320, "expired"),
            (401, "expired"),
            (302, "rejected"),
            (412, "rejected"),
            (414, "failed"),
            (400, "failed"),
            (405, "failed"),
        ],
    )
    def test_code_pairing(self, code: int, status: str) -> None:
        assert status_for_code(code) == status

    def test_rank(self) -> None:
        assert (
            DeliveryStatus.ENROUTE.rank < DeliveryStatus.SUBMITTED.rank < DeliveryStatus.FAILED.rank
        )
        assert not DeliveryStatus.SUBMITTED.is_final and DeliveryStatus.EXPIRED.is_final


def test_sender_ids_connector_shape() -> None:
    s = SenderIds.model_validate(
        {
            "pagination": {"page": 1, "page_size": 20, "total_count": 1, "page_count": 1},
            "default_sender": {
                "type": "DEDICATED",
                "number": OURS,
                "source_type": "INTERNATIONAL",
                "mms_capable": True,
            },
            "senders": [
                {
                    "display_type": "NUMBER",
                    "is_default": True,
                    "label": "Main",
                    "mms_capable": True,
                    "number": OURS,
                    "display_name": "Main",
                    "number_id": "n1",
                    "source_type": "INTERNATIONAL",
                    "type": "DEDICATED",
                    "number_status": "ACTIVE",
                }
            ],
            "account_id": "A",
            "vendor_id": "SinchEU",
        }
    )
    assert s.senders[0].is_default and s.default_sender is not None and s.default_sender.mms_capable


def test_webhook_spec_rules() -> None:
    WebhookSpec(
        url="https://x.test/h",
        events=["RECEIVED_SMS"],
        retries=5,
        retry_delay=5,
        read_timeout=60000,
    )
    for bad in (
        {"events": []},
        {"url": "x"},
        {"headers": {"Content-Type": "a"}},
        {"retries": 6},
        {"retry_delay": 4},
        {"method": "HEAD"},
        {"encoding": "YAML"},
    ):
        with pytest.raises(ValidationError):
            WebhookSpec.model_validate(
                {"url": "https://x.test/h", "events": ["RECEIVED_SMS"], **bad}
            )


@given(st.datetimes(timezones=st.just(UTC)))
def test_timestamp_format_round_trips_to_the_millisecond(value: datetime) -> None:
    text = format_timestamp(value)
    assert text.endswith("Z") and len(text) == 24
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    assert abs((parsed - value).total_seconds()) < 0.001


@given(
    st.dictionaries(
        st.text(max_size=5),
        st.one_of(
            st.text(max_size=5), st.integers(), st.none(), st.lists(st.integers(), max_size=2)
        ),
        max_size=6,
    )
)
def test_parsers_never_raise_anything_but_payload_error(payload: dict[str, object]) -> None:
    for parser in (parse_inbound, parse_receipt, parse_event):
        with contextlib.suppress(PayloadError):
            parser(payload)


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("+61491570156", True),
        ("61491570156", True),
        ("12345", True),
        ("MyBrand", True),
        ("My Brand-1", True),
        ("A", True),
        ("+6149", False),
        ("+1234567890123456", False),
        ("12", False),
        ("1234567890123456", False),
        ("[]", False),
        ("default", True),  # an alphanumeric sender; a conversation's "default" is not a number
        ("Way too long brand", False),
        (" Brand", False),
        ("Brand ", False),
        ("", False),
        ("+61 491 570 156", False),
        ("\u0661\u0662\u0663", False),  # Arabic-Indic digits are not digits here
    ],
)
def test_is_address(value: str, valid: bool) -> None:
    assert is_address(value) is valid


def test_format_is_enum() -> None:
    assert msg(format="MMS").format is Format.MMS
    assert json.loads(json.dumps(msg().to_api()))["format"] == "SMS"


@pytest.mark.parametrize(
    ("units", "expected"),
    [(1, 1), ("3", 3), ("²", None), (-1, None), (True, None), ("x", None), (None, None)],
)
def test_billing_units_are_read_safely(units: object, expected: int | None) -> None:
    receipt = parse_receipt({"message_id": "m", "status": "delivered", "billing_units": units})
    assert receipt.billing_units == expected
