"""The stores' clients and the generic mechanisms over them (no knowledge of events)."""
