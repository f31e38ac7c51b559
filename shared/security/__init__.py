"""Caller identity, tenant grants, rate limit and audit trail (docs/security.md).

Framework-free: the HTTP adapter calls these in one place; nothing here imports azure.functions.
"""
