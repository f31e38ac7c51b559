"""A destination's own concurrency limit, kept out of its calls' attempt timeouts.

The dispatcher bounds each destination call by the retry policy's `timeoutSeconds` (dispatch.py): the
timeout is there to notice a dependency that does not answer. A destination that caps the requests
this instance has in flight (analytics: `CONCURRENCY` Table transactions) queues the rest of every
concurrent call behind that cap. Counted against the timeout, that queue failed deliveries the
dependency was answering at full speed: six to sixteen bulks at once, each naming 1,000 tenants with
analytics (1,000 transactions a call), timed out after 10 s of waiting for the instance's own slots,
were parked, and two of them answered 503 (tests/system/test_many_tenants.py).

So, under an attempt (`attempt_clock`, set by the dispatcher around each call), a call's deadline is
the later of its start + timeoutSeconds and, while the call still has requests queued for a slot, the
dependency's last answer to this instance (to any call: an error is an answer, a request cancelled by
its call's timeout is not) + timeoutSeconds. So:
- a busy dependency that keeps answering keeps the queued calls alive, however long the queue;
- a request that goes out gets timeoutSeconds from the answer that freed its slot, so one left
  unanswered fails its call as before;
- a dependency that went silent fails every call timeoutSeconds after its last answer (or after the
  call's start), not one timeout after another down the queue.
On this instance, how long a call can queue is bounded by how many calls the host runs at once.
"""
from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar
from typing import AsyncIterator, Iterator


class _Clock:
    """One attempt's timeout (armed by the dispatcher) and its length; `queued`: its requests waiting
    for a slot."""

    __slots__ = ("timeout", "seconds", "queued")

    def __init__(self, timeout: asyncio.Timeout, seconds: float) -> None:
        self.timeout = timeout
        self.seconds = seconds
        self.queued = 0

    def extend(self, until: float) -> None:
        """Move the deadline to `until` if that is later (never earlier; never once it has fired)."""
        when = self.timeout.when()
        if when is not None and until > when and not self.timeout.expired():
            try:
                self.timeout.reschedule(until)
            except RuntimeError:  # the attempt has ended meanwhile
                pass


_ATTEMPT: ContextVar[_Clock | None] = ContextVar("grc_attempt_clock", default=None)


@contextmanager
def attempt_clock(timeout: asyncio.Timeout, seconds: float) -> Iterator[None]:
    """Inside: destination calls see this attempt's timeout (tasks they start inherit it)."""
    token = _ATTEMPT.set(_Clock(timeout, seconds))
    try:
        yield
    finally:
        _ATTEMPT.reset(token)


class OwnLimit:
    """At most `limit` requests of this instance in flight to one dependency; the wait for a slot is
    not counted against the waiting call's attempt timeout while the dependency keeps answering."""

    def __init__(self, limit: int) -> None:
        self._sem = asyncio.Semaphore(limit)
        self._queued: set[_Clock] = set()  # attempts with requests waiting for a slot

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        clock = _ATTEMPT.get()
        if clock is None:  # not a dispatched call (reads, purges): a plain limit
            async with self._sem:
                yield
            return
        clock.queued += 1
        self._queued.add(clock)
        try:
            await self._sem.acquire()
        finally:
            clock.queued -= 1
            if not clock.queued:
                self._queued.discard(clock)
        # No new deadline for the request going out: the answer that freed its slot has just moved the
        # call's deadline (it was still queued), and a slot freed by a timed-out call is no answer, so a
        # silent dependency cannot hand every queued call a fresh timeout in turn.
        answered = True
        try:
            yield
        except asyncio.CancelledError:
            answered = False  # its call timed out (or was dropped): no sign of life from the dependency
            raise
        finally:
            self._sem.release()
            if answered:
                self._answered()

    def _answered(self) -> None:
        """A request was answered (an error is an answer too): every queued call's deadline moves on."""
        if self._queued:
            now = asyncio.get_running_loop().time()
            for clock in list(self._queued):
                clock.extend(now + clock.seconds)
