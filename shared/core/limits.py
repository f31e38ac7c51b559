"""Size and shape limits, in one place (documented in README's 'Limits' table)."""

MAX_EVENT_BYTES = 1_000_000          # enriched JSON; Event Hubs' Kafka request cap is 1,046,528
MAX_SINGLE_BODY_BYTES = 1_048_576    # POST /events body
MAX_BULK_BODY_BYTES = 4 * 1_048_576  # POST /events/bulk body
MAX_BULK_EVENTS = 1_000
MAX_DEPTH = 32                       # nesting of data/metadata
MAX_FIELDS = 10_000                  # keys + items across data/metadata
MAX_KEY_LENGTH = 256
MAX_STRING_LENGTH = 256 * 1024
MAX_EVENTS_QUERY_LIMIT = 1_000
DEFAULT_EVENTS_QUERY_LIMIT = 100
# Stored events in one answer of GET /events/{tenantId} (their JSON): 1,000 events of up to 1 MB would
# be a 1 GB answer built in one instance's memory, which would end the worker for every tenant. Past
# it the answer stops early (one event at least) and says `truncated`.
MAX_LIST_RESPONSE_BYTES = 8 * 1_048_576
MAX_CLOCK_SKEW_SECONDS = 300         # a client timestamp further in the future is refused
# How long Storage may leave a call unanswered before it counts as an outage: a read route's whole
# answer (shared/api/routes.py, `Route.deadline`), each page of the stream-config read, each attempt of
# any Storage SDK call (its `read_timeout`, shared/storage/clients.py). Against a store that accepts
# connections and never answers, the SDK's defaults took 90 s (30 s per attempt, three attempts);
# healthy storage answers a page in milliseconds (and the Table service ends a query's page within 5 s).
STORAGE_READ_SECONDS = 10.0
