"""An authenticated caller and the tenants it is granted (security/tenants.py says how grants are read)."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

ALL_TENANTS: Literal["*"] = "*"
Grants = frozenset[str] | Literal["*"]
AuthMethod = Literal["jwt", "dev-jwt", "appservice", "local-open"]


class Principal(BaseModel):
    """An authenticated caller. `tenants` is the set granted, or "*" for platform admins."""

    model_config = ConfigDict(frozen=True)

    subject: str
    name: str = ""
    tenants: Grants = frozenset()
    roles: frozenset[str] = frozenset()
    auth_method: AuthMethod

    @property
    def is_admin(self) -> bool:
        return self.tenants == ALL_TENANTS

    def grants(self, tenant_id: str) -> bool:
        return self.tenants == ALL_TENANTS or tenant_id in self.tenants
