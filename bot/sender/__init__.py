"""The way to the provider: the send loop draining the outboxes of the partitions this
worker holds (per-partition readers on the stream consumer feeding one bounded buffer), the
attempts of one batch (retries, the shared 429 pause, a 400's blame and bisection, 401/403),
batching and validation, recording the outcomes, the in-flight marker, and the rate limiter
every provider call goes through (the Redis throttle behind a small seam)."""
