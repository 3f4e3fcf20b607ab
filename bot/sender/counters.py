"""What the sender did since it started: the counters the metrics read, kept by the send
loop, the attempts of each batch and the recording of their outcomes."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from bot.streams.consumer import PartitionTally

__all__ = ["SenderCounters"]


@dataclass
class SenderCounters:
    """What the sender did since it started (for metrics)."""

    calls: int = 0
    """Provider calls made (every attempt, bisection halves included)."""
    messages_sent: int = 0
    batch_sizes: Counter[int] = field(default_factory=Counter)
    """Messages per successful call → number of such calls."""
    retries: Counter[str] = field(default_factory=Counter)
    """Retried calls by cause: ``server_error``, ``timeout``, ``transport``,
    ``rate_limited``, ``rejected`` (a 400 resolved by resending or bisecting)."""
    throttle_wait_seconds: float = 0.0
    failed: int = 0
    """Messages recorded failed (invalid, rejected by the provider, or given up)."""
    suppressed: int = 0
    """Messages not sent because their recipient opted out (recorded ``suppressed``)."""
    dead_lettered: int = 0
    possible_duplicates: int = 0
    """Messages whose send may have reached the provider twice (unknown outcomes, crashes)."""
    refused: int = 0
    """Calls the provider refused without judging the messages (401, 403...)."""
    tally: PartitionTally = field(default_factory=PartitionTally, repr=False)
    """The partition readers' counters (kept by the stream consumer)."""

    @property
    def claimed(self) -> int:
        """Outbox entries taken over when a partition was acquired (an earlier owner's)."""
        return self.tally.claimed

    @property
    def errors(self) -> Counter[str]:
        """Times the send loop or a partition reader failed and started over (Redis
        outages...), by exception type."""
        return self.tally.restarts
