"""host.json as the host reads it: `AzureFunctionsJobHost__<path>` app settings over the file
(devhost/host_config.py), for every host.json value the runner keeps."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from devhost import invoke
from devhost.host_config import host_config, lookup
from devhost.queue_driver import QueueOptions


def _host(tmp_path: Path, config: dict[str, object]) -> Path:
    path = tmp_path / "host.json"
    path.write_text(json.dumps(config))
    return path


def test_settings_override_the_file_in_any_case_and_add_what_it_lacks(tmp_path: Path) -> None:
    path = _host(tmp_path, {"functionTimeout": "00:05:00", "extensions": {"queues": {"batchSize": 16}}})
    config = host_config(path, {
        "AzureFunctionsJobHost__functionTimeout": "00:02:00",
        "azurefunctionsjobhost__EXTENSIONS__Queues__maxDequeueCount": "2",  # names in any case
        "AzureFunctionsJobHost__logging__logLevel__default": "Warning",  # a section the file lacks
        "AzureFunctionsJobHost__": "ignored",  # no path
        "OTHER__functionTimeout": "ignored",
    })
    assert config["functionTimeout"] == "00:02:00"
    assert config["extensions"]["queues"] == {"batchSize": 16, "maxDequeueCount": "2"}  # the file's name kept
    assert lookup(config, "LOGGING", "loglevel", "Default") == "Warning"
    assert lookup(config, "extensions", "queues", "visibilityTimeout", default="x") == "x"
    assert lookup(config, "functionTimeout", "deeper", default=None) is None  # a value is not a section
    assert host_config(tmp_path / "missing.json", {}) == {}


def test_queue_options_and_function_timeout_take_the_overrides(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    queues = {"maxDequeueCount": 5, "visibilityTimeout": "00:00:10"}
    path = _host(tmp_path, {"functionTimeout": "00:05:00", "extensions": {"queues": queues}})
    assert QueueOptions.from_host_json(path).max_dequeue_count == 5
    assert invoke.function_timeout(path) == 300
    monkeypatch.setenv("AzureFunctionsJobHost__extensions__queues__maxDequeueCount", "2")
    monkeypatch.setenv("AzureFunctionsJobHost__extensions__queues__visibilityTimeout", "00:00:01")
    monkeypatch.setenv("AzureFunctionsJobHost__extensions__queues__batchSize", "4")
    monkeypatch.setenv("AzureFunctionsJobHost__functionTimeout", "-1")
    opts = QueueOptions.from_host_json(path)
    assert (opts.max_dequeue_count, opts.visibility_timeout_s, opts.batch_size, opts.new_batch_threshold) == (
        2, 1.0, 4, 2)
    assert invoke.function_timeout(path) is None
    monkeypatch.setenv("AzureFunctionsJobHost__extensions__queues__batchSize", "33")  # checked as the file's
    with pytest.raises(ValueError, match="batchSize"):
        QueueOptions.from_host_json(path)
