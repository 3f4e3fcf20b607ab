"""Redis, as the gateway uses it: every key name (one hash tag per partition, so a
partition's keys share a cluster slot), the atomic batch store (guards and effects applied
by one Lua call), the encodings of what the streams carry, and the embedded redis-server."""
