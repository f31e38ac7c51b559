"""The change-feed components of an instance, built once per `Services` (one per event loop)."""
from __future__ import annotations

import weakref

from shared.app.services import Services
from shared.changefeed.leases import FeedStarts
from shared.changefeed.parking import ParkingStore
from shared.changefeed.processor import ChangeFeedProcessor
from shared.changefeed.rules import Kind
from shared.changefeed.state import Dedup, EntityState
from shared.core.settings import Settings

_processors: weakref.WeakKeyDictionary[Services, ChangeFeedProcessor] = weakref.WeakKeyDictionary()


def processor_for(services: Services) -> ChangeFeedProcessor:
    proc = _processors.get(services)
    if proc is None:
        s = services.settings
        starts = FeedStarts(services.cosmos, s.cosmos_database, s.cosmos_lease_container,
                            {kind: container_of(s, kind) for kind in Kind}) if s.cosmos_endpoint else None
        proc = _processors[services] = ChangeFeedProcessor(
            state=EntityState(services.redis, s.changefeed_state_ttl_days * 86_400),
            dedup=Dedup(services.redis, s.changefeed_dedup_ttl_hours * 3_600),
            publisher=services.pipeline,
            parking=ParkingStore(services.tables, s.changefeed_parked_table),
            metrics=services.metrics,
            feed_started=starts.started if starts else None,
        )
    return proc


def container_of(settings: Settings, kind: Kind) -> str:
    return {
        Kind.RISKS: settings.cosmos_risks_container,
        Kind.CONTROLS: settings.cosmos_controls_container,
        Kind.ASSESSMENTS: settings.cosmos_assessments_container,
        Kind.COMPLIANCE: settings.cosmos_compliance_container,
        Kind.POLICIES: settings.cosmos_policies_container,
    }[kind]
