"""Settings of the sandbox provider: credentials, numbers, timing, pushes, initial faults.

Every provider-side delay (the receipt steps, the retry backoff of ``callback_url`` pushes,
the ``retry_delay`` of Webhooks-API webhooks) is multiplied by :attr:`SandboxConfig.time_scale`,
so a test can run the provider's real schedules a hundred times faster with ``time_scale=0.01``.

:attr:`SandboxConfig.throttle` scales the provider's call limit down (20 calls per 2 s
instead of 100 per 60 s), so a throttled gateway can be measured in seconds.

What the provider does when a handset texts an opt-out keyword is
:attr:`SandboxConfig.opt_out_handling` (docs/sandbox.md says which part of it the provider
documents and which part is our assumption).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final, Literal, get_args

__all__ = [
    "DEFAULT_OPT_OUT_REPLY",
    "DEFAULT_RCS_PATHS",
    "OPT_OUT_HANDLING",
    "OptOutHandling",
    "SandboxConfig",
]

DEFAULT_RCS_PATHS: tuple[str, ...] = (
    "/v1/int-power-automate/send-message-v2",
    "/v2/int-power-automate/message",
)
"""The connector's RCS send paths (newer and older binding, spec §1)."""

OptOutHandling = Literal["provider", "blacklist", "account"]
"""What the provider does with a handset's opt-out keyword (:attr:`SandboxConfig.opt_out_handling`)."""
OPT_OUT_HANDLING: Final[tuple[str, ...]] = get_args(OptOutHandling)

DEFAULT_OPT_OUT_REPLY: Final = (
    "You have opted out and will receive no more messages from this number. "
    "Reply START to opt back in."
)
"""The provider's own opt-out confirmation (``opt_out_handling="provider"``)."""

_E164 = re.compile(r"^\+[0-9]{8,15}$")


@dataclass(frozen=True)
class SandboxConfig:
    """How the sandbox behaves. Immutable; derive variants with :meth:`with_changes`."""

    host: str = "127.0.0.1"
    port: int = 0
    """TCP port; 0 picks a free one (see :attr:`bot.sandbox.Sandbox.url`)."""

    credentials: Mapping[str, str] = field(
        default_factory=lambda: {"sandbox-key": "sandbox-secret"}
    )
    """API key → secret. Every pair is accepted with Basic and HMAC (sha256 and sha1)."""

    numbers: Sequence[str] = ("+61491570157",)
    """The account's dedicated numbers (E.164). The first is the default sender and the
    default number handsets write to."""

    account_id: str = "SandboxAccount"
    vendor_id: str = "SinchEU"

    step_delay: float = 0.05
    """Seconds between the receipt steps queued → enroute → submitted → final."""
    time_scale: float = 1.0
    """Factor applied to every provider-side delay (steps and push retry schedules)."""

    webhook_url: str | None = None
    """Push every inbound message (and opt-out notification) here, rendered with the
    connector's MO template, as if the gateway had registered it through the Webhooks API."""
    receipt_url: str | None = None
    """Push every delivery report here with the connector's DR template; defaults to
    :attr:`webhook_url`."""

    rcs_paths: Sequence[str] = DEFAULT_RCS_PATHS
    """Paths that accept RCS sends."""

    opt_out_handling: OptOutHandling = "provider"
    """What happens when a handset texts an opt-out keyword (every keyword also fires an
    ``OPT_OUT_SMS`` notification):

    * ``"provider"``: the provider blacklists the number, so every later send to it is
      rejected 302, and sends the handset its own confirmation (:attr:`opt_out_reply`) from
      the number the keyword went to: once, when the keyword puts the number on the
      blacklist (a repeated STOP is not confirmed again);
    * ``"blacklist"``: it blacklists the number and sends nothing;
    * ``"account"``: the account handles opt-outs itself: nothing is blacklisted, and the
      blacklist (kept through its API) does not affect sends."""
    opt_out_reply: str = DEFAULT_OPT_OUT_REPLY
    """The provider's confirmation under ``opt_out_handling="provider"``."""

    signing: bool = False
    """Create and enable an RSA signature key at start, so every push is signed."""
    signing_digest: str = "SHA256"
    secure_callbacks: bool = True
    """Whether the account has the signature-key feature; when false the signature key API
    answers 403, as the provider does for accounts without ``API_SECURE_CALLBACKS``."""

    callback_attempts: int = 5
    """Tries of a ``callback_url`` / ``webhook_url`` / ``receipt_url`` push (first included)."""
    callback_backoff: float = 0.5
    """First retry delay of those pushes in seconds; doubled on each further retry."""
    callback_max_delay: float = 60.0
    push_timeout: float = 10.0
    """Seconds a push may take (``read_timeout`` of a webhook overrides it)."""
    push_concurrency: int = 64
    """Pushes in flight at once (connection pool size of the pusher)."""

    delivery_reports_always: bool = False
    """Produce delivery reports even for messages sent without ``delivery_report: true`` (the
    provider's own demo observed that; its reference says reports need the flag)."""

    faults: Sequence[Mapping[str, Any]] = ()
    """Initial fault rules (see :mod:`bot.sandbox.faults`)."""
    receipt_faults: Mapping[str, Any] | None = None
    """Initial receipt faults: ``{"duplicate_rate": 0.2, "out_of_order": true}``."""
    outcomes: Mapping[str, str | int | tuple[str, int | None]] = field(default_factory=dict)
    """Destination → final outcome: a status (``"failed"``), a status code (``414``) or both
    (``("failed", 414)``)."""
    seed: int | None = None
    """Seed of the random source used by faults, for reproducible runs."""
    throttle: tuple[int, float] | None = None
    """``(calls, seconds)``: at most that many provider calls per connection (API key and
    ``Account``) in any window of that many seconds, 429 with ``Retry-After`` past it (see
    :mod:`bot.sandbox.throttle`); ``None``: no limit. Not scaled by :attr:`time_scale`."""

    credits: int = 1_000_000
    """Credits the account starts with (``GET /v1/messaging/credits``)."""
    max_messages: int = 500_000
    """Messages kept for ``GET /v1/messages/{id}``; the oldest are forgotten beyond this."""
    max_unconfirmed: int = 100_000
    """Unconfirmed replies and delivery reports kept for polling (each); oldest dropped."""
    shutdown_timeout: float = 1.0
    """Seconds in-flight requests get to finish when the sandbox stops."""

    def __post_init__(self) -> None:
        if not self.numbers:
            raise ValueError("the sandbox needs at least one account number")
        for number in self.numbers:
            if not _E164.match(number):
                raise ValueError(f"account number {number!r} is not E.164")
        if not self.credentials:
            raise ValueError("the sandbox needs at least one api key")
        if self.step_delay < 0 or self.time_scale < 0:
            raise ValueError("step_delay and time_scale must not be negative")
        if self.callback_attempts < 1:
            raise ValueError("callback_attempts must be at least 1")
        if self.push_concurrency < 1:
            raise ValueError("push_concurrency must be at least 1")
        if self.opt_out_handling not in OPT_OUT_HANDLING:
            raise ValueError(
                f"opt_out_handling {self.opt_out_handling!r} is not one of {OPT_OUT_HANDLING}"
            )
        if not self.opt_out_reply.strip():
            raise ValueError("opt_out_reply must not be empty")
        if self.throttle is not None and not (
            self.throttle[0] >= 1 and 0 < self.throttle[1] < float("inf")
        ):
            raise ValueError("throttle must be (calls >= 1, seconds > 0)")
        for path in self.rcs_paths:
            if not path.startswith("/"):
                raise ValueError(f"rcs path {path!r} must start with '/'")

    @property
    def default_number(self) -> str:
        """The default sender (and the number handsets write to by default)."""
        return self.numbers[0]

    @property
    def api_key(self) -> str:
        """The first API key."""
        return next(iter(self.credentials))

    @property
    def api_secret(self) -> str:
        """The secret of :attr:`api_key`."""
        return self.credentials[self.api_key]

    @property
    def effective_receipt_url(self) -> str | None:
        return self.receipt_url or self.webhook_url

    def scaled(self, seconds: float) -> float:
        """A provider-side delay after :attr:`time_scale`."""
        return max(0.0, seconds * self.time_scale)

    def with_changes(self, **changes: Any) -> SandboxConfig:
        """A copy with some fields changed."""
        return replace(self, **changes)
