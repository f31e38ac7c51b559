"""HTTP handlers: ApiRequest -> ApiResponse, one per route (see routes.py)."""
