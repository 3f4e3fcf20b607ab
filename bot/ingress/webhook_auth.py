"""Who may push events to the gateway's webhooks.

Two credentials, either of which is enough when both are configured:

* **RSA signature** (the provider's "secure callbacks"): with a public key configured, a
  request carrying ``X-MessageMedia-Signature`` is verified over the request line (method
  and raw path+query exactly as received), the ``Date`` header and the raw body, and the
  ``Date`` must be within ``max_skew`` seconds of our clock (see
  :mod:`bot.sinch.signatures`).
* **Shared secret**: the header ``X-Webhook-Secret`` (set through a registered webhook's
  custom headers) or the query parameter ``?token=`` (a per-message ``callback_url`` cannot
  carry headers), compared as bytes, exactly as received, in constant time.

With neither configured, webhooks are accepted only when ``allow_unauthenticated`` is set
(the zero-configuration sandbox mode). Failures raise :class:`WebhookAuthError`: 401 when no
credential was presented, 403 when one was presented and is wrong or stale. The ``reason``
is for the log (never the secret, token or signature themselves); the response carries no
detail.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from typing import Literal

from bot.sinch.signatures import (
    CIPHER_HEADER,
    DATE_HEADER,
    DIGEST_HEADER,
    KEY_ID_HEADER,
    SIGNATURE_HEADER,
    SignatureError,
    load_public_key,
    verify,
)

__all__ = ["SECRET_HEADER", "TOKEN_PARAM", "WebhookAuth", "WebhookAuthError"]

SECRET_HEADER = "X-Webhook-Secret"
"""Header carrying the shared secret."""
TOKEN_PARAM = "token"
"""Query parameter carrying the shared secret (for ``callback_url``)."""

_SIGNATURE_HEADERS = (SIGNATURE_HEADER, DIGEST_HEADER, CIPHER_HEADER, KEY_ID_HEADER, DATE_HEADER)


class WebhookAuthError(Exception):
    """A webhook request that must be refused: ``status`` is 401 (no credentials) or 403
    (wrong, tampered or stale credentials); ``reason`` is for the log only."""

    def __init__(self, status: Literal[401, 403], reason: str) -> None:
        super().__init__(f"{status}: {reason}")
        self.status: Literal[401, 403] = status
        self.reason = reason


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is not None:
        return value
    wanted = name.lower()
    for key, item in headers.items():
        if key.lower() == wanted:
            return item
    return None


def _raw(value: str) -> bytes:
    """The bytes a header value was received as: aiohttp decodes header values as UTF-8 with
    ``surrogateescape``, so a byte that is not UTF-8 comes back as itself (a lossy decoding
    would turn ``\\xff`` into ``?`` and let it match a ``?`` in the secret)."""
    try:
        return value.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # no bytes stand for it (not from the wire): never a match
        return b"\x00"


class WebhookAuth:
    """Checks webhook requests against the configured credentials.

    Args:
        public_key: the provider's signature public key (base64 DER or PEM), or None.
            Raises :class:`ValueError` at construction if it is not an RSA public key.
        secret: the shared secret, or None.
        max_skew: seconds a signed request's ``Date`` may differ from our clock.
        allow_unauthenticated: accept every request when neither credential is configured
            (the zero-configuration sandbox mode); ignored otherwise.
    """

    def __init__(
        self,
        public_key: str | None,
        secret: str | None,
        max_skew: float,
        allow_unauthenticated: bool,
    ) -> None:
        self._public_key = load_public_key(public_key) if public_key else None
        self._secret = secret.encode("utf-8", "surrogateescape") if secret else None
        self.max_skew = max_skew
        self.allow_unauthenticated = allow_unauthenticated

    @property
    def configured(self) -> bool:
        """Whether any credential is configured."""
        return self._public_key is not None or self._secret is not None

    @property
    def open(self) -> bool:
        """Whether every request is accepted (no credentials, sandbox mode)."""
        return not self.configured and self.allow_unauthenticated

    def verify(
        self,
        path_qs: str,
        method: str,
        headers: Mapping[str, str],
        body: bytes,
        query: Mapping[str, str],
        *,
        now: float | None = None,
    ) -> None:
        """Accept the request or raise :class:`WebhookAuthError`.

        Args:
            path_qs: the raw path and query string exactly as received (percent-encoded).
            method: the HTTP method.
            headers: request headers (names matched case-insensitively).
            body: the raw body bytes, before any parsing.
            query: the decoded query parameters.
            now: the current Unix time, for tests (defaults to the clock).
        """
        if not self.configured:
            if self.allow_unauthenticated:
                return
            raise WebhookAuthError(401, "no webhook credentials are configured")
        reasons: list[str] = []
        presented = False
        if self._public_key is not None:
            missing = [name for name in _SIGNATURE_HEADERS if _header(headers, name) is None]
            if missing:
                # Incomplete is as good as absent (401): a plain ``Date`` is no credential.
                reasons.append("signature: missing " + ", ".join(missing))
            else:
                presented = True
                try:
                    verify(
                        self._public_key,
                        method=method,
                        path_qs=path_qs,
                        headers=headers,
                        body=body,
                        now=now,
                        max_skew=self.max_skew,
                    )
                    return
                except SignatureError as exc:
                    reasons.append(f"signature: {exc.reason}")
        if self._secret is not None:
            candidates = [
                ("header", _header(headers, SECRET_HEADER)),
                ("token", query.get(TOKEN_PARAM)),
            ]
            offered = [(where, value) for where, value in candidates if value is not None]
            if offered:
                presented = True
                # Compare every offered value (no early exit) in constant time.
                matches = [
                    hmac.compare_digest(_raw(value), self._secret) for _where, value in offered
                ]
                if any(matches):
                    return
                reasons.append("secret: wrong " + " and ".join(where for where, _value in offered))
            else:
                reasons.append(f"secret: no {SECRET_HEADER} header or ?{TOKEN_PARAM}=")
        raise WebhookAuthError(403 if presented else 401, "; ".join(reasons))
