"""Hyper-V performance-counter logs in PDH-CSV 4.0 (typeperf, relog, logman -f csv, Export-Counter).

The first row names the format and the recording machine's time zone, then one counter path per
column; every later row is one sample, local time first::

    "(PDH-CSV 4.0) (Coordinated Universal Time)(0)","\\\\HV01\\Hyper-V Dynamic Memory VM(web)\\Physical Memory",...
    "01/05/2026 10:00:00.000","2048",...

Read (English counter names, DOMAIN.md §2.1, §2.2):

- ``Hyper-V Dynamic Memory VM(<vm>)``: Physical Memory (MB) and Current Pressure (%) are needed;
  demand = Current Pressure × Physical Memory / 100. Guest Available Memory (Server 2022+) gives
  the guest's available memory, else Physical Memory − demand. With Guest Visible Physical Memory,
  the ballooned pages (visible − physical) are added to the reported committed memory, as the
  guest itself does. The other counters of the set are known and not needed.
- ``Hyper-V Dynamic Memory Balancer(System Balancer)``: Available Memory sizes the host when no
  ``host_mib`` is given: VMs may use Available Memory + Σ Physical Memory (the reserve is already
  excluded, §2.2), and the twin's host gets ``reserve_mib`` on top.

A blank cell (PDH writes ``" "``) is missing, never zero. A VM whose Physical Memory cell is blank
(or 0) is not running at that sample: ``VmStopped``, and ``VmStarted`` again if it comes back.
Times: local time + the header's bias in minutes = UTC (Windows' TIME_ZONE_INFORMATION rule); the
header carries the standard-time bias, so a log recorded in summer time needs ``utc_offset_min``.
"""

from __future__ import annotations

import csv
import heapq
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Iterator

from ..events import GuestCapabilities, InputEvent
from .errors import Problems, SourceProblem, parse_number, read_text
from .observed import (
    DEFAULT_RESERVE_MIB,
    HYPERV_DEFAULT_MAXIMUM_MIB,
    HYPERV_DEFAULT_MINIMUM_MIB,
    ObservedHost,
    Snapshot,
    VmSample,
)

__all__ = ["perfmon_events", "read_perfmon", "CounterPath", "parse_counter_path", "VM_SET",
           "BALANCER_SET", "VM_COUNTERS", "BALANCER_COUNTERS"]

VM_SET = "Hyper-V Dynamic Memory VM"
BALANCER_SET = "Hyper-V Dynamic Memory Balancer"
VM_COUNTERS = frozenset({
    "Physical Memory", "Current Pressure", "Guest Visible Physical Memory", "Guest Available Memory",
    "Average Pressure", "Minimum Pressure", "Maximum Pressure", "Added Memory", "Removed Memory",
    "Memory Add Operations", "Memory Remove Operations", "Smart Paging Working Set Size",
})
BALANCER_COUNTERS = frozenset({
    "Available Memory", "Available Memory For Balancing", "Average Pressure", "System Current Pressure",
})
SYSTEM_BALANCER = "System Balancer"
WINDOWS_CAPABILITIES = GuestCapabilities(hot_add_alignment_mib=2)
"""An enlightened Windows guest: balloon and hot-add, in 2 MB units (as ``twin.scenario``)."""

_HEADER = re.compile(r"^\(PDH-CSV 4\.0\)\s*\((?P<zone>[^)]*)\)\s*\((?P<bias>-?\d+)\)\s*$")
_PATH = re.compile(r"^(?:\\\\(?P<machine>[^\\]+))?\\(?P<object>[^\\(]+?)(?:\((?P<instance>.*)\))?"
                   r"\\(?P<counter>[^\\]+)$")
_EPOCH = datetime(1970, 1, 1)
_TYPEPERF_MESSAGES = ("Exiting, please wait...", "The command completed successfully.")


@dataclass(frozen=True)
class CounterPath:
    """``\\\\machine\\object(instance)\\counter``; machine and instance may be empty."""

    machine: str
    object: str
    instance: str
    counter: str


def parse_counter_path(path: str) -> CounterPath | None:
    """Split a PDH counter path, or None if ``path`` is not one."""
    match = _PATH.match(path.strip())
    if match is None:
        return None
    return CounterPath(match["machine"] or "", match["object"].strip(), match["instance"] or "",
                       match["counter"].strip())


def read_perfmon(path: str | Path, *, problems: list[SourceProblem] | None = None, host: str = "hyperv-host",
                 host_mib: int | None = None, reserve_mib: int = DEFAULT_RESERVE_MIB,
                 minimum_mib: int = HYPERV_DEFAULT_MINIMUM_MIB, maximum_mib: int | None = None,
                 utc_offset_min: int | None = None) -> Iterator[InputEvent]:
    """``perfmon_events`` of a file (UTF-8 or UTF-16, .gz allowed)."""
    return perfmon_events(read_text(path), file=str(path), problems=problems, host=host, host_mib=host_mib,
                          reserve_mib=reserve_mib, minimum_mib=minimum_mib, maximum_mib=maximum_mib,
                          utc_offset_min=utc_offset_min)


def perfmon_events(text: str, *, file: str = "<perfmon>", problems: list[SourceProblem] | None = None,
                   host: str = "hyperv-host", host_mib: int | None = None,
                   reserve_mib: int = DEFAULT_RESERVE_MIB, minimum_mib: int = HYPERV_DEFAULT_MINIMUM_MIB,
                   maximum_mib: int | None = None, utc_offset_min: int | None = None) -> Iterator[InputEvent]:
    """The twin's inputs from a PDH-CSV 4.0 log, every host of it merged in time order.

    ``host`` names the host when the counter paths carry no machine name. ``host_mib`` sets every
    host's total memory; ``minimum_mib`` and ``maximum_mib`` every VM's (see ``observed``); by
    default Maximum RAM is Hyper-V's default, 1 TB, or the largest Physical Memory seen if larger.
    """
    report = Problems(file, problems)
    snapshots = _snapshots(text, report, host, utc_offset_min)
    hosts = []
    for name, shots in snapshots.items():
        seen = max((s.memory_mib for shot in shots for s in shot.samples), default=0)
        hosts.append(ObservedHost(name, report, total_mib=host_mib, reserve_mib=reserve_mib,
                                  minimum_mib=minimum_mib, maximum_mib=maximum_mib,
                                  default_maximum_mib=max(HYPERV_DEFAULT_MAXIMUM_MIB, seen)).events(shots))
    return heapq.merge(*hosts, key=lambda event: event.at_ms)


@dataclass
class _VmColumns:
    physical: int | None = None
    pressure: int | None = None
    visible: int | None = None
    available: int | None = None


def _snapshots(text: str, report: Problems, default_host: str, utc_offset_min: int | None
               ) -> dict[str, list[Snapshot]]:
    reader = csv.reader(text.splitlines())
    header: list[str] = []
    for header in reader:
        if any(cell.strip() for cell in header):
            break
    match = _HEADER.match(header[0]) if header else None
    if match is None:
        report.add(reader.line_num or 1, "not a PDH-CSV 4.0 log: the first cell must read "
                                         "'(PDH-CSV 4.0) (<time zone>)(<bias>)'")
        return {}
    bias_min = int(match["bias"]) if utc_offset_min is None else -utc_offset_min
    vms, balancers = _columns(header[1:], report, reader.line_num, default_host)
    snapshots: dict[str, list[Snapshot]] = {name: [] for name in [*(h for h, _ in vms), *balancers]}
    last_ms = -1
    for row in reader:
        line = reader.line_num
        if not any(cell.strip() for cell in row) or ",".join(row).strip() in _TYPEPERF_MESSAGES:
            continue
        if len(row) != len(header):
            report.add(line, f"{len(row)} cells where the header has {len(header)}: row skipped")
            continue
        at_ms = _timestamp(row[0], bias_min)
        if at_ms is None:
            report.add(line, f"bad timestamp {row[0]!r} (want MM/DD/YYYY hh:mm:ss.fff): row skipped")
            continue
        if at_ms < last_ms:
            report.add(line, f"time goes backwards ({row[0]!r}): row skipped")
            continue
        last_ms = at_ms
        values = _values(row, header, report, line)
        samples: dict[str, list[VmSample]] = {name: [] for name in snapshots}
        for (name, vm), cols in vms.items():
            sample = _vm_sample(vm, cols, values)
            if sample is not None:
                samples[name].append(sample)
        for name, shots in snapshots.items():
            available = values.get(balancers[name]) if name in balancers else None
            capacity = None if available is None else round(available) + sum(s.memory_mib for s in samples[name])
            shots.append(Snapshot(at_ms, line, samples[name], capacity))
    return snapshots


def _columns(paths: list[str], report: Problems, line: int, default_host: str
             ) -> tuple[dict[tuple[str, str], _VmColumns], dict[str, int]]:
    """Which column holds what: per (host, VM) its counters, per host its balancer's Available Memory."""
    vms: dict[tuple[str, str], _VmColumns] = {}
    balancers: dict[str, tuple[str, int]] = {}
    for index, text in enumerate(paths, start=1):
        path = parse_counter_path(text)
        if path is None:
            report.add(line, f"column {index + 1}: not a counter path: \"{text}\"")
            continue
        name = path.machine or default_host
        if path.object == VM_SET and path.counter in VM_COUNTERS and path.instance:
            cols = vms.setdefault((name, path.instance), _VmColumns())
            attribute = {"Physical Memory": "physical", "Current Pressure": "pressure",
                         "Guest Visible Physical Memory": "visible",
                         "Guest Available Memory": "available"}.get(path.counter)
            if attribute:
                setattr(cols, attribute, index)
        elif path.object == BALANCER_SET and path.counter in BALANCER_COUNTERS:
            if path.counter == "Available Memory" and (
                    name not in balancers or path.instance == SYSTEM_BALANCER):
                balancers[name] = (path.instance, index)
        else:
            report.add(line, f"column {index + 1}: unknown counter \"{text}\": ignored")
    for (name, vm), cols in list(vms.items()):
        missing = [c for c, i in (("Physical Memory", cols.physical), ("Current Pressure", cols.pressure))
                   if i is None]
        if missing:
            report.add(line, f"missing column {VM_SET}({vm})\\{' and '.join(missing)} on {name!r}: "
                             f"VM {vm!r} ignored")
            del vms[(name, vm)]
    return vms, {name: index for name, (_, index) in balancers.items()}


def _timestamp(text: str, bias_min: int) -> int | None:
    for layout in ("%m/%d/%Y %H:%M:%S.%f", "%m/%d/%Y %H:%M:%S"):
        try:
            local = datetime.strptime(text.strip(), layout)
        except ValueError:
            continue
        return (local - _EPOCH + timedelta(minutes=bias_min)) // timedelta(milliseconds=1)
    return None


def _values(row: list[str], header: list[str], report: Problems, line: int) -> dict[int, float]:
    """Column → value for the cells that hold a number; blank cells are missing, bad ones reported."""
    values: dict[int, float] = {}
    for index, cell in enumerate(row[1:], start=1):
        if not cell.strip():
            continue
        value = parse_number(cell)
        if value is None:
            report.add(line, f"bad number {cell!r} in column {index + 1} ({header[index]}): cell ignored")
        else:
            values[index] = value
    return values


def _vm_sample(vm: str, cols: _VmColumns, values: dict[int, float]) -> VmSample | None:
    physical = values.get(cols.physical) if cols.physical else None
    if physical is None or round(physical) <= 0:
        return None
    memory = round(physical)
    pressure = values.get(cols.pressure) if cols.pressure else None
    if pressure is None:
        return VmSample(vm, memory, capabilities=WINDOWS_CAPABILITIES)
    demand = round(pressure * physical / 100)
    visible = values.get(cols.visible) if cols.visible else None
    ballooned = max(0, round(visible) - memory) if visible is not None else 0
    available = values.get(cols.available) if cols.available else None
    return VmSample(vm, memory, committed_mib=demand + ballooned,
                    available_mib=round(available) if available is not None else max(0, memory - demand),
                    capabilities=WINDOWS_CAPABILITIES)
