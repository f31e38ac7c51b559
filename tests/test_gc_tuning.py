"""The app's process GC settings are applied at import of function_app (bench/publish_path.py measures them)."""
from __future__ import annotations

import gc

import function_app  # noqa: F401 - importing the app applies the settings
from shared.app import gc_tuning


def test_function_app_import_raises_the_young_generation_threshold() -> None:
    assert gc.get_threshold() == (gc_tuning.YOUNG_THRESHOLD, *gc_tuning.OLDER_THRESHOLDS)
    assert gc.get_freeze_count() > 0
