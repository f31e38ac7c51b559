"""The pipeline, idempotency, stream configs, the retry queue, dead letters and replay."""
