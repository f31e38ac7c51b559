"""Redis calls fail at once for a few seconds after Redis left one unanswered.

Why: Redis that accepts connections and does not answer (frozen, a failover stuck halfway) made
every call wait for its socket timeout (5 s). A request makes several calls one after another (rate
limit and idempotency, then the config versions, then the append), so each `POST /events` waited
10-15 s while Redis hung, though every one of those calls has its fallback (limit not applied,
check skipped, cached config, delivery parked). Once a call has had no answer within the socket
timeout, the instance's calls for the next PAUSE_SECONDS are not sent: they raise redis-py's
`TimeoutError` at once, which every caller already handles as Redis not answering. After that, calls
go through again: the first answer ends it, another timeout starts a new pause.

Only timeouts pause: a refused or dropped connection fails fast by itself (and redis-py's retry
reconnects). Nothing is sent during a pause, so nothing can land later.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable

from redis.exceptions import TimeoutError as RedisTimeoutError

log = logging.getLogger("grc.redis")

PAUSE_SECONDS = 5.0  # one socket timeout: a frozen Redis costs a caller at most that once per pause


class NotSent(RedisTimeoutError):
    """A call not sent because Redis is paused as unanswered; `seconds`: how long the pause lasts yet."""

    def __init__(self, message: str, seconds: float = 0.0) -> None:  # a default: copies rebuild from args
        super().__init__(message)
        self.seconds = seconds


class Unanswered:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.until = 0.0

    def check(self) -> None:
        """Raises NotSent (a redis-py TimeoutError) while paused: nothing is sent."""
        if self.until and (now := self.clock()) < self.until:
            raise NotSent("Redis left a call unanswered within its socket timeout moments ago: "
                          f"calls are not sent for {PAUSE_SECONDS:.0f} s", self.until - now)

    def timed_out(self) -> None:
        if not self.until:
            log.warning("Redis did not answer within the socket timeout: calls fail at once for %.0f s",
                        PAUSE_SECONDS)
        self.until = self.clock() + PAUSE_SECONDS

    def answered(self) -> None:
        if self.until:
            self.until = 0.0
            log.warning("Redis answers again")
