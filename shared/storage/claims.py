"""The one dedupe primitive: claim a Redis key for a time.

A claim is a string key with a TTL. `take` is atomic per key (one Lua script):

- absent                        -> set to the pending marker for `ttl` seconds: **new** (the caller owns it)
- the pending marker (`pending`, or `pending:<rest>`) -> **busy**: another caller's claim is in flight
- a resumable value (`<prefix><rest>`, when the claim kind has a prefix) -> set to `pending:<rest>`
  for `ttl`: **resume** (the caller owns it again, with what the earlier owner left)
- anything else                 -> **held**, with the value: a settled claim (the work was done)

`settle` stores each claim's outcome for its window (or releases it: the next `take` is new);
the pending marker's short TTL frees a claim whose owner died. Each key is its own script call
(Redis-Cluster safe whatever the keys' tenants), all of one `take` in one round trip.

Users: idempotent publishing (`delivery/idempotency.py`: the client's and the service's event ids,
change-feed and overdue events included), and the monitor's tenant-minute lock. The Redis
destination's `dlv` marker is the same primitive written inside its append script, because it must
be atomic with the XADD it guards (docs/architecture.md, "Dedupe").
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Literal, NamedTuple

from redis.asyncio import Redis

from shared.storage.redisconn import pipelined, run_script

PENDING = b"pending"

# KEYS[1] the claim; ARGV[1] the pending marker, ARGV[2] its TTL (s), ARGV[3] the resumable prefix ('' = none).
_TAKE = """
local v = redis.call('GET', KEYS[1])
if not v then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
  return {'new', ''}
end
if string.sub(v, 1, #ARGV[1]) == ARGV[1] then return {'busy', ''} end
if ARGV[3] ~= '' and string.sub(v, 1, #ARGV[3]) == ARGV[3] then
  local rest = string.sub(v, #ARGV[3] + 1)
  redis.call('SET', KEYS[1], ARGV[1] .. ':' .. rest, 'EX', ARGV[2])
  return {'resume', rest}
end
return {'held', v}
"""

State = Literal["new", "busy", "resume", "held"]


class Taken(NamedTuple):
    state: State
    value: bytes  # resume: what the earlier owner left; held: the settled value; else b""


class Claims:
    """Claims of one kind: `resumable` is the prefix of a settled value that a new owner may take
    over (idempotency's `partial:`), b"" when every settled value is final."""

    def __init__(self, client: Redis, *, resumable: bytes = b"") -> None:
        self._redis = client
        self._resumable = resumable
        self._take = client.register_script(_TAKE)

    async def take(self, keys: Sequence[str], ttl_seconds: int) -> list[Taken]:
        """Try each key; one round trip. Raises on a Redis error (the caller decides: open or closed)."""
        if not keys:
            return []
        args = [PENDING, ttl_seconds, self._resumable]
        replies = await run_script(self._redis, self._take, ([[k], args] for k in keys))
        out = []
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
            state, value = reply
            out.append(Taken(state.decode() if isinstance(state, bytes) else str(state),  # type: ignore[arg-type]
                             value if isinstance(value, bytes) else str(value).encode()))
        return out

    async def settle(self, outcomes: Iterable[tuple[str, bytes | None, int]]) -> None:
        """(key, value, window seconds) per claim: keep `value` for the window, or release the
        claim when `value` is None. One round trip."""
        commands = [("SET", key, value, "EX", window) if value is not None else ("DEL", key)
                    for key, value, window in outcomes]
        for reply in await pipelined(self._redis, commands):
            if isinstance(reply, Exception):
                raise reply
