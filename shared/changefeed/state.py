"""Redis state of the change-feed path: the last-known snapshot of each entity.

A Lua script, so each check-and-set is atomic across instances; every key of a call carries the
tenant's hash tag (`grc:{tenant}:cf:...`), so one call per tenant is Cluster-safe. (Events are
deduplicated by their idempotency claims: shared/delivery/idempotency.py.)

Entity snapshot (hash `grc:{t}:cf:s:<kind>:<id>`): `o` version order, `i` version ident,
`c` the snapshot at that version, `p` the snapshot before it, `s` the last version whose events
were all delivered or parked ("settled"). A change at a version
- newer than the stored one moves `c` to `p` and stores the new snapshot: prior = old `c`;
- equal to the stored one (a re-delivery) changes nothing: if that version is settled, it yields
  nothing at all (so even a replay from the beginning long after the idempotency claims expired
  publishes nothing again); otherwise prior = `p`, so the same events (same ids) come out again
  and their idempotency claims keep them from being published twice;
- older (a stale copy, e.g. a replayed park after newer changes) yields no events.
Two instances handling the same change therefore compute the same events from the same prior.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from redis.asyncio import Redis

from shared.changefeed.rules import Version
from shared.storage.redisconn import tenant_key

_SWAP = """
local ttl = tonumber(ARGV[1])
local out = {}
for i, key in ipairs(KEYS) do
  local order, ident, snap = tonumber(ARGV[3*i-1]), ARGV[3*i], ARGV[3*i+1]
  local cur = redis.call('HMGET', key, 'o', 'i', 'c', 'p', 's')
  if not cur[1] then
    redis.call('HSET', key, 'o', order, 'i', ident, 'c', snap, 'p', '')
    out[i] = {'new', ''}
  elseif ident == cur[2] then
    if cur[5] == ident then out[i] = {'done', cur[4]} else out[i] = {'same', cur[4]} end
  elseif order >= tonumber(cur[1]) then
    redis.call('HSET', key, 'o', order, 'i', ident, 'c', snap, 'p', cur[3])
    out[i] = {'next', cur[3]}
  else
    out[i] = {'stale', ''}
  end
  if ttl > 0 then redis.call('EXPIRE', key, ttl) end
end
return out
"""

def state_key(tenant: str, kind: str, doc_id: str) -> str:
    return tenant_key(tenant, "cf", "s", kind, doc_id)


@dataclass(frozen=True)
class Prior:
    code: str  # new | next | same | done (same, settled) | stale
    snapshot: dict[str, Any] | None

    @property
    def stale(self) -> bool:
        return self.code == "stale"

    @property
    def settled(self) -> bool:
        return self.code == "done"


class EntityState:
    def __init__(self, client: Redis, ttl_seconds: int) -> None:
        self._redis = client
        self._ttl = ttl_seconds
        self._swap = client.register_script(_SWAP)

    async def swap(
        self, kind: str, groups: dict[str, Sequence[tuple[str, Version, dict[str, Any]]]]
    ) -> dict[str, list[Prior]]:
        """Store each (doc id, version, snapshot), per tenant in order; return each one's prior.

        One script call per tenant (its keys share a slot), all in one pipelined round trip.
        """
        groups = {t: c for t, c in groups.items() if c}
        if not groups:
            return {}
        pipe = self._redis.pipeline(transaction=False)
        for tenant, changes in groups.items():
            keys = [state_key(tenant, kind, doc_id) for doc_id, _, _ in changes]
            args: list[Any] = [self._ttl]
            for _, version, snap in changes:
                args += [version.order, version.ident, orjson.dumps(snap)]
            await self._swap(keys=keys, args=args, client=pipe)
        replies = await pipe.execute()
        out: dict[str, list[Prior]] = {}
        for tenant, reply in zip(groups, replies):
            out[tenant] = [Prior(code.decode() if isinstance(code, bytes) else code,
                                 orjson.loads(raw) if raw else None) for code, raw in reply]
        return out


    async def settle(self, kind: str, changes: Sequence[tuple[str, str, str]]) -> None:
        """Mark (tenant, doc id, version ident) as settled: all its events delivered or parked."""
        if not changes:
            return
        pipe = self._redis.pipeline(transaction=False)
        for tenant, doc_id, ident in changes:
            pipe.hset(state_key(tenant, kind, doc_id), "s", ident)
        await pipe.execute()
