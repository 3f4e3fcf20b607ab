"""``SinchClient``: the Sinch MessageMedia / Sinch Engage REST API over ``httpx``.

Every connector action (send SMS, MMS and RCS, get sender IDs, get message status) and the
API around them (cancel, polling of replies and delivery reports, the Webhooks API, the
blacklist). The transport is injectable, so the client runs against the sandbox, an
``httpx.MockTransport`` or the real provider alike.

The client makes exactly the calls it is asked for: it does not retry. Retrying, batching
and throttling are policy, and live in the gateway's outbox; errors come back typed
(:mod:`bot.sinch.errors`) so that policy can tell a retryable failure from a final one.

>>> async with SinchClient(api_key="k", api_secret="s") as client:  # doctest: +SKIP
...     sent = await client.send_sms("+61491570156", "Hello")
...     status = await client.message_status(sent[0].message_id)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TypeVar
from urllib.parse import quote

import httpx

from bot import __version__
from bot.core import fastjson
from bot.sinch.auth import HmacAlgorithm, HmacAuth
from bot.sinch.errors import SinchTimeoutError, SinchTransportError, error_for_status
from bot.sinch.models import (
    MAX_MESSAGES_PER_CALL,
    BlacklistPage,
    DedicatedAssignmentPage,
    DeliveryReceipt,
    Format,
    InboundMessage,
    NumberAuthorisation,
    OutboundMessage,
    ProviderMessage,
    RcsMessage,
    SenderAddressPage,
    SenderIds,
    SendMessagesResponse,
    Webhook,
    WebhookEvent,
    WebhookPage,
    WebhookSpec,
    parse_inbound,
    parse_receipt,
)
from bot.sinch.templates import DR_EVENTS, DR_TEMPLATE, MO_EVENTS, MO_TEMPLATE

if TYPE_CHECKING:
    from bot.core.config import Settings

MESSAGEMEDIA_URL = "https://api.messagemedia.com"
ENGAGE_EU_URL = "https://eu.app.api.sinch.com"
ENGAGE_APAC_URL = "https://au.app.api.sinch.com"
DEFAULT_RCS_PATH = "/v1/int-power-automate/send-message-v2"
SENDER_ID_PATH = "/v1/int-crm/integrations/account/sender-id"

T = TypeVar("T")


def split_recipients(to: str | Iterable[str]) -> list[str]:
    """Recipients given as one space/comma-separated string or as a list, in order, once each."""
    items = to.replace(",", " ").split() if isinstance(to, str) else list(to)
    seen: dict[str, None] = {}
    for item in items:
        item = item.strip()
        if item:
            seen.setdefault(item, None)
    return list(seen)


def chunks(items: Sequence[T], size: int = MAX_MESSAGES_PER_CALL) -> list[Sequence[T]]:
    """``items`` cut into runs of at most ``size``: one provider call each."""
    return [items[i : i + size] for i in range(0, len(items), size)]


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - datetime.now(when.tzinfo).timestamp())


class SinchClient:
    """Async client of the provider's REST API. Use as an async context manager, or call
    :meth:`aclose` when done.

    :param base_url: the API host; see :data:`MESSAGEMEDIA_URL`, :data:`ENGAGE_EU_URL`,
        :data:`ENGAGE_APAC_URL`, or a sandbox URL.
    :param auth: ``"basic"`` or ``"hmac"``; ``hmac_algorithm`` picks ``sha256`` (as the docs
        say) or ``sha1`` (as the official SDK does).
    :param account: sub-account id, sent as the ``Account`` header.
    :param default_region: region for numbers given without a country code.
    :param transport: an ``httpx`` transport (for tests); default: a real connection pool.
    """

    def __init__(
        self,
        *,
        api_key: str,
        api_secret: str,
        base_url: str = MESSAGEMEDIA_URL,
        auth: str = "basic",
        hmac_algorithm: HmacAlgorithm = "sha256",
        account: str | None = None,
        connect_timeout: float = 5.0,
        request_timeout: float = 30.0,
        rcs_path: str = DEFAULT_RCS_PATH,
        default_region: str = "AU",
        transport: httpx.AsyncBaseTransport | None = None,
        max_connections: int = 8,
    ) -> None:
        if auth not in ("basic", "hmac"):
            raise ValueError("auth must be 'basic' or 'hmac'")
        headers = {
            "User-Agent": f"sinchbot/{__version__}",
            "Accept": "application/json",
        }
        if account:
            headers["Account"] = account
        http_auth: httpx.Auth = (
            httpx.BasicAuth(api_key, api_secret)
            if auth == "basic"
            else HmacAuth(api_key, api_secret, hmac_algorithm)
        )
        # Few connections: httpx's pool degrades badly with many requests in flight, and the
        # provider's throttle makes more pointless anyway.
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            auth=http_auth,
            headers=headers,
            timeout=httpx.Timeout(request_timeout, connect=connect_timeout),
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
            transport=transport,
        )
        self.base_url = base_url.rstrip("/")
        self.rcs_path = rcs_path
        self.default_region = default_region

    @classmethod
    def from_settings(
        cls, settings: Settings, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> SinchClient:
        """A client configured from :class:`bot.core.config.Settings` (credentials required)."""
        if settings.api_key is None or settings.api_secret is None:
            raise ValueError("SINCHBOT_API_KEY and SINCHBOT_API_SECRET must be set")
        return cls(
            api_key=settings.api_key.get_secret_value(),
            api_secret=settings.api_secret.get_secret_value(),
            base_url=settings.api_base_url,
            auth=settings.auth,
            hmac_algorithm=settings.hmac_algorithm,
            account=settings.account,
            connect_timeout=settings.connect_timeout,
            request_timeout=settings.request_timeout,
            rcs_path=settings.rcs_path,
            default_region=settings.default_region,
            transport=transport,
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    # ------------------------------------------------------------------ transport

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: Mapping[str, Any] | None = None,
    ) -> Any:
        """One API call. Returns the decoded JSON body (``None`` when empty).

        Raises a :class:`~bot.sinch.errors.SinchAPIError` subclass for error statuses,
        :class:`~bot.sinch.errors.SinchTimeoutError` or
        :class:`~bot.sinch.errors.SinchTransportError` when no answer came.
        """
        content = None
        headers = {}
        if body is not None:
            content = fastjson.dumps_bytes(body)
            headers["Content-Type"] = "application/json"
        clean_params = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            response = await self._http.request(
                method, path, content=content, headers=headers, params=clean_params or None
            )
        except httpx.TimeoutException as exc:
            raise SinchTimeoutError(
                f"{method} {path}: no answer from the provider in time ({type(exc).__name__}); "
                "the outcome is unknown"
            ) from exc
        except httpx.TransportError as exc:
            raise SinchTransportError(
                f"{method} {path}: connection to {self.base_url} failed: {exc or type(exc).__name__}"
            ) from exc
        payload = self._decode(response)
        if response.status_code >= 400:
            raise error_for_status(
                response.status_code,
                payload,
                retry_after=_retry_after(response.headers.get("Retry-After")),
            )
        return payload

    @staticmethod
    def _decode(response: httpx.Response) -> Any:
        if not response.content:
            return None
        if "json" in response.headers.get("Content-Type", ""):
            try:
                return fastjson.loads(response.content)
            except ValueError:
                return response.text
        return response.text

    # ------------------------------------------------------------------ sending

    async def send_messages(self, messages: Sequence[OutboundMessage]) -> list[ProviderMessage]:
        """Send messages through ``POST /v1/messages``, at most 100 per call, in order.

        Returns one :class:`ProviderMessage` per message, with its ``message_id``. A provider
        rejection of one call raises; calls made before it stay sent.
        """
        sent: list[ProviderMessage] = []
        for chunk in chunks(messages):
            payload = await self.request(
                "POST", "/v1/messages", body={"messages": [m.to_api() for m in chunk]}
            )
            sent.extend(SendMessagesResponse.model_validate(payload).messages)
        return sent

    def _recipients(self, to: str | Iterable[str]) -> list[str]:
        from bot.core.sms import normalise_phone

        recipients = split_recipients(to)
        if not recipients:
            raise ValueError("at least one recipient is required")
        return [normalise_phone(number, self.default_region) for number in recipients]

    async def send_sms(
        self,
        to: str | Iterable[str],
        content: str,
        *,
        source_number: str | None = None,
        delivery_report: bool | None = None,
        callback_url: str | None = None,
        metadata: Mapping[str, str] | None = None,
        scheduled: datetime | None = None,
        message_expiry: datetime | None = None,
        format: Format = Format.SMS,
    ) -> list[ProviderMessage]:
        """Send one text to one or more recipients (a list, or one space-separated string;
        numbers are normalised to E.164). More than 100 recipients take several calls."""
        messages = [
            OutboundMessage(
                content=content,
                destination_number=number,
                source_number=source_number,
                format=format,
                delivery_report=delivery_report,
                callback_url=callback_url,
                metadata=dict(metadata) if metadata else None,
                scheduled=scheduled,
                message_expiry_timestamp=message_expiry,
            )
            for number in self._recipients(to)
        ]
        return await self.send_messages(messages)

    async def send_mms(
        self,
        to: str | Iterable[str],
        content: str,
        media: Sequence[str],
        *,
        subject: str | None = None,
        source_number: str | None = None,
        delivery_report: bool | None = None,
        callback_url: str | None = None,
        metadata: Mapping[str, str] | None = None,
        scheduled: datetime | None = None,
    ) -> list[ProviderMessage]:
        """Send an MMS (``format: MMS`` with media URLs and an optional subject)."""
        messages = [
            OutboundMessage(
                content=content,
                destination_number=number,
                source_number=source_number,
                format=Format.MMS,
                media=list(media),
                subject=subject,
                delivery_report=delivery_report,
                callback_url=callback_url,
                metadata=dict(metadata) if metadata else None,
                scheduled=scheduled,
            )
            for number in self._recipients(to)
        ]
        return await self.send_messages(messages)

    async def send_rcs(self, messages: RcsMessage | Sequence[RcsMessage]) -> list[ProviderMessage]:
        """Send RCS messages (text, card, carousel or choices, with SMS fallback text).

        The provider does not document its RCS endpoint; the connector's path is the default
        and ``rcs_path`` changes it. At most 100 messages per call.
        """
        items = [messages] if isinstance(messages, RcsMessage) else list(messages)
        sent: list[ProviderMessage] = []
        for chunk in chunks(items):
            payload = await self.request(
                "POST", self.rcs_path, body={"messages": [m.to_api() for m in chunk]}
            )
            sent.extend(SendMessagesResponse.model_validate(payload).messages)
        return sent

    async def message_status(self, message_id: str) -> ProviderMessage:
        """The message as the provider knows it now (``GET /v1/messages/{id}``)."""
        payload = await self.request("GET", f"/v1/messages/{quote(message_id, safe='')}")
        return ProviderMessage.model_validate(payload)

    async def cancel_message(self, message_id: str) -> None:
        """Cancel a scheduled message. Raises InvalidRequestError if it is not scheduled."""
        await self.request(
            "PUT",
            f"/v1/messages/{quote(message_id, safe='')}",
            body={"status": "cancelled"},
        )

    # ------------------------------------------------------------------ senders

    async def sender_ids(self) -> SenderIds:
        """The account's sender IDs, as the connector's "Get sender IDs" returns them."""
        return SenderIds.model_validate(await self.request("GET", SENDER_ID_PATH))

    async def sender_addresses(
        self,
        *,
        sender_address_type: str | None = None,
        usage_type: str | None = None,
        page_size: int = 20,
        token: str | None = None,
    ) -> SenderAddressPage:
        """One page of the public sender-address listing; follow ``pagination.next_token``."""
        payload = await self.request(
            "GET",
            "/v1/messaging/numbers/sender_address/addresses",
            params={
                "sender_address_type": sender_address_type,
                "usage_type": usage_type,
                "page_size": page_size,
                "token": token,
            },
        )
        return SenderAddressPage.model_validate(payload)

    async def dedicated_numbers(
        self, *, page_size: int = 20, token: str | None = None
    ) -> DedicatedAssignmentPage:
        """One page of the account's dedicated number assignments."""
        payload = await self.request(
            "GET",
            "/v1/messaging/numbers/dedicated/assignments",
            params={"page_size": page_size, "token": token},
        )
        return DedicatedAssignmentPage.model_validate(payload)

    # ------------------------------------------------------------------ polling

    async def replies(self) -> list[InboundMessage]:
        """The oldest (up to 100) unconfirmed replies; the same ones until confirmed."""
        payload = await self.request("GET", "/v1/replies")
        return [parse_inbound(item) for item in (payload or {}).get("replies", [])]

    async def confirm_replies(self, reply_ids: Sequence[str]) -> None:
        """Mark replies as processed so polling moves on (100 per call)."""
        for chunk in chunks(list(reply_ids)):
            await self.request("POST", "/v1/replies/confirmed", body={"reply_ids": list(chunk)})

    async def delivery_reports(self) -> list[DeliveryReceipt]:
        """The oldest (up to 100) unconfirmed delivery reports."""
        payload = await self.request("GET", "/v1/delivery_reports")
        return [parse_receipt(item) for item in (payload or {}).get("delivery_reports", [])]

    async def confirm_delivery_reports(self, report_ids: Sequence[str]) -> None:
        """Mark delivery reports as processed (100 per call)."""
        for chunk in chunks(list(report_ids)):
            await self.request(
                "POST",
                "/v1/delivery_reports/confirmed",
                body={"delivery_report_ids": list(chunk)},
            )

    # ------------------------------------------------------------------ webhooks API

    async def create_webhook(self, spec: WebhookSpec) -> Webhook:
        """Register a webhook. Raises ConflictError if the url and method exist already."""
        payload = await self.request("POST", "/v1/webhooks/messages", body=spec.to_api())
        return Webhook.model_validate(payload)

    async def list_webhooks(self, *, page: int = 0, page_size: int = 100) -> WebhookPage:
        """One (0-based) page of registered webhooks."""
        payload = await self.request(
            "GET", "/v1/webhooks/messages", params={"page": page, "page_size": page_size}
        )
        return WebhookPage.model_validate(payload)

    async def all_webhooks(self) -> list[Webhook]:
        """Every registered webhook, following the pages."""
        result: list[Webhook] = []
        page = 0
        while True:
            batch = await self.list_webhooks(page=page)
            result.extend(batch.page_data)
            if not batch.page_data or len(batch.page_data) < max(batch.page_size, 1):
                return result
            page += 1

    async def update_webhook(self, webhook_id: str, **changes: Any) -> Webhook:
        """Change some fields of a webhook (``url``, ``events``, ``template``...)."""
        fields = {k: v for k, v in changes.items() if v is not None}
        if not fields:
            raise ValueError("nothing to update")
        payload = await self.request(
            "PATCH", f"/v1/webhooks/messages/{quote(webhook_id, safe='')}", body=fields
        )
        return Webhook.model_validate(payload)

    async def delete_webhook(self, webhook_id: str) -> None:
        """Remove a webhook. Raises NotFoundError for an unknown id."""
        await self.request("DELETE", f"/v1/webhooks/messages/{quote(webhook_id, safe='')}")

    async def subscribe(
        self,
        *,
        messages_url: str | None = None,
        receipts_url: str | None = None,
        headers: Mapping[str, str] | None = None,
        retries: int = 5,
        retry_delay: int = 30,
    ) -> list[Webhook]:
        """Register sinchbot's webhooks: inbound messages and opt-outs to ``messages_url``,
        delivery reports to ``receipts_url``, rendered with templates that carry
        ``reply_id`` / ``notification_id`` and ``delivery_report_id``."""
        plan: list[tuple[str, str, Sequence[WebhookEvent]]] = []
        if messages_url:
            plan.append((messages_url, MO_TEMPLATE, MO_EVENTS))
        if receipts_url:
            plan.append((receipts_url, DR_TEMPLATE, DR_EVENTS))
        if not plan:
            raise ValueError("give messages_url, receipts_url or both")
        created = []
        for url, template, events in plan:
            spec = WebhookSpec(
                url=url,
                method="POST",
                encoding="JSON",
                events=list(events),
                headers=dict(headers) if headers else None,
                template=template,
                retries=retries,
                retry_delay=retry_delay,
            )
            created.append(await self.create_webhook(spec))
        return created

    # ------------------------------------------------------------------ blacklist

    async def blacklist(self, *, token: str | None = None) -> BlacklistPage:
        """One page of numbers the provider will not send to."""
        payload = await self.request(
            "GET", "/v1/number_authorisation/mt/blacklist", params={"token": token}
        )
        return BlacklistPage.model_validate(payload)

    async def blacklist_add(self, numbers: Sequence[str]) -> None:
        """Add numbers to the blacklist (10 per call)."""
        for chunk in chunks(list(numbers), 10):
            await self.request(
                "POST", "/v1/number_authorisation/mt/blacklist", body={"numbers": list(chunk)}
            )

    async def blacklist_remove(self, number: str) -> None:
        """Remove a number from the blacklist (for example when it opts in again)."""
        await self.request(
            "DELETE", f"/v1/number_authorisation/mt/blacklist/{quote(number, safe='')}"
        )

    async def is_authorised(self, numbers: Sequence[str]) -> list[NumberAuthorisation]:
        """Whether the provider will send to each number."""
        joined = ",".join(quote(n, safe="") for n in numbers)
        payload = await self.request("GET", f"/v1/number_authorisation/is_authorised/{joined}")
        return [NumberAuthorisation.model_validate(i) for i in (payload or {}).get("numbers", [])]
