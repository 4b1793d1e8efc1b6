"""Parent-partition performance counters computed from the twin's state (DOMAIN.md §2.1, §2.2).

Values keep Hyper-V's native units (MB = MiB, percent) and each field names the counter it mirrors
in its metadata, so an exporter converts units at its edge and quotes the counter in its help text.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from .state import NO_DATA, Col, HostState, VmRecord

__all__ = [
    "VM_COUNTER_SET",
    "BALANCER_COUNTER_SET",
    "BALANCER_INSTANCE",
    "VmCounters",
    "BalancerCounters",
    "vm_counters",
    "balancer_counters",
    "counter_fields",
]

VM_COUNTER_SET = "Hyper-V Dynamic Memory VM"
BALANCER_COUNTER_SET = "Hyper-V Dynamic Memory Balancer"
BALANCER_INSTANCE = "System Balancer"


def _counter(name: str, unit: str, kind: str = "gauge") -> Any:
    return field(metadata={"counter": name, "unit": unit, "kind": kind})


@dataclass(frozen=True)
class VmCounters:
    """One instance of "Hyper-V Dynamic Memory VM" (instance name = VM name)."""

    host: str
    vm: str
    added_memory: int = _counter("Added Memory", "MB", "counter")
    removed_memory: int = _counter("Removed Memory", "MB", "counter")
    memory_add_operations: int = _counter("Memory Add Operations", "count", "counter")
    memory_remove_operations: int = _counter("Memory Remove Operations", "count", "counter")
    physical_memory: int = _counter("Physical Memory", "MB")
    guest_visible_physical_memory: int = _counter("Guest Visible Physical Memory", "MB")
    current_pressure: int = _counter("Current Pressure", "percent")
    average_pressure: float = _counter("Average Pressure", "percent")
    minimum_pressure: int = _counter("Minimum Pressure", "percent")
    maximum_pressure: int = _counter("Maximum Pressure", "percent")
    smart_paging_working_set_size: int = _counter("Smart Paging Working Set Size", "MB")
    guest_available_memory: int = _counter("Guest Available Memory", "MB")
    memory_demand: int = _counter("Memory Demand (Hyper-V Manager column)", "MB")
    balloon_size: int = _counter("Guest Visible Physical Memory − Physical Memory − paged (twin)", "MB")
    ideal_memory: int = _counter("demand × (1 + buffer) within Minimum and Maximum (twin)", "MB")
    memory_status: str = field(default="", metadata={"counter": "Memory Status (Hyper-V Manager column)",
                                                     "unit": "state", "kind": "state"})


@dataclass(frozen=True)
class BalancerCounters:
    """"Hyper-V Dynamic Memory Balancer", instance "System Balancer", of one host."""

    host: str
    available_memory: int = _counter("Available Memory", "MB")
    available_memory_for_balancing: int = _counter("Available Memory For Balancing", "MB")
    average_pressure: float = _counter("Average Pressure", "percent")
    system_current_pressure: int = _counter("System Current Pressure", "percent")


def counter_fields(cls: type) -> list[tuple[str, dict[str, str]]]:
    """(field name, metadata) of each counter of a counter-set class."""
    return [(f.name, dict(f.metadata)) for f in fields(cls) if f.metadata]


def vm_counters(state: HostState) -> list[VmCounters]:
    """One counter instance per running VM, sorted by VM name. A VM without a status report yet
    shows zero pressure, as Hyper-V's counters do before the guest's integration services start."""
    return [_vm(state.name, record) for record in state.records()]


def _vm(host: str, r: VmRecord) -> VmCounters:
    return VmCounters(
        host=host, vm=r.name,
        added_memory=r.added_mib, removed_memory=r.removed_mib,
        memory_add_operations=r.add_operations, memory_remove_operations=r.remove_operations,
        physical_memory=r.assigned_mib, guest_visible_physical_memory=r.visible_mib,
        current_pressure=r.pressure_current or 0, average_pressure=r.pressure_average or 0.0,
        minimum_pressure=r.pressure_minimum or 0, maximum_pressure=r.pressure_maximum or 0,
        smart_paging_working_set_size=r.smart_paging_mib,
        guest_available_memory=r.available_mib or 0, memory_demand=r.demand_mib or 0,
        balloon_size=r.balloon_mib, ideal_memory=r.ideal_mib or 0, memory_status=r.status,
    )


def balancer_counters(state: HostState) -> BalancerCounters:
    """The host's balancer counters.

    Available Memory is what the balancer can hand out now (host reserve excluded, §2.2).
    Available Memory For Balancing adds what it could reclaim: memory VMs hold above their ideal
    and above their Minimum [D: Hyper-V does not document this counter's formula].
    Average Pressure averages the VMs' Average Pressure; System Current Pressure is
    Σ demand ÷ Σ assigned over the VMs that report (both over Dynamic Memory VMs only).
    """
    rows = state.vms.rows
    free = state.free_mib()
    balanced = (rows[:, Col.DM_ENABLED] == 1) & (rows[:, Col.DEMAND] != NO_DATA)
    sub = rows[balanced]
    if len(sub) == 0:
        return BalancerCounters(host=state.name, available_memory=free,
                                available_memory_for_balancing=free, average_pressure=0.0,
                                system_current_pressure=0)
    demand, assigned = sub[:, Col.DEMAND], sub[:, Col.ASSIGNED]
    wanted = -(-demand * (100 + sub[:, Col.BUFFER_PERCENT]) // 100)
    floor = np.where(sub[:, Col.FLOOR_UNTIL] > state.last_at_ms, sub[:, Col.FLOOR], 0)
    keep = np.maximum(np.clip(wanted, sub[:, Col.MINIMUM], sub[:, Col.MAXIMUM]), floor)
    reclaimable = int(np.maximum(assigned - keep, 0).sum())
    window = np.minimum(sub[:, Col.PRESSURE_COUNT], state.vms.history.shape[1])
    averages = sub[:, Col.PRESSURE_SUM] / np.maximum(window, 1)
    total_assigned = int(assigned.sum())
    return BalancerCounters(
        host=state.name,
        available_memory=free,
        available_memory_for_balancing=free + reclaimable,
        average_pressure=round(float(averages.mean()), 3),
        system_current_pressure=(200 * int(demand.sum()) + total_assigned) // (2 * max(total_assigned, 1)),
    )
