"""VectorSearchService wiring: settings -> backends, the queue work item, the no-mixing guard."""
from __future__ import annotations

from pathlib import Path

import pytest

from shared.core.settings import Settings
from shared.vector.base import IndexSpec, VectorConfigError
from shared.vector.indexer import IndexItem, VectorSearchService, build_embedder, build_service
from shared.vector.messages import decode_message
from shared.vector.sqlite_index import SqliteVecIndex
from shared.vector.text import render_event_text
from tests.vector_corpus import BANK, CORPUS
from tests.vector_support import TOKENIZER, local_embedder


def test_index_item_carries_filter_fields_rendered_text_and_outcome() -> None:
    item = IndexItem.from_event(CORPUS[1])
    assert (item.eventId, item.tenantId, item.eventType, item.entityType, item.entityId) == (
        "evt-a2", BANK, "CONTROL_FAILED", "control", "C-210")
    assert item.text == render_event_text(CORPUS[1])
    assert item.outcome == "failed" and IndexItem.from_event(CORPUS[2]).outcome == "passed"


async def test_a_message_enqueued_before_outcomes_existed_gets_one_from_its_text(tmp_path: Path) -> None:
    old = ('{"v":1,"items":[{"eventId":"e1","tenantId":"t-a","eventType":"CONTROL_TESTED","source":"ARCHER_GRC",'
           '"timestamp":"2026-10-01T00:00:00Z","text":"Control tested: Restore test.\\nStatus: passed."}]}')
    (item,) = decode_message(old)
    assert item.outcome is None and item.effective_outcome() == "passed"
    emb = local_embedder()
    svc = VectorSearchService(emb, SqliteVecIndex(str(tmp_path / "v.db"), IndexSpec(emb.model_id, emb.dimensions)))
    assert await svc.index_items([item]) == 1
    (hit,) = await svc.search("t-a", "restore test that passed", k=1)
    assert (hit.event_id, hit.outcome) == ("e1", "passed")
    await svc.close()


async def test_local_settings_build_minilm_on_sqlite(tmp_path: Path) -> None:
    settings = Settings.from_env({"VECTOR_SQLITE_PATH": str(tmp_path / "v.db"),
                                  "LOCAL_TOKENIZER_PATH": str(TOKENIZER)})
    svc = build_service(settings)
    assert isinstance(svc.index, SqliteVecIndex)
    assert svc.index.spec == IndexSpec("all-MiniLM-L6-v2-onnx-int8", 384)
    assert await svc.index_events(CORPUS[:3]) == 3
    hits = await svc.search(BANK, "database backup restore test", k=1)
    assert hits[0].event_id == "evt-a3"
    await svc.close()


def test_local_model_refuses_other_dimensions() -> None:
    with pytest.raises(VectorConfigError, match="384"):  # a setting: search answers 503
        build_embedder(Settings.from_env({"EMBEDDING_DIMENSIONS": "1536"}))


def test_service_refuses_an_index_built_for_another_embedder(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not match"):
        VectorSearchService(local_embedder(), SqliteVecIndex(str(tmp_path / "v.db"), IndexSpec("other", 384)))


async def test_search_requires_a_tenant(tmp_path: Path) -> None:
    emb = local_embedder()
    svc = VectorSearchService(emb, SqliteVecIndex(str(tmp_path / "v.db"), IndexSpec(emb.model_id, emb.dimensions)))
    with pytest.raises(ValueError, match="tenant"):
        await svc.search("", "anything")
    await svc.index.close()
