"""Framework-free HTTP layer: request/response types, problem details, the one request adapter."""
