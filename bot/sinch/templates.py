"""The Velocity templates sinchbot registers with the provider's Webhooks API.

They are the Sinch connector's own templates (spec §1), verbatim apart from two additions:
the DR template's attachment and metadata loops are filled in (they are the MO template's),
and the MO template also renders ``notification_id``, which the provider sets instead of a
reply id on ``OPT_OUT_SMS`` events. So every push carries the id sinchbot deduplicates on:
``reply_id`` or ``notification_id`` for inbound messages, ``delivery_report_id`` for
delivery reports. The sandbox renders the same strings, so tests exercise the real shapes.
"""

from __future__ import annotations

from bot.sinch.models import WebhookEvent

_ATTACHMENTS = (
    '"attachments": [#foreach ($entry in $attachments){"attachment_type":"$entry.contentType",'
    '"attachment_content":"$entry.base64","attachment_name":"$entry.originalName"}'
    "#if($foreach.hasNext),#end#end]"
)
_METADATA = (
    '"metadata":[#foreach ($entry in $metadata.entrySet()){"metadata_key":"$entry.key",'
    '"metadata_value":"$esc.json($entry.value)"}#if($foreach.hasNext),#end#end]'
)

MO_TEMPLATE = (
    '{#if($version == 2)"contact_message":$jsonUtils.toJson($contact_message),#end'
    '#if($moContent)"content":"$esc.json($moContent)",#end'
    '#if($messageId)"message_id": "$messageId",#end'
    '"type":"$type",'
    '#if($moId)"reply_id":"$moId",#end'
    '#if($notificationId)"notification_id":"$notificationId",#end'
    '#if($statusCode)"status_code":"$statusCode",#end'
    '#if($status)"status":"$status",#end'
    '#if($submittedTimestamp)"submitted_date":"$submittedTimestamp",#end'
    '#if($receivedTimestamp)"date_received":"$receivedTimestamp",#end'
    '"source_address":"$sourceAddress",'
    '#if($destinationAddress)"destination_address":"$destinationAddress",#end'
    f"{_ATTACHMENTS},{_METADATA}}}"
)
"""The connector's inbound-message (MO) template: SMS, MMS (attachments) and RCS
(``$version == 2`` adds the Conversation-API ``contact_message``)."""

DR_TEMPLATE = (
    '{"delivery_report_id":"$drId",'
    '#if($statusCode)"status_code":"$statusCode",#end'
    '#if($status)"status":"$status",#end'
    '#if($destinationAddress)"destination_address":"$destinationAddress",#end'
    '#if($submittedTimestamp)"submitted_date":"$submittedTimestamp",#end'
    '#if($receivedTimestamp)"date_received":"$receivedTimestamp",#end'
    '"type":"$type","message_id":"$messageId","source_address":"$sourceAddress",'
    '"content":"$esc.json($mtContent)",'
    f"{_ATTACHMENTS},{_METADATA}}}"
)
"""The connector's delivery-report template. ``source_address`` is the handset."""

MO_EVENTS: tuple[WebhookEvent, ...] = (
    WebhookEvent.RECEIVED_SMS,
    WebhookEvent.RECEIVED_MMS,
    WebhookEvent.OPT_OUT_SMS,
)
DR_EVENTS: tuple[WebhookEvent, ...] = (
    WebhookEvent.ENROUTE_DR,
    WebhookEvent.SUBMITTED_DR,
    WebhookEvent.DELIVERED_DR,
    WebhookEvent.EXPIRED_DR,
    WebhookEvent.REJECTED_DR,
    WebhookEvent.FAILED_DR,
)
