"""The pure core: event model, stream configs and destination options, results, ids, enrichment,
filters, validation, limits, settings. No I/O; imports nothing of the app above it."""
