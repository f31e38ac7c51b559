"""The one byte cap of list answers: every read route that lists stored items (GET /events, its
history, dead letters, the audit trail) stops at `limits.MAX_LIST_RESPONSE_BYTES` of items.

Why: a listing's `limit` (up to 1,000) times an item's largest size (an event: 1 MB) would be a 1 GB
answer built in one instance's memory, which ends the Python worker for every tenant on it. So:

- an answer stops once its items reach the cap, keeping one item at least (a single large item is
  still served) and saying so (`truncated`); a paged route's continuation token then starts right
  after the last item answered;
- reads go in pages sized by what was seen so far: FIRST_READ items first, then as many as the bytes
  left hold at the mean size seen (one more: it tells the cap is reached), never `limit` items of
  unknown size at once.

An item's size is its JSON as answered (UTF-8 bytes). Pure: the stores do the reading.
"""
from __future__ import annotations

from dataclasses import dataclass

from shared.core import limits

FIRST_READ = 16  # items of a listing's first read (at most 16 MB of events), the next sized by what it saw
# What `truncated` means in every listing's schema (OpenAPI): one wording for all of them.
_CAP_MIB = limits.MAX_LIST_RESPONSE_BYTES // 1_048_576
TRUNCATED_DOC = (f"Fewer than `limit` items: the answer reached {_CAP_MIB} MiB of stored items "
                 "(it holds one at least).")
TRUNCATED_PAGED_DOC = TRUNCATED_DOC + (" The continuation token goes on right after its last item: "
                                       "nothing is skipped.")


def json_size(text: str | bytes) -> int:
    """UTF-8 bytes of a JSON text as a store hands it back (str or bytes)."""
    if isinstance(text, (bytes, bytearray, memoryview)):
        return len(text)
    return len(text) if text.isascii() else len(text.encode())


@dataclass
class AnswerCap:
    """The bytes of one answer's items, and what the reads saw to size the next read."""

    max_bytes: int = limits.MAX_LIST_RESPONSE_BYTES
    taken_bytes: int = 0  # items in the answer
    taken: int = 0
    seen_bytes: int = 0  # items read, answered or not (filtered out, or past the cap)
    seen: int = 0
    truncated: bool = False  # an item was left out because the answer was full

    def admit(self, size: int) -> bool:
        """Whether an item of `size` bytes goes into the answer: always the first, then while the
        items stay within `max_bytes`. False sets `truncated`: the answer is full, stop reading."""
        self.seen_bytes += size
        self.seen += 1
        if self.taken and self.taken_bytes + size > self.max_bytes:
            self.truncated = True
            return False
        self.taken_bytes += size
        self.taken += 1
        return True

    def skip(self, size: int) -> None:
        """An item read but not for the answer (a filter left it out): it still sizes the reads."""
        self.seen_bytes += size
        self.seen += 1

    def next_read(self, most: int, ways: int = 1) -> int:
        """Items to ask for in the next read, from each of `ways` sources read side by side (a table's
        shards): FIRST_READ at first, then what the bytes left hold at the mean size seen, plus one;
        at least 1 from each, at most `most`."""
        if not self.seen:
            fit = FIRST_READ
        else:
            fit = int((self.max_bytes - self.taken_bytes) / (self.seen_bytes / self.seen)) + 1
        return max(1, min(most, -(-fit // max(1, ways))))
