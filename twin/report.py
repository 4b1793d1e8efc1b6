"""What ``dmtwin replay`` shows: a JSON-ready summary of a replay, and a text rendering of it."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from .counters import balancer_counters, vm_counters
from .log import Replay

__all__ = ["summary", "to_json", "to_text"]


def summary(result: Replay, decisions: bool = True) -> dict[str, Any]:
    """Final state, counters, decisions and rejections of a replay, as plain data."""
    hosts = []
    for state in result.twin.hosts.values():
        counters = {c.vm: asdict(c) for c in vm_counters(state)}
        hosts.append({
            "host": state.name, "policy": state.policy, "total_mib": state.total_mib,
            "reserve_mib": state.reserve_mib, "last_at_ms": state.last_at_ms,
            "balancer": asdict(balancer_counters(state)),
            "vms": [{**asdict(record), "counters": counters[record.name]} for record in state.records()],
        })
    out: dict[str, Any] = {
        "events": result.events,
        "decision_count": len(result.decisions),
        "rejected_count": len(result.rejected),
        "hosts": hosts,
        "rejected": [r.as_dict() for r in result.rejected],
    }
    if decisions:
        out["decisions"] = [d.model_dump(mode="json") for d in result.decisions]
    return out


def to_json(data: dict[str, Any]) -> str:
    """Canonical JSON: the same summary always gives the same bytes."""
    return json.dumps(data, sort_keys=True, indent=2, ensure_ascii=False)


VM_COLUMNS = (
    ("VM", "name", "<"), ("Status", "status", "<"), ("Assigned", "assigned_mib", ">"),
    ("Demand", "demand_mib", ">"), ("Ideal", "ideal_mib", ">"), ("Visible", "visible_mib", ">"),
    ("Balloon", "balloon_mib", ">"), ("Paged", "smart_paging_mib", ">"), ("Press%", "pressure_current", ">"),
    ("Avg%", "pressure_average", ">"), ("Min", "minimum_mib", ">"), ("Max", "maximum_mib", ">"),
    ("Weight", "weight", ">"), ("Added", "added_mib", ">"), ("Removed", "removed_mib", ">"),
    ("+Ops", "add_operations", ">"), ("-Ops", "remove_operations", ">"),
)


def table(rows: list[dict[str, Any]], columns: tuple[tuple[str, str, str], ...] = VM_COLUMNS) -> str:
    """A plain-text table of ``rows`` (VM records), like Hyper-V Manager's memory columns."""
    def cell(value: Any) -> str:
        if value is None or value == "":
            return "-"
        return f"{value:.1f}" if isinstance(value, float) else str(value)

    cells = [[cell(row[key]) for _, key, _ in columns] for row in rows]
    widths = [max([len(title)] + [len(r[k]) for r in cells]) for k, (title, _, _) in enumerate(columns)]
    def line(values: list[str]) -> str:
        return "  ".join(f"{v:{align}{w}}" for v, w, (_, _, align) in zip(values, widths, columns)).rstrip()
    return "\n".join([line([title for title, _, _ in columns])] + [line(r) for r in cells])


def to_text(data: dict[str, Any]) -> str:
    """The summary for people: per host its balancer counters and VM table, then decisions."""
    out = [f"{data['events']} events applied, {data['decision_count']} decisions, "
           f"{data['rejected_count']} rejected", ""]
    for host in data["hosts"]:
        b = host["balancer"]
        out.append(f"host {host['host']}  policy {host['policy']}  total {host['total_mib']} MiB  "
                   f"reserve {host['reserve_mib']} MiB")
        out.append(f"  Available Memory {b['available_memory']} MiB  For Balancing "
                   f"{b['available_memory_for_balancing']} MiB  Average Pressure {b['average_pressure']:.1f}%  "
                   f"System Current Pressure {b['system_current_pressure']}%")
        out.append(table(host["vms"]) if host["vms"] else "  (no VMs running)")
        out.append("")
    if "decisions" in data:
        out.append("decisions:")
        for d in data["decisions"]:
            amount = next((f"{k} {d[k]}" for k in ("remove_mib", "return_mib", "add_mib", "paging_mib",
                                                     "backed_mib") if k in d), "")
            out.append(f"  {d['at_ms']} {d['host']}/{d['vm']} #{d['seq']} {d['type']} {amount}"
                       + (f"  ({d['reason']})" if d.get("reason") else ""))
        out.append("")
    if data["rejected"]:
        out.append("rejected:")
        out.extend(f"  line {r['position']}: {r['field']}={r['value']!r}: {r['reason']}" for r in data["rejected"])
    return "\n".join(out).rstrip() + "\n"
