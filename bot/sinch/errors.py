"""Typed errors raised by :class:`bot.sinch.client.SinchClient`.

Every error carries a message a person can act on. API errors keep the HTTP status, the
provider's own message and, for validation failures, the provider's ``details`` list.
"""

from __future__ import annotations

from typing import Any


class SinchError(Exception):
    """Base class of every error raised by the provider layer."""


class SinchTransportError(SinchError):
    """The request did not complete: connection refused, reset or dropped mid-response.

    Whether the provider acted on the request is unknown.
    """


class SinchTimeoutError(SinchTransportError):
    """The provider did not answer in time. The outcome is unknown: the request may have been
    processed, so a retry can cause a duplicate."""


class SinchAPIError(SinchError):
    """The provider answered with an error status."""

    def __init__(
        self,
        status_code: int,
        message: str,
        *,
        details: list[str] | None = None,
        body: Any = None,
    ) -> None:
        self.status_code = status_code
        self.message = message
        self.details = list(details or [])
        self.body = body
        text = f"HTTP {status_code}: {message}"
        if self.details:
            text += " (" + "; ".join(self.details) + ")"
        super().__init__(text)


class AuthenticationError(SinchAPIError):
    """401: the API key and secret (or HMAC signature) were not accepted."""


class PermissionDeniedError(SinchAPIError):
    """403: the credentials are valid but the feature is not enabled for this account."""


class InvalidRequestError(SinchAPIError):
    """400 or 422: the provider rejected the request; ``details`` says which field and why.

    For ``POST /v1/messages`` no message of the call was sent.
    """


class NotFoundError(SinchAPIError):
    """404: no such message, webhook or number."""


class ConflictError(SinchAPIError):
    """409: the resource already exists (for example a webhook with the same url and method)."""


class RateLimitedError(SinchAPIError):
    """429: too many requests. ``retry_after`` is the provider's ``Retry-After`` in seconds,
    when it sent one."""

    def __init__(
        self,
        status_code: int,
        message: str,
        *,
        retry_after: float | None = None,
        details: list[str] | None = None,
        body: Any = None,
    ) -> None:
        super().__init__(status_code, message, details=details, body=body)
        self.retry_after = retry_after


class ServerError(SinchAPIError):
    """5xx: the provider failed. Safe to retry with backoff."""


def error_for_status(
    status_code: int,
    body: Any,
    *,
    retry_after: float | None = None,
) -> SinchAPIError:
    """Build the typed error for an HTTP error response from the provider."""
    message = ""
    details: list[str] = []
    if isinstance(body, dict):
        raw_message = body.get("message")
        message = str(raw_message) if raw_message is not None else ""
        raw_details = body.get("details")
        if isinstance(raw_details, list):
            details = [str(d) for d in raw_details]
    elif isinstance(body, str):
        message = body.strip()[:300]
    if not message:
        message = _DEFAULT_MESSAGES.get(status_code, "unexpected response from the provider")
    kwargs: dict[str, Any] = {"details": details, "body": body}
    if status_code == 401:
        return AuthenticationError(status_code, message, **kwargs)
    if status_code == 403:
        # MessageMedia's older docs answer bad credentials with 403 too.
        if "authentication" in message.lower() or "credentials" in message.lower():
            return AuthenticationError(status_code, message, **kwargs)
        return PermissionDeniedError(status_code, message, **kwargs)
    if status_code in (400, 422):
        return InvalidRequestError(status_code, message, **kwargs)
    if status_code == 404:
        return NotFoundError(status_code, message, **kwargs)
    if status_code == 409:
        return ConflictError(status_code, message, **kwargs)
    if status_code == 429:
        return RateLimitedError(status_code, message, retry_after=retry_after, **kwargs)
    if status_code >= 500:
        return ServerError(status_code, message, **kwargs)
    return SinchAPIError(status_code, message, **kwargs)


_DEFAULT_MESSAGES = {
    400: "the request was not valid",
    401: "invalid authentication credentials",
    403: "this feature has not been enabled in your account",
    404: "resource not found",
    409: "the resource already exists",
    422: "the request could not be processed",
    429: "too many requests",
    500: "provider internal error",
    502: "bad gateway",
    503: "provider unavailable",
    504: "provider gateway timeout",
}
