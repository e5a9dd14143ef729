"""Metrics, exported with the gateway's as `wasmgate_plugin_<name>{plugin="…", …}`. Each call
returns False when the host refuses it (a bad name, too many series) and records nothing."""

from typing import Optional

from wit_world.imports import metrics as _metrics


def _labels(labels: Optional[dict]) -> list:
    return list((labels or {}).items())


def counter(name: str, value: int = 1, labels: Optional[dict] = None) -> bool:
    return _metrics.counter_add(name, _labels(labels), value)


def gauge(name: str, value: float, labels: Optional[dict] = None) -> bool:
    return _metrics.gauge_set(name, _labels(labels), float(value))


def histogram(name: str, value: float, labels: Optional[dict] = None) -> bool:
    return _metrics.histogram_record(name, _labels(labels), float(value))
