"""Azure Storage clients (Tables, Queues): a connection string locally, managed identity in Azure.

Queue clients come from `queue_client` (or `storage/lazy.py`'s `LazyQueue`, which uses it) and nowhere else: they write
and read base64 text, the encoding the Functions queue trigger expects (host.json
`extensions.queues.messageEncoding: "base64"`). A client made by
`QueueServiceClient.get_queue_client(name)` alone does NOT inherit anything of the kind: its
messages would be raw text, and the host moves every one of them to `<queue>-poison` unread.
"""
from __future__ import annotations

from typing import Any

from azure.data.tables.aio import TableServiceClient
from azure.storage.queue import TextBase64DecodePolicy, TextBase64EncodePolicy
from azure.storage.queue.aio import QueueClient, QueueServiceClient

from shared.core.limits import STORAGE_READ_SECONDS
from shared.core.settings import Settings

# The request path has its own retries (destination retry policies, the retry queue, the client's
# retry on 503): the SDK's own retries stay short and a dead endpoint fails in seconds, not minutes.
# `read_timeout` is per attempt (a socket read): STORAGE_READ_SECONDS, so a store that accepts
# connections and never answers fails an operation in about 31 s (three attempts), not 90 s as with the
# SDK's 30 s. Storage answers within it when alive: the Table service ends a query's page within 5 s,
# and writes on the delivery path are bounded tighter by their destination's `timeoutSeconds`.
CLIENT_OPTIONS: dict[str, float] = {"retry_total": 2, "retry_backoff_factor": 0.3, "retry_backoff_max": 2,
                                    "connection_timeout": 5, "read_timeout": STORAGE_READ_SECONDS}

# The Queue SDK retries with a policy of its own (its ExponentialRetry, built from these keywords),
# which ignores `retry_backoff_*`: it waited 18 s, then 24 s (each +-3 s), so a refused connection
# failed a send after about 38 s, past every deadline of the delivery path (a failed delivery then
# could not be parked: "no answer"). Its own names for short waits: initial_backoff +
# increment_base ** attempt, about 0.7 s then 0.45 s (+-0.1 s): a refused send fails in about 1.2 s.
QUEUE_CLIENT_OPTIONS: dict[str, float] = {**CLIENT_OPTIONS, "initial_backoff": 0.2, "increment_base": 0.5,
                                          "random_jitter_range": 0.1}


def managed_identity() -> Any:
    """A new async credential for the managed identity (Azure). An instance builds one and shares it
    (shared.app.services.Services.identity): each credential keeps its own token cache and, for IMDS, its
    own HTTP session, so one per client would multiply calls to the token endpoint."""
    from azure.identity.aio import DefaultAzureCredential  # noqa: PLC0415 - only in Azure

    return DefaultAzureCredential()


def _account_url(settings: Settings, service: str) -> str:
    """The account's endpoint for the managed identity (no connection string set)."""
    if not settings.storage_account_name:
        raise RuntimeError("set STORAGE_CONNECTION_STRING (local) or STORAGE_ACCOUNT_NAME (managed identity)")
    return f"https://{settings.storage_account_name}.{service}.core.windows.net"


def table_service(settings: Settings, credential: Any = None) -> TableServiceClient:
    """`credential`: the instance's managed identity (used when no connection string is set)."""
    if settings.storage_connection_string:
        return TableServiceClient.from_connection_string(settings.storage_connection_string, **CLIENT_OPTIONS)
    return TableServiceClient(
        endpoint=_account_url(settings, "table"),
        credential=credential or managed_identity(),
        **CLIENT_OPTIONS,
    )


def queue_service(settings: Settings, credential: Any = None) -> QueueServiceClient:
    """The account's Queue service; make queue clients from it with `queue_client` / `LazyQueue`.
    `credential`: the instance's managed identity (used when no connection string is set)."""
    if settings.storage_connection_string:
        return QueueServiceClient.from_connection_string(settings.storage_connection_string,
                                                         **QUEUE_CLIENT_OPTIONS)
    return QueueServiceClient(
        account_url=_account_url(settings, "queue"),
        credential=credential or managed_identity(),
        **QUEUE_CLIENT_OPTIONS,
    )


def queue_client(queues: QueueServiceClient, name: str) -> QueueClient:
    """The one way to get a queue client: messages are base64 text both ways, as the queue trigger
    reads them (and as `devhost.queue_driver` decodes them, like the host)."""
    return queues.get_queue_client(name, message_encode_policy=TextBase64EncodePolicy(),
                                   message_decode_policy=TextBase64DecodePolicy())
