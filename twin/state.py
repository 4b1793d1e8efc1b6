"""Partition state of one host: a column table of its running VMs, and read-only records of them.

The VMs of a host live in one ``int64`` array, a row per VM and a column per field (``Col``), so that
the balancer reads whole columns at numpy speed and a snapshot is one array copy. Every memory
amount is whole MiB; pressure is whole percent, like Hyper-V's counters (DOMAIN.md §2.1).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

import numpy as np

__all__ = [
    "Col",
    "Pending",
    "MemoryStatus",
    "PRESSURE_WINDOW",
    "NO_DATA",
    "VmTable",
    "HostState",
    "VmRecord",
    "pressure_percent",
    "ideal_mib",
    "memory_status",
]

PRESSURE_WINDOW = 60
"""Reports kept for Average / Minimum / Maximum Pressure: one minute at one report a second.
Hyper-V's own averaging window is undocumented (DOMAIN.md §2.1 [U]); Neal's alert rule uses 1 min."""

NO_DATA = -1
"""Value of DEMAND, COMMITTED and AVAILABLE before the guest's first status report."""


class Col:
    """Columns of ``VmTable.data``: plain ints, not an enum, because the fold and the balancer index
    with them thousands of times a second (an enum member costs a slow attribute lookup each time)."""

    STARTUP = 0
    MINIMUM = 1
    MAXIMUM = 2
    BUFFER_PERCENT = 3
    WEIGHT = 4
    DM_ENABLED = 5
    CAN_BALLOON = 6
    CAN_HOT_ADD = 7
    ALIGNMENT = 8  # hot-add alignment, MiB
    ASSIGNED = 9  # physical memory (Hyper-V "Physical Memory")
    VISIBLE = 10  # guest-visible high-watermark ("Guest Visible Physical Memory")
    PAGING = 11  # MiB backed by the Smart Paging file
    SMART_PAGING = 12  # 1 while the Smart Paging file is in use
    DEMAND = 13  # committed minus ballooned pages (NO_DATA before the first report)
    COMMITTED = 14  # as reported (DM_STATUS_REPORT num_committed)
    AVAILABLE = 15  # as reported (num_avail)
    FLOOR = 16  # assigned memory at which the guest last refused to balloon further
    HOT_ADD_BLOCKED = 17  # 1 after a permanent or short hot-add answer
    ADDED = 18  # cumulative MiB added ("Added Memory")
    REMOVED = 19  # cumulative MiB removed ("Removed Memory")
    ADD_OPS = 20
    REMOVE_OPS = 21
    PENDING = 22  # kind of the transaction in flight (Pending)
    PENDING_SEQ = 23
    PENDING_MIB = 24
    PENDING_AT = 25
    LAST_AT = 26  # at_ms of the VM's newest event
    SURPLUS_SINCE = 27  # at_ms since which assigned stayed above ideal (NO_DATA: not above)
    RETRY_AT = 28  # no hot-add before this at_ms (after a transient failure)
    PRESSURE_SUM = 29  # sum of the pressures in the window
    PRESSURE_COUNT = 30  # reports in the window
    STARTED_AT = 31
    FLOOR_UNTIL = 32  # the floor holds until this at_ms


N_COLS = 1 + max(v for k, v in vars(Col).items() if k.isupper())


class Pending(IntEnum):
    """Kinds of the one transaction a VM may have in flight (DOMAIN.md §2.4)."""

    NONE = 0
    BALLOON = 1
    UNBALLOON = 2
    HOT_ADD = 3


_UNBALLOON, _HOT_ADD = int(Pending.UNBALLOON), int(Pending.HOT_ADD)  # enum members are slow to look up


class MemoryStatus:
    """Hyper-V Manager's "Memory Status" values (DOMAIN.md §1.3); ``NONE`` is the blank column."""

    NONE = ""
    PAGING = "Paging"
    WARNING = "Warning"
    LOW = "Low"
    OK = "OK"
    ALL = ("OK", "Low", "Warning", "Paging", "")


def pressure_percent(demand_mib: int, assigned_mib: int) -> int:
    """Current Pressure = demand ÷ assigned × 100, rounded half up (§1.2). Never clamped at 100."""
    if assigned_mib <= 0:
        return 0
    return (200 * demand_mib + assigned_mib) // (2 * assigned_mib)


def ideal_mib(demand_mib: int, buffer_percent: int, minimum_mib: int, maximum_mib: int) -> int:
    """Ideal memory = demand × (1 + buffer), within Minimum and Maximum (§1.2, §1.4)."""
    wanted = -(-demand_mib * (100 + buffer_percent) // 100)
    return min(max(wanted, minimum_mib), maximum_mib)


def memory_status(dm_enabled: bool, smart_paging: bool, demand_mib: int, assigned_mib: int,
                  buffer_percent: int) -> str:
    """Memory Status by the decompiled rule of DOMAIN.md §1.3.

    AvailableMemoryBuffer = 100·(A−D)/(b·D) with A assigned, D demand, b the buffer fraction:
    negative ⇒ Warning, above 80 ⇒ OK, 0‥80 ⇒ Low. Without DM or without data the column is blank.
    ("Spanning" needs NUMA topology, which the twin does not model.)
    """
    if not dm_enabled:
        return MemoryStatus.NONE
    if smart_paging:
        return MemoryStatus.PAGING
    if demand_mib < 0:
        return MemoryStatus.NONE
    surplus = assigned_mib - demand_mib
    if surplus < 0:
        return MemoryStatus.WARNING
    if 10000 * surplus > 80 * buffer_percent * demand_mib:
        return MemoryStatus.OK
    return MemoryStatus.LOW


class VmTable:
    """The running VMs of one host as rows of an int64 array, plus a pressure-history ring."""

    def __init__(self, capacity: int = 16) -> None:
        self.names: list[str] = []
        self.index: dict[str, int] = {}
        self.data = np.zeros((capacity, N_COLS), dtype=np.int64)
        self.history = np.zeros((capacity, PRESSURE_WINDOW), dtype=np.int64)

    def __len__(self) -> int:
        return len(self.names)

    def __contains__(self, name: object) -> bool:
        return name in self.index

    @property
    def rows(self) -> np.ndarray:
        """The live rows (a view)."""
        return self.data[: len(self.names)]

    def column(self, col: Col) -> np.ndarray:
        """One column over the live rows (a view)."""
        return self.data[: len(self.names), col]

    def add(self, name: str) -> int:
        """Append a zeroed row for ``name`` and return its index."""
        n = len(self.names)
        if n == len(self.data):
            self.data = np.concatenate([self.data, np.zeros_like(self.data)])
            self.history = np.concatenate([self.history, np.zeros_like(self.history)])
        self.data[n] = 0
        self.history[n] = 0
        self.names.append(name)
        self.index[name] = n
        return n

    def remove(self, name: str) -> None:
        """Drop ``name``'s row; the last row moves into its place."""
        i = self.index.pop(name)
        last = len(self.names) - 1
        if i != last:
            moved = self.names[last]
            self.data[i] = self.data[last]
            self.history[i] = self.history[last]
            self.names[i] = moved
            self.index[moved] = i
        self.names.pop()

    def copy(self) -> VmTable:
        twin = VmTable.__new__(VmTable)
        twin.names = list(self.names)
        twin.index = dict(self.index)
        twin.data = self.data.copy()
        twin.history = self.history.copy()
        return twin


@dataclass
class HostState:
    """One host: its memory, its balancer policy and its VMs.

    ``last_seq`` keeps each VM's last decision number across stops, so that (host, vm, seq) never
    names two decisions.
    """

    name: str
    total_mib: int
    reserve_mib: int
    policy: str = "hyperv"
    last_at_ms: int = 0
    vms: VmTable = field(default_factory=VmTable)
    last_seq: dict[str, int] = field(default_factory=dict)
    last_round_ms: int = -1
    """at_ms of the last balancing round (-1: none yet)."""

    @property
    def capacity_mib(self) -> int:
        """Memory the VMs may have: total − reserve."""
        return self.total_mib - self.reserve_mib

    def committed_mib(self) -> int:
        """Memory assigned to VMs plus memory promised to additions in flight."""
        rows = self.vms.rows
        pending = rows[:, Col.PENDING]
        promised = rows[:, Col.PENDING_MIB][(pending == _UNBALLOON) | (pending == _HOT_ADD)]
        return int(rows[:, Col.ASSIGNED].sum() + promised.sum())

    def free_mib(self) -> int:
        """Available Memory: what the balancer can still hand out."""
        return self.capacity_mib - self.committed_mib()

    def vm(self, name: str) -> VmRecord:
        """A read-only record of one running VM."""
        return VmRecord.from_row(name, self.vms.data[self.vms.index[name]],
                                 self.vms.history[self.vms.index[name]])

    def records(self) -> list[VmRecord]:
        """Records of all running VMs, sorted by name."""
        return [self.vm(name) for name in sorted(self.vms.names)]

    def copy(self) -> HostState:
        return HostState(self.name, self.total_mib, self.reserve_mib, self.policy, self.last_at_ms,
                         self.vms.copy(), dict(self.last_seq), self.last_round_ms)

    def round_view(self, rows: np.ndarray | None = None) -> HostState:
        """What a balancing round reads, as of now (the VM rows, names and decision numbers, copied;
        or ``rows`` for the VM rows), for planning later: ``twin.audit`` plans many such views at
        once. Not a state to fold into: its pressure history and name index are this state's."""
        vms = VmTable.__new__(VmTable)
        vms.names, vms.index, vms.history = list(self.vms.names), self.vms.index, self.vms.history
        vms.data = self.vms.rows.copy() if rows is None else rows
        return HostState(self.name, self.total_mib, self.reserve_mib, self.policy, self.last_at_ms, vms,
                         dict(self.last_seq), self.last_round_ms)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready snapshot that ``from_dict`` restores exactly (row order included)."""
        n = len(self.vms)
        return {
            "name": self.name, "total_mib": self.total_mib, "reserve_mib": self.reserve_mib,
            "policy": self.policy, "last_at_ms": self.last_at_ms, "last_seq": self.last_seq,
            "last_round_ms": self.last_round_ms,
            "vms": list(self.vms.names), "data": self.vms.data[:n].tolist(),
            "history": self.vms.history[:n].tolist(),
        }

    def to_bytes(self) -> bytes:
        """A compact binary snapshot: a JSON header line, then the two int64 arrays."""
        n = len(self.vms)
        header = {k: v for k, v in self.to_dict().items() if k not in ("data", "history")}
        return (json.dumps(header, separators=(",", ":")).encode() + b"\n"
                + self.vms.data[:n].astype("<i8").tobytes() + self.vms.history[:n].astype("<i8").tobytes())

    @classmethod
    def from_bytes(cls, blob: bytes) -> HostState:
        head, _, body = blob.partition(b"\n")
        header = json.loads(head)
        n = len(header["vms"])
        values = np.frombuffer(body, dtype="<i8")
        header["data"] = values[: n * N_COLS].reshape(n, N_COLS)
        header["history"] = values[n * N_COLS:].reshape(n, PRESSURE_WINDOW)
        return cls.from_dict(header)

    @classmethod
    def from_dict(cls, snapshot: dict[str, Any]) -> HostState:
        table = VmTable(max(16, len(snapshot["vms"])))
        for name, row, ring in zip(snapshot["vms"], snapshot["data"], snapshot["history"]):
            i = table.add(name)
            table.data[i] = row
            table.history[i] = ring
        return cls(snapshot["name"], snapshot["total_mib"], snapshot["reserve_mib"],
                   snapshot["policy"], snapshot["last_at_ms"], table, dict(snapshot["last_seq"]),
                   snapshot["last_round_ms"])


@dataclass(frozen=True)
class VmRecord:
    """Everything Hyper-V shows of one VM, derived from its row. Memory in MiB, pressure in %."""

    name: str
    startup_mib: int
    minimum_mib: int
    maximum_mib: int
    buffer_percent: int
    weight: int
    dynamic_memory_enabled: bool
    can_balloon: bool
    can_hot_add: bool
    hot_add_alignment_mib: int
    assigned_mib: int
    visible_mib: int
    balloon_mib: int
    smart_paging_mib: int
    smart_paging: bool
    demand_mib: int | None
    available_mib: int | None
    ideal_mib: int | None
    ideal_share: float | None
    pressure_current: int | None
    pressure_average: float | None
    pressure_minimum: int | None
    pressure_maximum: int | None
    status: str
    added_mib: int
    removed_mib: int
    add_operations: int
    remove_operations: int
    hot_add_blocked: bool
    floor_mib: int
    pending: str
    pending_seq: int
    pending_mib: int

    @classmethod
    def from_row(cls, name: str, row: np.ndarray, ring: np.ndarray) -> VmRecord:
        r = [int(x) for x in row]
        demand = r[Col.DEMAND]
        has_data = demand != NO_DATA
        count = r[Col.PRESSURE_COUNT]
        window = ring[: min(count, PRESSURE_WINDOW)]
        ideal = ideal_mib(demand, r[Col.BUFFER_PERCENT], r[Col.MINIMUM], r[Col.MAXIMUM]) if has_data else None
        assigned = r[Col.ASSIGNED]
        return cls(
            name=name,
            startup_mib=r[Col.STARTUP],
            minimum_mib=r[Col.MINIMUM],
            maximum_mib=r[Col.MAXIMUM],
            buffer_percent=r[Col.BUFFER_PERCENT],
            weight=r[Col.WEIGHT],
            dynamic_memory_enabled=bool(r[Col.DM_ENABLED]),
            can_balloon=bool(r[Col.CAN_BALLOON]),
            can_hot_add=bool(r[Col.CAN_HOT_ADD]),
            hot_add_alignment_mib=r[Col.ALIGNMENT],
            assigned_mib=assigned,
            visible_mib=r[Col.VISIBLE],
            balloon_mib=r[Col.VISIBLE] - assigned - r[Col.PAGING],
            smart_paging_mib=r[Col.PAGING],
            smart_paging=bool(r[Col.SMART_PAGING]),
            demand_mib=demand if has_data else None,
            available_mib=r[Col.AVAILABLE] if has_data else None,
            ideal_mib=ideal,
            ideal_share=(assigned / ideal if ideal else None),
            pressure_current=pressure_percent(demand, assigned) if has_data else None,
            pressure_average=(r[Col.PRESSURE_SUM] / len(window)) if len(window) else None,
            pressure_minimum=int(window.min()) if len(window) else None,
            pressure_maximum=int(window.max()) if len(window) else None,
            status=memory_status(bool(r[Col.DM_ENABLED]), bool(r[Col.SMART_PAGING]), demand, assigned,
                                 r[Col.BUFFER_PERCENT]),
            added_mib=r[Col.ADDED],
            removed_mib=r[Col.REMOVED],
            add_operations=r[Col.ADD_OPS],
            remove_operations=r[Col.REMOVE_OPS],
            hot_add_blocked=bool(r[Col.HOT_ADD_BLOCKED]),
            floor_mib=r[Col.FLOOR],
            pending=Pending(r[Col.PENDING]).name.lower(),
            pending_seq=r[Col.PENDING_SEQ],
            pending_mib=r[Col.PENDING_MIB],
        )
