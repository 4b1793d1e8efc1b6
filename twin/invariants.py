"""Invariants every host state must keep (DOMAIN.md §5), checked by tests and audits."""

from __future__ import annotations

from .state import Col, HostState, Pending

__all__ = ["violations"]


def violations(state: HostState) -> list[str]:
    """Every broken invariant of ``state``, in words; empty when all hold.

    Per VM: Minimum ≤ assigned + Smart-Paged ≤ Maximum (Smart Paging bridges a restart below
    Minimum, §1.6); a static VM holds exactly Startup; visible ≥ assigned + Smart-Paged; a guest
    without hot-add never sees more than Startup; at most one transaction in flight. Per host:
    Σ assigned + memory promised to additions in flight ≤ total − reserve.
    """
    found = []
    for name in state.vms.names:
        r = state.vms.data[state.vms.index[name]]
        held = int(r[Col.ASSIGNED] + r[Col.PAGING])
        if not r[Col.DM_ENABLED]:
            if r[Col.ASSIGNED] != r[Col.STARTUP]:
                found.append(f"{name}: static memory VM holds {int(r[Col.ASSIGNED])} MiB, not Startup")
            continue
        if not r[Col.MINIMUM] <= held <= r[Col.MAXIMUM]:
            found.append(f"{name}: holds {held} MiB outside [{int(r[Col.MINIMUM])}, {int(r[Col.MAXIMUM])}]")
        if r[Col.VISIBLE] < held:
            found.append(f"{name}: visible {int(r[Col.VISIBLE])} MiB below assigned {held} MiB")
        if not r[Col.CAN_HOT_ADD] and r[Col.VISIBLE] > r[Col.STARTUP]:
            found.append(f"{name}: guest without hot-add sees {int(r[Col.VISIBLE])} MiB > Startup")
        if r[Col.PENDING] not in tuple(Pending):
            found.append(f"{name}: unknown transaction kind {int(r[Col.PENDING])}")
        if r[Col.ASSIGNED] < 0 or r[Col.PAGING] < 0:
            found.append(f"{name}: negative memory")
    committed = state.committed_mib()
    if committed > state.capacity_mib:
        found.append(f"host {state.name}: {committed} MiB committed > total − reserve {state.capacity_mib} MiB")
    return found
