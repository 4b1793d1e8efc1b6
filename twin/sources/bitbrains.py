"""The Bitbrains GWA-T-12 trace (real VMs' memory, 5-minute samples) as a scenario, and what Dynamic
Memory makes of it.

``memory.csv.gz`` has columns ``vm,timestamp_s,memory_provisioned_kb,memory_usage_kb``
(``../shared/data/bitbrains-rnd-2013-07/README.md``). Read as Hyper-V (DOMAIN.md §4):

- usage → the guest's demand: a ``trace`` workload, linear between samples. A usage of 0 is a gap in
  Bitbrains' monitoring, not an idle VM: it is left out and the gap interpolated (so is a
  provisioned size of 0); repeated timestamps keep the last sample.
- provisioned → Maximum RAM (the largest in the window, whole MiB).
- Startup RAM = the first demand plus the buffer, rounded up to 128 MiB, within [Minimum, Maximum];
  Minimum = ``minimum_mib`` (Hyper-V's default 512 MiB), never above Maximum.
- Time: the window starts at the selected VMs' first sample (or ``start_s``) and lasts
  ``duration_s`` trace seconds; ``time_scale`` trace seconds pass in each second of the run (1 =
  real time, 300 = one sample a second). A VM whose trace starts later boots later. Compression
  speeds up the guests, not the balancer: Hyper-V's one-minute wait before reclaiming idle memory
  spans ``time_scale`` minutes of trace.
- Packing, first fit by decreasing Maximum RAM: a host takes a VM while Σ Maximum ≤ ``overcommit``
  × (``host_mib`` − ``reserve_mib``) and Σ Startup ≤ host_mib − reserve_mib; a VM too large for that
  gets a host of its own.

``measure(events)`` folds a log and compares Dynamic Memory with static memory at Maximum: the
time-weighted Σ assigned over Σ Maximum, and how often a VM's Memory Status was Warning.
"""

from __future__ import annotations

import csv
import math

import numpy as np
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Literal

from ..engine import Twin
from ..events import BalancerTicked, Entry, GuestStatusReported, flatten
from ..scenario import GuestSpec, HostSpec, Scenario, VmSpec
from ..state import NO_DATA, Col, MemoryStatus, memory_status
from ..workload import Trace
from .errors import Problems, SourceProblem, read_text

__all__ = ["BitbrainsVm", "Grid", "read_grid", "read_bitbrains", "bitbrains_scenario", "pack", "Measurement", "measure",
           "DEFAULT_PATH"]

DEFAULT_PATH = Path(__file__).resolve().parents[3] / "shared" / "data" / "bitbrains-rnd-2013-07" / "memory.csv.gz"
"""Where the workspace keeps the trace (``/work/shared/...`` next to the repository)."""
COLUMNS = ["vm", "timestamp_s", "memory_provisioned_kb", "memory_usage_kb"]


@dataclass
class BitbrainsVm:
    """One VM of the trace: its samples (epoch s, KiB), gaps already left out."""

    vm: int
    first_s: int
    provisioned: list[tuple[int, int]] = field(default_factory=list)
    usage: list[tuple[int, int]] = field(default_factory=list)


def read_bitbrains(path: str | Path = DEFAULT_PATH, *, vms: int | None = None,
                   problems: list[SourceProblem] | None = None) -> list[BitbrainsVm]:
    """The first ``vms`` VMs of the file (by number; all when None), in VM-number order."""
    report = Problems(str(path), problems)
    rows = csv.reader(read_text(path).splitlines())
    header = next(rows, [])
    if header != COLUMNS:
        report.add(1, f"columns {header!r}, expected {COLUMNS!r}: nothing read")
        return []
    found: dict[int, BitbrainsVm] = {}
    last: dict[int, int] = {}
    for line, row in enumerate(rows, start=2):
        if len(row) != 4:
            report.add(line, f"{len(row)} cells, expected 4: row skipped")
            continue
        try:
            vm, at, provisioned, usage = (int(cell) for cell in row)
        except ValueError:
            report.add(line, f"bad number in {row!r}: row skipped")
            continue
        if vms is not None and vm > vms:
            continue
        if min(vm, at, provisioned, usage) < 0:
            report.add(line, f"negative value in {row!r}: row skipped")
            continue
        if at < last.get(vm, at):
            report.add(line, f"time goes backwards for VM {vm} ({at} < {last[vm]}): row skipped")
            continue
        last[vm] = at
        record = found.setdefault(vm, BitbrainsVm(vm, at))
        for samples, value in ((record.provisioned, provisioned), (record.usage, usage)):
            if value == 0:
                continue  # a gap in the monitoring, not an idle VM
            if samples and samples[-1][0] == at:
                samples[-1] = (at, value)
            else:
                samples.append((at, value))
    return [found[vm] for vm in sorted(found)]


def pack(vms: list[VmSpec], host_mib: int, reserve_mib: int, overcommit: float,
         policy: Literal["hyperv", "squeezed", "mom", "esx"] = "hyperv", prefix: str = "bb",
         packing: Literal["first-fit", "round-robin"] = "first-fit", hosts_count: int | None = None) -> list[HostSpec]:
    """First fit by decreasing Maximum RAM (see the module's docstring), onto at most
    ``hosts_count`` hosts if given (a VM that fits none goes to the emptiest); or round-robin:
    VM number v on host v % ``hosts_count``, whatever fits (the reference study's packing)."""
    capacity = host_mib - reserve_mib
    budget = overcommit * capacity
    hosts: list[list[VmSpec]] = []
    if packing == "round-robin":
        if not hosts_count:
            raise ValueError("round-robin packing needs a host count (hosts)")
        hosts = [[] for _ in range(hosts_count)]
        for vm in vms:
            hosts[int(vm.name.rsplit("-", 1)[-1]) % hosts_count].append(vm)
        return [HostSpec(name=f"{prefix}-{n:02d}", total_mib=host_mib, reserve_mib=reserve_mib, policy=policy,
                         vms=sorted(placed, key=lambda v: v.name)) for n, placed in enumerate(hosts)]
    if packing != "first-fit":
        raise ValueError(f"packing {packing!r}: expected first-fit or round-robin")
    for vm in sorted(vms, key=lambda v: (-v.maximum_mib, v.name)):
        if hosts_count is not None and len(hosts) >= hosts_count:
            fits = [p for p in hosts if sum(v.maximum_mib for v in p) + vm.maximum_mib <= budget
                    and sum(v.startup_mib for v in p) + vm.startup_mib <= capacity]
            (fits[0] if fits else min(hosts, key=lambda p: sum(v.maximum_mib for v in p))).append(vm)
            continue
        for placed in hosts:
            if (sum(v.maximum_mib for v in placed) + vm.maximum_mib <= budget
                    and sum(v.startup_mib for v in placed) + vm.startup_mib <= capacity):
                placed.append(vm)
                break
        else:
            hosts.append([vm])
    return [HostSpec(name=f"{prefix}-{n:02d}", total_mib=host_mib, reserve_mib=reserve_mib, policy=policy,
                     vms=sorted(placed, key=lambda v: v.name)) for n, placed in enumerate(hosts, start=1)]


def bitbrains_scenario(path: str | Path = DEFAULT_PATH, vms: int = 20, host_mib: int = 65536,
                       reserve_mib: int = 2048, overcommit: float = 1.5, duration_s: int | None = None,
                       time_scale: float = 60.0, start_s: int | None = None, minimum_mib: int = 512,
                       buffer_percent: int = 20, os: Literal["windows", "linux"] = "windows",
                       policy: Literal["hyperv", "squeezed", "mom", "esx"] = "hyperv",
                       packing: Literal["first-fit", "round-robin"] = "first-fit", hosts: int | None = None,
                       capacity_mib: int | None = None, startup_mib: int | None = None,
                       problems: list[SourceProblem] | None = None) -> Scenario:
    """A scenario of the trace's first ``vms`` VMs packed onto hosts of ``host_mib``.

    ``duration_s`` is trace time (default: to the last sample), run ``time_scale`` times faster.
    VMs that cannot run (no usage in the window, Startup above a host) are reported and left out.
    The study options: ``packing`` (first-fit, or round-robin: VM v on host v % ``hosts``),
    ``hosts`` (how many), ``capacity_mib`` (each host's memory for VMs: total = capacity + reserve,
    instead of ``host_mib``), ``startup_mib`` (Startup = min(this, Maximum) instead of the first
    demand plus the buffer), with ``minimum_mib`` and ``buffer_percent``.
    """
    if capacity_mib is not None:
        host_mib = capacity_mib + reserve_mib
    if time_scale <= 0:
        raise ValueError(f"time_scale={time_scale} must be positive")
    report = Problems(str(path), problems)
    trace = read_bitbrains(path, vms=vms, problems=problems)
    if not trace:
        raise ValueError(f"{path}: no VM to replay")
    begin = start_s if start_s is not None else min(vm.first_s for vm in trace)
    end = begin + duration_s if duration_s is not None else max(vm.usage[-1][0] for vm in trace if vm.usage)
    specs = []
    for vm in trace:
        spec = _vm_spec(vm, begin, end, time_scale, minimum_mib, buffer_percent, os, startup_mib)
        if isinstance(spec, str):
            report.add(None, f"VM {vm.vm}: {spec}: left out")
        elif spec.startup_mib > host_mib - reserve_mib:
            report.add(None, f"VM {vm.vm}: Startup RAM {spec.startup_mib} MiB exceeds a host: left out")
        else:
            specs.append(spec)
    if not specs:
        raise ValueError(f"{path}: none of the {len(trace)} VMs has usage in the window")
    return Scenario(duration_s=max(1, math.ceil((end - begin) / time_scale)),
                    hosts=pack(specs, host_mib, reserve_mib, overcommit, policy, packing=packing,
                               hosts_count=hosts))


def _vm_spec(vm: BitbrainsVm, begin: int, end: int, time_scale: float, minimum_mib: int, buffer_percent: int,
             os: Literal["windows", "linux"], startup_mib: int | None = None) -> VmSpec | str:
    boot = max(begin, vm.first_s)
    if boot >= end:
        return "starts after the window"
    window = [(t, kib) for t, kib in vm.usage if begin - 300 <= t <= end + 300]
    provisioned = [kib for t, kib in vm.provisioned if begin - 300 <= t <= end + 300]
    if not window:
        return "no usage in the window"
    if not provisioned:
        return "no provisioned size in the window"
    maximum = -(-max(provisioned) // 1024)
    if maximum < 32:
        return f"provisioned {maximum} MiB is below Hyper-V's 32 MiB"
    minimum = max(32, min(minimum_mib, maximum))
    first_mib = window[0][1] / 1024
    startup = min(max(-(-int(first_mib * (100 + buffer_percent) / 100) // 128) * 128, minimum), maximum)
    if startup_mib is not None:
        startup = max(minimum, min(startup_mib, maximum))
    points = [((t - boot) / time_scale, kib / 1024) for t, kib in window]
    return VmSpec(name=f"vm-{vm.vm:04d}", startup_mib=startup, minimum_mib=minimum, maximum_mib=maximum,
                  buffer_percent=buffer_percent, guest=GuestSpec(os=os), workload=Trace(points=points),
                  start_at_s=int((boot - begin) / time_scale))


@dataclass
class Measurement:
    """Dynamic Memory against static memory at Maximum, over a folded log.

    At every balancer tick (one a second per host) the host's running VMs add their assigned memory,
    Maximum RAM and demand to that second's sums, so means over seconds are time-weighted and peaks
    are fleet-wide. ``warning_*`` count status reports after which the VM's Memory Status was
    Warning (assigned < demand, DOMAIN.md §1.3).
    """

    seconds: int = 0
    assigned_mib_s: int = 0
    """Σ over seconds of Σ assigned memory of running VMs (MiB·s)."""
    maximum_mib_s: int = 0
    demand_mib_s: int = 0
    peak_assigned_mib: int = 0
    peak_maximum_mib: int = 0
    reports: int = 0
    warning_reports: int = 0
    warning_vms: set[str] = field(default_factory=set)
    vms: set[str] = field(default_factory=set)
    vm_assigned_mib_s: dict[str, int] = field(default_factory=dict)
    vm_maximum_mib_s: dict[str, int] = field(default_factory=dict)

    @property
    def saved_fraction(self) -> float:
        """1 − Σ assigned / Σ Maximum: the share of static-at-Maximum memory Dynamic Memory saves."""
        return 1 - self.assigned_mib_s / self.maximum_mib_s if self.maximum_mib_s else 0.0

    @property
    def median_vm_saved_fraction(self) -> float:
        """The median VM's 1 − mean assigned / Maximum: not dominated by a few huge VMs."""
        shares = sorted(1 - self.vm_assigned_mib_s[vm] / self.vm_maximum_mib_s[vm] for vm in self.vm_maximum_mib_s)
        if not shares:
            return 0.0
        middle = len(shares) // 2
        return shares[middle] if len(shares) % 2 else (shares[middle - 1] + shares[middle]) / 2

    @property
    def warning_fraction(self) -> float:
        return self.warning_reports / self.reports if self.reports else 0.0

    def as_dict(self) -> dict[str, float | int]:
        seconds = max(self.seconds, 1)
        return {"vms": len(self.vms), "seconds": self.seconds,
                "mean_assigned_mib": round(self.assigned_mib_s / seconds, 1),
                "mean_maximum_mib": round(self.maximum_mib_s / seconds, 1),
                "mean_demand_mib": round(self.demand_mib_s / seconds, 1),
                "peak_assigned_mib": self.peak_assigned_mib, "peak_maximum_mib": self.peak_maximum_mib,
                "saved_percent": round(100 * self.saved_fraction, 2),
                "median_vm_saved_percent": round(100 * self.median_vm_saved_fraction, 2), "reports": self.reports,
                "warning_reports": self.warning_reports, "warning_percent": round(100 * self.warning_fraction, 3),
                "vms_ever_warning": len(self.warning_vms)}


def measure(events: Iterable[Entry]) -> Measurement:
    """Fold ``events`` (a log, in order) into a fresh twin and measure as it goes."""
    twin, out = Twin(), Measurement()
    second_ms, assigned_now, maximum_now = -1, 0, 0
    for event in (flat for entry in events for flat in flatten(entry)):
        twin.apply(event)
        if isinstance(event, BalancerTicked):
            if event.at_ms != second_ms:
                second_ms, assigned_now, maximum_now = event.at_ms, 0, 0
                out.seconds += 1
            state = twin.hosts[event.host]
            rows = state.vms.rows
            for name, row in zip(state.vms.names, rows):
                key = f"{event.host}/{name}"
                out.vm_assigned_mib_s[key] = out.vm_assigned_mib_s.get(key, 0) + int(row[Col.ASSIGNED])
                out.vm_maximum_mib_s[key] = out.vm_maximum_mib_s.get(key, 0) + int(row[Col.MAXIMUM])
            assigned, maximum = int(rows[:, Col.ASSIGNED].sum()), int(rows[:, Col.MAXIMUM].sum())
            demand = rows[:, Col.DEMAND]
            out.assigned_mib_s += assigned
            out.maximum_mib_s += maximum
            out.demand_mib_s += int(demand[demand != NO_DATA].sum())
            assigned_now, maximum_now = assigned_now + assigned, maximum_now + maximum
            out.peak_assigned_mib = max(out.peak_assigned_mib, assigned_now)
            out.peak_maximum_mib = max(out.peak_maximum_mib, maximum_now)
        elif isinstance(event, GuestStatusReported):
            state = twin.hosts[event.host]
            row = state.vms.data[state.vms.index[event.vm]]
            status = memory_status(bool(row[Col.DM_ENABLED]), bool(row[Col.SMART_PAGING]), int(row[Col.DEMAND]),
                                   int(row[Col.ASSIGNED]), int(row[Col.BUFFER_PERCENT]))
            name = f"{event.host}/{event.vm}"
            out.reports += 1
            out.vms.add(name)
            if status == MemoryStatus.WARNING:
                out.warning_reports += 1
                out.warning_vms.add(name)
    return out


@dataclass(frozen=True)
class Grid:
    """The trace on a grid of ``step_s`` steps counted from each VM's own first sample (the rule of
    ``bitbrains-rnd-2013-07/REFERENCE.md``): several rows on one step, the largest wins; a usage of
    0 or no row carries the last non-zero value forward; before a VM's first non-zero value its
    demand is 0. ``demand_mib`` is VMs × steps (whole MiB, rounded up); ``maximum_mib`` the
    largest provisioned size of the window."""

    vms: np.ndarray
    """VM numbers, ascending."""
    first_s: np.ndarray
    maximum_mib: np.ndarray
    demand_mib: np.ndarray
    step_s: int

    @property
    def steps(self) -> int:
        return int(self.demand_mib.shape[1])


def read_grid(path: str | Path = DEFAULT_PATH, steps: int = 2016, step_s: int = 300,
              vms: int | None = None) -> Grid:
    """The first ``steps`` steps of every VM (of the first ``vms`` by number), see ``Grid``."""
    rows = csv.reader(read_text(path).splitlines())
    header = next(rows, [])
    if header != COLUMNS:
        raise ValueError(f"{path}: columns {header!r}, expected {COLUMNS!r}")
    parsed = []
    for row in rows:
        try:
            parsed.append([int(c) for c in row])
        except ValueError:
            continue  # a bad number: the row is skipped (read_bitbrains reports such rows)
    data = np.array([r for r in parsed if len(r) == 4 and min(r) >= 0], dtype=np.int64).reshape(-1, 4)
    if vms is not None:
        data = data[data[:, 0] <= vms]
    numbers, where = np.unique(data[:, 0], return_inverse=True)
    first = np.full(len(numbers), np.iinfo(np.int64).max)
    np.minimum.at(first, where, data[:, 1])
    step = (data[:, 1] - first[where] + step_s // 2) // step_s
    keep = (step >= 0) & (step < steps)
    usage = np.zeros((len(numbers), steps), dtype=np.int64)
    np.maximum.at(usage, (where[keep], step[keep]), data[keep, 3])
    provisioned = np.zeros(len(numbers), dtype=np.int64)
    np.maximum.at(provisioned, where[keep], data[keep, 2])
    # carry the last non-zero value forward; 0 before the first one
    seen = np.where(usage > 0, np.arange(steps)[None, :], -1)
    last = np.maximum.accumulate(seen, axis=1)
    filled = np.where(last >= 0, np.take_along_axis(usage, np.maximum(last, 0), axis=1), 0)
    return Grid(vms=numbers, first_s=first, maximum_mib=-(-provisioned // 1024),
                demand_mib=-(-filled // 1024), step_s=step_s)
