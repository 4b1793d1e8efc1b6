"""From what a real host showed, sample after sample, to the twin's input events.

Sources that watch real machines (perfmon, meminfo, virsh) turn each sample time into a
``Snapshot``: the VMs seen then, each with the memory it had and, when known, what its guest would
report. ``ObservedHost`` turns snapshots into the twin's inputs:

- ``HostJoined`` once, sized by the caller (``total_mib``) or, when not given, from the source's own
  figure for the memory VMs may use (``capacity_mib``) or the VMs' Startup RAM, whichever is larger,
  plus ``reserve_mib``;
- ``VmStarted`` when a VM appears, with settings inferred from what is seen: Startup RAM = its memory
  at that first sample; Minimum = ``minimum_mib`` (Hyper-V's default, 512 MiB) but never above
  Startup; Maximum = ``maximum_mib``, else what the source saw (e.g. a guest's
  ``max_dynamic_page_count``), else ``default_maximum_mib``, else Startup — never below Startup;
- ``GuestStatusReported`` whenever the guest's report is known (``committed_mib``);
- ``VmStopped`` when a VM that ran is no longer in a snapshot; it starts again if it comes back.

These logs hold no balancer decisions, so the twin keeps each VM at its Startup RAM; ``available``
is capped there, since the twin refuses a guest that claims more than it can see.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Sequence

from pydantic import ValidationError

from ..events import (
    GuestCapabilities,
    GuestStatusReported,
    HostJoined,
    InputEvent,
    MemorySettings,
    VmStarted,
    VmStopped,
)
from .errors import Problems

__all__ = ["VmSample", "Snapshot", "ObservedHost", "HYPERV_DEFAULT_MINIMUM_MIB",
           "HYPERV_DEFAULT_MAXIMUM_MIB", "DEFAULT_RESERVE_MIB"]

HYPERV_DEFAULT_MINIMUM_MIB = 512
"""Minimum RAM Hyper-V Manager proposes when Dynamic Memory is turned on."""
HYPERV_DEFAULT_MAXIMUM_MIB = 1_048_576
"""Maximum RAM Hyper-V proposes (1 TB, DOMAIN.md §1.1)."""
DEFAULT_RESERVE_MIB = 2048
"""The host reserve scenarios use by default (``twin.scenario.HostSpec``)."""


@dataclass(frozen=True)
class VmSample:
    """One VM at one sample time. ``memory_mib`` is what it has (Hyper-V "Physical Memory")."""

    vm: str
    memory_mib: int
    committed_mib: int | None = None
    """What the guest's DM_STATUS_REPORT would carry: demand + ballooned pages (+ Linux floor)."""
    available_mib: int | None = None
    maximum_mib: int | None = None
    capabilities: GuestCapabilities = field(default_factory=GuestCapabilities)


@dataclass(frozen=True)
class Snapshot:
    """Every VM seen at one time; ``line`` places it in the source file for problem reports."""

    at_ms: int
    line: int
    samples: Sequence[VmSample]
    capacity_mib: int | None = None
    """Memory the host has for VMs, when the source says (perfmon: Available Memory + Σ Physical)."""


@dataclass
class ObservedHost:
    """One real host as the twin sees it, fed a snapshot at a time."""

    host: str
    problems: Problems
    total_mib: int | None = None
    reserve_mib: int = DEFAULT_RESERVE_MIB
    minimum_mib: int = HYPERV_DEFAULT_MINIMUM_MIB
    maximum_mib: int | None = None
    default_maximum_mib: int | None = None
    running: dict[str, int] = field(default_factory=dict)
    """VM → Startup RAM, for the VMs the twin has running."""
    refused: set[str] = field(default_factory=set)

    def events(self, snapshots: Sequence[Snapshot]) -> Iterator[InputEvent]:
        """All events for a whole recording: ``HostJoined`` sized from it, then each snapshot."""
        if not snapshots:
            return
        yield self.join(snapshots[0].at_ms, self.capacity_needed(snapshots))
        for snapshot in snapshots:
            yield from self.step(snapshot)

    def capacity_needed(self, snapshots: Sequence[Snapshot]) -> int:
        """The most memory VMs held at once: the source's figure or Σ Startup RAM, if larger."""
        startup: dict[str, int] = {}
        need = 1
        for snapshot in snapshots:
            seen = {s.vm: s.memory_mib for s in snapshot.samples if s.memory_mib > 0}
            startup = {vm: startup.get(vm, memory) for vm, memory in seen.items()}
            need = max(need, snapshot.capacity_mib or 0, sum(startup.values()))
        return need

    def join(self, at_ms: int, capacity_mib: int) -> HostJoined:
        total = self.total_mib or capacity_mib + self.reserve_mib
        return HostJoined(at_ms=at_ms, host=self.host, total_mib=total, reserve_mib=self.reserve_mib)

    def step(self, snapshot: Snapshot) -> list[InputEvent]:
        """The events of one sample time: stops, then starts, then status reports."""
        out: list[InputEvent] = []
        present = {s.vm for s in snapshot.samples if s.memory_mib > 0}
        for vm in [vm for vm in self.running if vm not in present]:
            del self.running[vm]
            out.append(VmStopped(at_ms=snapshot.at_ms, host=self.host, vm=vm))
        self.refused &= present
        for sample in snapshot.samples:
            if sample.vm not in present or sample.vm in self.refused:
                continue
            if sample.vm not in self.running:
                started = self._start(snapshot, sample)
                if started is None:
                    self.refused.add(sample.vm)
                    continue
                out.append(started)
            if sample.committed_mib is not None:
                startup = self.running[sample.vm]
                available = sample.available_mib
                if available is None:
                    available = max(0, sample.memory_mib - sample.committed_mib)
                out.append(GuestStatusReported(
                    at_ms=snapshot.at_ms, host=self.host, vm=sample.vm,
                    committed_mib=sample.committed_mib, available_mib=min(available, startup)))
        return out

    def _start(self, snapshot: Snapshot, sample: VmSample) -> VmStarted | None:
        startup = sample.memory_mib
        if self.total_mib is not None:
            free = self.total_mib - self.reserve_mib - sum(self.running.values())
            if startup > free:
                self.problems.add(snapshot.line, f"VM {sample.vm!r} cannot start in the twin: "
                                                 f"{startup} MiB wanted, {free} MiB free on {self.host!r}")
                return None
        maximum = self.maximum_mib or sample.maximum_mib or self.default_maximum_mib or startup
        try:
            settings = MemorySettings(startup_mib=startup, minimum_mib=max(32, min(self.minimum_mib, startup)),
                                      maximum_mib=max(maximum, startup))
        except ValidationError as error:
            reason = error.errors(include_url=False)[0]["msg"]
            self.problems.add(snapshot.line, f"VM {sample.vm!r} has no valid settings: {reason}")
            return None
        self.running[sample.vm] = startup
        return VmStarted(at_ms=snapshot.at_ms, host=self.host, vm=sample.vm, settings=settings,
                         capabilities=sample.capabilities)
