"""Change capture from Cosmos DB: mapping rules, entity state, feed start, the batch processor, the overdue check.

docs/change-capture.md describes the document conventions the rules expect.
"""
from shared.changefeed.rules import ENTITY_TYPE, RULES, Kind, Unmappable, map_change, snapshot, validate

__all__ = ["ENTITY_TYPE", "RULES", "Kind", "Unmappable", "map_change", "snapshot", "validate"]
