"""Azure Storage clients (Tables, Queues): a connection string locally, managed identity in Azure."""
from __future__ import annotations

from azure.data.tables.aio import TableServiceClient
from azure.storage.queue import TextBase64DecodePolicy, TextBase64EncodePolicy
from azure.storage.queue.aio import QueueServiceClient

from shared.settings import Settings


def _credential() -> object:
    from azure.identity.aio import DefaultAzureCredential  # only in Azure: managed identity

    return DefaultAzureCredential()


def table_service(settings: Settings) -> TableServiceClient:
    if settings.storage_connection_string:
        return TableServiceClient.from_connection_string(settings.storage_connection_string)
    if not settings.storage_account_name:
        raise RuntimeError("set STORAGE_CONNECTION_STRING (local) or STORAGE_ACCOUNT_NAME (managed identity)")
    return TableServiceClient(
        endpoint=f"https://{settings.storage_account_name}.table.core.windows.net",
        credential=_credential(),  # type: ignore[arg-type]
    )


def queue_service(settings: Settings) -> QueueServiceClient:
    """Queue client whose messages are base64 text, the Functions queue trigger's default encoding."""
    policies = {"message_encode_policy": TextBase64EncodePolicy(), "message_decode_policy": TextBase64DecodePolicy()}
    if settings.storage_connection_string:
        return QueueServiceClient.from_connection_string(settings.storage_connection_string, **policies)
    if not settings.storage_account_name:
        raise RuntimeError("set STORAGE_CONNECTION_STRING (local) or STORAGE_ACCOUNT_NAME (managed identity)")
    return QueueServiceClient(
        account_url=f"https://{settings.storage_account_name}.queue.core.windows.net",
        credential=_credential(),  # type: ignore[arg-type]
        **policies,
    )
