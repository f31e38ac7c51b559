"""The one dead-letter store (delivery/deadletters.py) through the HTTP functions."""
from __future__ import annotations

import uuid

import pytest

from shared.delivery.deadletters import is_record_id
from tests.functions_client import invoke

pytestmark = pytest.mark.usefixtures("app_services")


# The last: 300 characters, 1,200 bytes of UTF-16 (a key holds 1 KiB).
@pytest.mark.parametrize("rid", ["ÿP/T}", "a#b", "what?", "C\n", "\x16", "\U0001D11E" * 300])
async def test_an_id_no_table_key_can_hold_is_not_found_never_an_outage(rid: str) -> None:
    """Found by the fuzz test: such an id sent to the table made Azurite answer 500 (read as a 503)."""
    assert not is_record_id(rid)
    tenant = f"dl-{uuid.uuid4().hex[:8]}"
    status, _, body = await invoke("replay_deadletters", "POST", f"/deadletters/{tenant}/replay", {"ids": [rid]},
                                   route={"tenantId": tenant})
    assert status == 200 and body["results"] == [{"id": rid, "result": "not found"}]
