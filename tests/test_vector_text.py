"""The event -> text template (docs/vector-search.md)."""
from __future__ import annotations

from shared.core.events import Event
from shared.vector.text import MAX_TEXT_CHARS, event_type_words, render_event_text
from tests.vector_corpus import CORPUS


def _event(**data: object) -> dict:
    return {**CORPUS[0], "data": data}


def test_event_type_in_words() -> None:
    assert event_type_words("RISK_STATUS_CHANGED") == "Risk status changed"
    assert event_type_words("POLICY_VIOLATION") == "Policy violation"


def test_template_lines_in_order() -> None:
    text = render_event_text({
        **CORPUS[0], "eventType": "RISK_STATUS_CHANGED", "action": "STATUS_CHANGE",
        "data": {"title": "Ransomware on branch network", "description": "EDR rolled out",
                 "previousStatus": "open", "status": "mitigated", "severity": "high",
                 "vendor": "Acme EDR", "riskId": "R-9", "createdAt": "2026-01-01T00:00:00Z"},
    })
    assert text.splitlines() == [
        "Mitigated. Risk status changed: Ransomware on branch network.",
        "Status: open -> mitigated.",
        "Entity: risk R-101.",
        "Action: status change.",
        "Description: EDR rolled out",
        "Details: severity: high; vendor: Acme EDR.",
    ]


def test_changes_in_both_shapes() -> None:
    as_map = render_event_text(_event(name="Access review", changes={"frequency": {"old": "quarterly", "new": "monthly"},
                                                                     "owner": "IT"}))
    as_list = render_event_text(_event(changes=[{"field": "frequency", "from": "quarterly", "to": "monthly"}]))
    assert "Changes: frequency: quarterly -> monthly; owner: IT." in as_map
    assert "Changes: frequency: quarterly -> monthly." in as_list


def test_other_fields_skip_ids_and_times() -> None:
    text = render_event_text(_event(title="T", region="EU west", controlId="C-1", updatedAt="x", _etag="e",
                                    nested={"a": 1}))
    assert "Other: region: EU west." in text
    for noise in ("C-1", "updated", "etag", "nested"):
        assert noise not in text


def test_bounded_length_and_one_line_fields() -> None:
    text = render_event_text(_event(title="T\n\nwith breaks", description="word " * 10_000,
                                    **{f"field{i}": "v" * 500 for i in range(50)}))
    assert len(text) <= MAX_TEXT_CHARS
    assert text.startswith("Risk created: T with breaks.")
    description = next(line for line in text.splitlines() if line.startswith("Description:"))
    assert len(description) <= len("Description: ") + 400


def test_model_and_dict_render_the_same() -> None:
    event = Event.model_validate(CORPUS[1])
    assert render_event_text(event) == render_event_text(CORPUS[1])


def test_empty_data_still_says_what_happened() -> None:
    text = render_event_text({"eventType": "SYSTEM_ERROR", "data": {}})
    assert text == "Failed. System error."
    assert render_event_text({"eventType": "RISK_CREATED", "data": {}}) == "Risk created."
