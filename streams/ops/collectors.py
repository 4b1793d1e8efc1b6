"""The collectors that read the twin at every scrape (``METRICS``, ``streams.ops.metrics``).

``TwinCollector`` reads the twin's state at every scrape, so a stopped VM's series vanish at the
next scrape instead of lingering as a labelled gauge's stale child would. Register it, and
``PipelineMetrics``, on an explicit ``CollectorRegistry``, never on the process-wide default one.

``LiveCollector`` adds what an operator watches besides the counters (``LIVE_METRICS``): the build,
and how old the newest event of each VM and host is by the wall clock. That clock is read here, at
scrape time, never in ``twin/``, which stays a pure function of its events. ``twin_registry``
(``streams.ops.serving``) also registers prometheus_client's process and platform collectors (``process_*``, ``python_info``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from twin import __version__
from twin.counters import balancer_counters, vm_counters
from twin.state import Col, HostState, VmRecord

from .metrics import BYTES_PER_MIB, LIVE_METRICS, MEMORY_STATUSES, METRICS, PREFIX, Convert, MetricDef

__all__ = ["TwinCollector", "LiveCollector", "Clock"]


def _convert(value: float | int | bool, how: Convert) -> float:
    if how == "mib_to_bytes":
        return float(int(value) * BYTES_PER_MIB)
    if how == "percent_to_ratio":
        return float(value) / 100
    return float(value)


Family = GaugeMetricFamily | CounterMetricFamily


def _family(definition: MetricDef) -> Family:
    if definition.kind == "counter":
        return CounterMetricFamily(definition.name, definition.help, labels=definition.labels)
    return GaugeMetricFamily(definition.name, definition.help, labels=definition.labels)


_TWIN_METRICS = tuple(d for d in METRICS if d.scope not in ("pipeline", "live"))
_PER_VM = tuple(d for d in _TWIN_METRICS if d.scope in ("vm", "vm_setting"))
_PER_HOST = tuple(d for d in _TWIN_METRICS if d.scope in ("balancer", "host"))


class TwinCollector(Collector):
    """Exposes the twin's counters for every host ``hosts()`` returns, read afresh at each scrape.

    ``hosts`` must return states that nothing mutates during the scrape (the scrape runs in the
    HTTP server's thread): a finished replay's states, or snapshots (``HostState.copy()``).
    """

    def __init__(self, hosts: Callable[[], Iterable[HostState]]) -> None:
        self._hosts = hosts

    def describe(self) -> Iterator[Metric]:
        """The families without samples, so registering never calls ``hosts``."""
        return (_family(d) for d in _TWIN_METRICS)

    def collect(self) -> Iterator[Metric]:
        families = {d.name: _family(d) for d in _TWIN_METRICS}
        for state in self._hosts():
            _add_host(state, families)
        return iter(families.values())


def _add_host(state: HostState, families: dict[str, Family]) -> None:
    """Add one host's samples: per VM (counters, status, settings), then balancer and host."""
    host = state.name
    settings: dict[str, VmRecord] = {r.name: r for r in state.records()}
    for counters in vm_counters(state):
        sources: dict[str, object] = {"vm": counters, "vm_setting": settings[counters.vm]}
        for d in _PER_VM:
            if d.convert == "state":
                current = counters.memory_status or "None"
                for status in MEMORY_STATUSES:
                    families[d.name].add_metric([host, counters.vm, status], float(status == current))
                continue
            value = getattr(sources[d.scope], str(d.attribute))
            families[d.name].add_metric([host, counters.vm], _convert(value, d.convert))
    sources = {"balancer": balancer_counters(state), "host": state}
    for d in _PER_HOST:
        value = getattr(sources[d.scope], str(d.attribute))
        families[d.name].add_metric([host], _convert(value, d.convert))


Clock = Callable[[], float]
"""Seconds since the Unix epoch, like ``time.time``."""


class LiveCollector(Collector):
    """``LIVE_METRICS`` for every host ``hosts()`` returns: the build always, and, when there is a
    ``clock``, the age of each VM's and host's newest event and the worker's event-time lag, all
    measured against ``clock()`` once per scrape. Same thread rules as ``TwinCollector``."""

    def __init__(self, hosts: Callable[[], Iterable[HostState]], clock: Clock | None = time.time) -> None:
        self._hosts = hosts
        self._clock = clock

    def describe(self) -> Iterator[Metric]:
        return (_family(d) for d in LIVE_METRICS)

    def collect(self) -> Iterator[Metric]:
        families = {d.name: _family(d) for d in LIVE_METRICS}
        families[PREFIX + "build_info"].add_metric([__version__], 1.0)
        if self._clock is None:
            yield families[PREFIX + "build_info"]
            return
        now_ms = self._clock() * 1000
        vm_age = families[PREFIX + "vm_last_report_age_seconds"]
        host_age = families[PREFIX + "host_last_report_age_seconds"]
        newest: int | None = None
        for state in self._hosts():
            for name, last_ms in zip(state.vms.names, state.vms.column(Col.LAST_AT).tolist()):
                vm_age.add_metric([state.name, name], (now_ms - last_ms) / 1000)
            host_age.add_metric([state.name], (now_ms - state.last_at_ms) / 1000)
            newest = state.last_at_ms if newest is None else max(newest, state.last_at_ms)
        if newest is not None:
            families[PREFIX + "event_time_lag_seconds"].add_metric([], (now_ms - newest) / 1000)
        yield from families.values()
