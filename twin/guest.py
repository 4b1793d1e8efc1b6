"""A simulated enlightened guest: it reports its memory and answers the balancer like the Dynamic
Memory VSC does (Linux ``hv_balloon.c`` and Windows, DOMAIN.md §1.5, §1.7, §2.4).

- Status every second: ``committed`` = the workload's demand + pages held in the balloon (+ the
  balloon floor on Linux); ``available`` = what is left of the visible memory.
- Balloon: release what was asked, but never cross the floor (Linux: piecewise linear in RAM;
  Windows: keep 5 % of visible memory free); a partial or empty answer means "at my floor".
- Unballoon: take everything back.
- Hot-add: in multiples of the alignment, up to an optional physical ceiling; a guest that
  refuses (hibernation on, §1.7) answers 0 pages, permanent failure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .events import (
    BalloonResponded,
    BalloonTargetSet,
    GuestStatusReported,
    HotAddResponded,
    MemoryAdditionRequested,
    UnballoonRequested,
    UnballoonResponded,
)

__all__ = ["SimulatedGuest", "linux_balloon_floor_mib"]

BALLOON_UNIT_MIB = 2


def linux_balloon_floor_mib(total_mib: int) -> int:
    """``compute_balloon_floor()`` of hv_balloon.c: memory Linux never gives to the balloon."""
    if total_mib < 128:
        return 8 + total_mib // 2
    if total_mib < 512:
        return 40 + total_mib // 4
    if total_mib < 2048:
        return 104 + total_mib // 8
    if total_mib < 8192:
        return 232 + total_mib // 16
    return 488 + total_mib // 32


@dataclass
class SimulatedGuest:
    """One guest OS inside a VM: what it sees (``visible_mib``) and what its balloon holds."""

    host: str
    vm: str
    os: Literal["linux", "windows"]
    visible_mib: int
    ballooned_mib: int = 0
    refuses_requests: bool = False
    max_hot_add_total_mib: int | None = None
    """The guest's physical ceiling: hot-adds past this visible size come back short."""
    refuses_balloon: bool = False
    """Frees nothing when asked to balloon (answers 0), but takes added memory."""
    refuses_hot_add: bool = False
    """Refuses hot-add (0 pages, permanent failure), but balloons."""
    hidden_floor_mib: int | None = None
    """The guest keeps at least this much (visible − ballooned), above Minimum: answers partially."""
    answer_percent: int = 100
    """Releases only this share of each balloon request (before its floors)."""

    def boot(self, startup_mib: int) -> None:
        """A fresh boot sees Startup RAM and an empty balloon."""
        self.visible_mib, self.ballooned_mib = startup_mib, 0

    def floor_mib(self) -> int:
        if self.os == "linux":
            return linux_balloon_floor_mib(self.visible_mib)
        return self.visible_mib // 20

    def available_mib(self, demand_mib: int) -> int:
        return max(0, self.visible_mib - self.ballooned_mib - demand_mib)

    def status(self, at_ms: int, demand_mib: int) -> GuestStatusReported:
        """DM_STATUS_REPORT for the current second's workload demand."""
        committed = demand_mib + self.ballooned_mib
        if self.os == "linux":
            committed += self.floor_mib()
        return GuestStatusReported(at_ms=at_ms, host=self.host, vm=self.vm, committed_mib=committed,
                                   available_mib=self.available_mib(demand_mib))

    def answer(self, request: object, at_ms: int, demand_mib: int
               ) -> BalloonResponded | UnballoonResponded | HotAddResponded | None:
        """The guest's answer to a balancer request (None for decisions that need no answer)."""
        if isinstance(request, BalloonTargetSet):
            return self._balloon(request, at_ms, demand_mib)
        if isinstance(request, UnballoonRequested):
            self.ballooned_mib -= min(request.return_mib, self.ballooned_mib)
            return UnballoonResponded(at_ms=at_ms, host=self.host, vm=self.vm, seq=request.seq)
        if isinstance(request, MemoryAdditionRequested):
            return self._hot_add(request, at_ms)
        return None

    def _balloon(self, request: BalloonTargetSet, at_ms: int, demand_mib: int) -> BalloonResponded:
        spare = 0 if self.refuses_requests or self.refuses_balloon else (
            self.available_mib(demand_mib) - self.floor_mib())
        if self.hidden_floor_mib is not None:
            spare = min(spare, self.visible_mib - self.ballooned_mib - self.hidden_floor_mib)
        asked = request.remove_mib * self.answer_percent // 100
        released = max(0, min(asked, spare)) // BALLOON_UNIT_MIB * BALLOON_UNIT_MIB
        self.ballooned_mib += released
        return BalloonResponded(at_ms=at_ms, host=self.host, vm=self.vm, seq=request.seq,
                                released_mib=released)

    def _hot_add(self, request: MemoryAdditionRequested, at_ms: int) -> HotAddResponded:
        if self.refuses_requests or self.refuses_hot_add:
            return HotAddResponded(at_ms=at_ms, host=self.host, vm=self.vm, seq=request.seq,
                                   added_mib=0, result="permanent_failure")
        added = request.add_mib
        if self.max_hot_add_total_mib is not None:
            added = max(0, min(added, self.max_hot_add_total_mib - self.visible_mib))
        self.visible_mib += added
        return HotAddResponded(at_ms=at_ms, host=self.host, vm=self.vm, seq=request.seq,
                               added_mib=added, result="success")
