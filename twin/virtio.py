"""A Linux virtio guest, as the twin sees it: the KVM counterparts of Hyper-V's Dynamic Memory.

A Linux guest under QEMU/KVM has no Dynamic Memory VSC; it has ``virtio-balloon`` (the balloon)
and ``virtio-mem`` (memory addition). This module says how their figures map onto the twin's
events, so a bridge (``streams.lab``) can drive real guests with the twin's commands:

- **Assigned** = the balloon's ``actual`` (boot memory less the balloon; QMP's ``query-balloon``
  leaves virtio-mem out) + virtio-mem's plugged ``size``. **Visible** = boot memory + plugged.
- **Status** (DM_STATUS_REPORT): ``committed`` = the guest's total − available memory
  (``guest-stats``: ``stat-total-memory`` and ``stat-available-memory``, or ``/proc/meminfo``'s
  MemTotal and MemAvailable). With ``deflate-on-oom=on`` the balloon does not shrink MemTotal, so
  its pages count as committed, as Hyper-V's guests count theirs (DOMAIN.md §2.4).
- **Balloon answer**: what ``actual`` fell by, in 2 MiB units; less than asked is a partial
  answer (the guest could not free more).
- **Hot-add answer**: what ``size`` grew by; a guest that plugged nothing answers a transient
  failure, one that plugged only part answers what it plugged (the twin then adds no more).
- **Capabilities**: balloon and hot-add, aligned to :data:`VIRTIO_MEM_ALIGNMENT_MIB`.
"""

from __future__ import annotations

from typing import Literal

from .events import BalloonResponded, GuestCapabilities, GuestStatusReported, HotAddResponded

__all__ = ["VIRTIO_MEM_ALIGNMENT_MIB", "BALLOON_UNIT_MIB", "capabilities", "status", "balloon_answer",
           "hot_add_answer", "assigned_mib", "drift_mib"]

MIB = 1 << 20
BALLOON_UNIT_MIB = 2
VIRTIO_MEM_ALIGNMENT_MIB = 32
"""Memory addition in 32 MiB steps: a multiple of virtio-mem's 2 MiB block, small enough for lab
guests of a few hundred MiB (Linux adds 128 MiB memory blocks and plugs them in sub-blocks)."""


def capabilities(hot_add: bool = True) -> GuestCapabilities:
    """What a Linux guest with virtio-balloon (and virtio-mem, when ``hot_add``) can do."""
    return GuestCapabilities(balloon=True, hot_add=hot_add, hot_add_alignment_mib=VIRTIO_MEM_ALIGNMENT_MIB)


def status(at_ms: int, host: str, vm: str, total_bytes: int, available_bytes: int) -> GuestStatusReported:
    """A guest's status report from its total and available memory (bytes)."""
    total, available = total_bytes // MIB, min(available_bytes, total_bytes) // MIB
    return GuestStatusReported(at_ms=at_ms, host=host, vm=vm, committed_mib=total - available,
                               available_mib=available)


def assigned_mib(actual_bytes: int, plugged_bytes: int) -> int:
    """What QEMU gives the VM: balloon ``actual`` + virtio-mem ``size``."""
    return (actual_bytes + plugged_bytes) // MIB


def balloon_answer(at_ms: int, host: str, vm: str, seq: int, asked_mib: int, before_bytes: int,
                   after_bytes: int) -> BalloonResponded:
    """The answer to a balloon request from ``actual`` before and after it (2 MiB units, ≤ asked)."""
    released = max(0, before_bytes - after_bytes) // MIB
    released = min(asked_mib, released) // BALLOON_UNIT_MIB * BALLOON_UNIT_MIB
    return BalloonResponded(at_ms=at_ms, host=host, vm=vm, seq=seq, released_mib=released)


def hot_add_answer(at_ms: int, host: str, vm: str, seq: int, asked_mib: int, before_bytes: int,
                   after_bytes: int) -> HotAddResponded:
    """The answer to a memory addition from virtio-mem's ``size`` before and after it."""
    added = min(asked_mib, max(0, after_bytes - before_bytes) // MIB)
    result: Literal["success", "transient_failure"] = "success" if added > 0 else "transient_failure"
    return HotAddResponded(at_ms=at_ms, host=host, vm=vm, seq=seq, added_mib=added, result=result)


def drift_mib(twin_assigned_mib: int, actual_bytes: int, plugged_bytes: int) -> int:
    """The twin's belief minus what QEMU gives the VM, in MiB (positive: the twin believes more)."""
    return twin_assigned_mib - assigned_mib(actual_bytes, plugged_bytes)
