"""Sources: real and synthetic memory data in, the twin's input events out.

Pure parsing: text or a file in, ``InputEvent`` objects out; no clock (times come from the data or
from the caller), no network. Each source skips what it cannot read and reports it as a
``SourceProblem(file, line, reason)`` in the caller's ``problems`` list (raised as ``SourceError``
when no list is given).

- ``perfmon``: a Hyper-V PDH-CSV 4.0 counter log (typeperf, relog, logman) — ``twin.sources.perfmon``
- ``meminfo``: /proc/meminfo (+ hv-balloon debugfs) snapshots of a Linux guest — ``twin.sources.meminfo``
- ``virsh``: ``virsh dommemstat`` / ``domstats --balloon`` output — ``twin.sources.virsh``
- ``bitbrains``: the Bitbrains GWA-T-12 ``memory.csv.gz`` — ``twin.sources.bitbrains``
- ``synthetic``: a fleet spec such as ``"3x12 mix=steady:2,bursty:1 seed=7"`` — ``twin.sources.synthetic``

``bitbrains`` and ``synthetic`` build a ``twin.scenario.Scenario``; ``ingest`` gives its guests'
reports open loop (``synthetic.reports``); ``twin.scenario.simulate`` runs it closed loop.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Callable, Iterator

from ..events import InputEvent
from ..scenario import Scenario
from .bitbrains import bitbrains_scenario, measure
from .errors import SourceError, SourceProblem
from .meminfo import read_meminfo
from .perfmon import read_perfmon
from .synthetic import fleet, parse_fleet, reports
from .virsh import read_virsh

__all__ = ["SOURCES", "ingest", "options", "scenario_of", "SourceProblem", "SourceError", "bitbrains_scenario",
           "fleet", "parse_fleet", "reports", "measure"]

_READERS: dict[str, Callable[..., Iterator[InputEvent]]] = {
    "perfmon": read_perfmon,
    "meminfo": read_meminfo,
    "virsh": read_virsh,
}
_SCENARIOS: dict[str, Callable[..., Scenario]] = {
    "bitbrains": bitbrains_scenario,
    "synthetic": parse_fleet,
}
SOURCES: tuple[str, ...] = (*_READERS, *_SCENARIOS)


def options(source: str) -> tuple[str, ...]:
    """The keyword options ``source`` takes (beyond its path or spec and ``problems``)."""
    function = fleet if source == "synthetic" else _function(source)
    return tuple(name for name in inspect.signature(function).parameters if name not in ("path", "problems"))


def _function(source: str) -> Callable[..., Any]:
    try:
        return {**_READERS, **_SCENARIOS}[source]
    except KeyError:
        raise ValueError(f"unknown source {source!r} (known: {', '.join(SOURCES)})") from None


def _check(source: str, given: dict[str, Any]) -> None:
    unknown = sorted(set(given) - set(options(source)))
    if unknown:
        raise ValueError(f"source {source!r} takes no option {', '.join(unknown)} "
                         f"(it takes: {', '.join(options(source))})")


def scenario_of(source: str, path_or_args: str | Path, *, problems: list[SourceProblem] | None = None,
                **opts: Any) -> Scenario:
    """The scenario a scenario source (bitbrains, synthetic) builds, to ``simulate`` or save."""
    if source not in _SCENARIOS:
        raise ValueError(f"source {source!r} reads observations, not a scenario (scenario sources: "
                         f"{', '.join(_SCENARIOS)})")
    _check(source, opts)
    if source == "synthetic":
        return parse_fleet(str(path_or_args), **opts)
    return bitbrains_scenario(path_or_args, problems=problems, **opts)


def ingest(source: str, path_or_args: str | Path, *, problems: list[SourceProblem] | None = None,
           **opts: Any) -> Iterator[InputEvent]:
    """The input events of ``source`` read from ``path_or_args``, in log order.

    ``opts`` are the source's own keyword options (``options(source)`` lists them), e.g.
    ``ingest("perfmon", "dm.csv", host_mib=262144)``, ``ingest("bitbrains", path, vms=50,
    overcommit=2.0)``, ``ingest("synthetic", "3x12 seed=7")``.
    """
    if source in _SCENARIOS:
        return reports(scenario_of(source, path_or_args, problems=problems, **opts))
    _check(source, opts)
    events: Iterator[InputEvent] = _READERS[source](path_or_args, problems=problems, **opts)
    return events
