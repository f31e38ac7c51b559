"""Telemetry, per-tenant metrics, dependency health, the monitor pass, anomalies, alerts and the
service's own system events."""
