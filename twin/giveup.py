"""Giving up on a guest that keeps freeing nothing, as Xen squeezed does (DOMAIN.md §3.2: a domain
that makes no progress towards its target is declared inactive and the policy works around it).

The shared mechanism (``twin.balancer``) holds a guest's floor for a minute after a short balloon
answer (``twin.host.FLOOR_HOLD_MS``) and then asks again: a guest that frees nothing is re-asked
every 61 s for as long as the run lasts, and the memory the policy counts on from it never comes.
``GiveUp`` wraps any plan: once a guest has answered ``refusals`` balloon requests in a row with
nothing over at least ``after_ms``, its floor is held at what it has for ``for_ms`` — the policy
sees it as unable to shrink and takes the memory from the others; then it is asked again.

The rounds see the state through a copy with those floors set; every decision is one the real
state accepts (a higher floor only removes balloon requests). It is a what-if mechanism (the
twin's own logs are re-derived without it); the engine's owners may fold it into the mechanism.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from .events import BalloonResponded, VmRestarted, VmStarted, VmStopped
from .state import Col, HostState

__all__ = ["GiveUpParams", "GiveUp"]


@dataclass(frozen=True)
class GiveUpParams:
    refusals: int = 3
    """Balloon answers in a row that freed nothing..."""
    after_ms: int = 120_000
    """...over at least this long (three answers 61 s apart: two minutes)..."""
    for_ms: int = 1_800_000
    """...and the guest is left alone this long (30 minutes), then asked again."""


@dataclass
class GiveUp:
    plan_fn: Callable[[HostState, int, str], list[Any]]
    params: GiveUpParams = field(default_factory=GiveUpParams)
    refused: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)
    """(host, VM) → (answers in a row that freed nothing, at_ms of the first of them)."""
    given_up: dict[tuple[str, str], int] = field(default_factory=dict)
    """(host, VM) → until when it is left alone."""

    def watch(self, event: object) -> None:
        """Every folded event goes by here (``twin.study``'s ``on_event``)."""
        if isinstance(event, BalloonResponded):
            key = (event.host, event.vm)
            if event.released_mib:
                self.refused.pop(key, None)
                return
            count, first = self.refused.get(key, (0, event.at_ms))
            count += 1
            self.refused[key] = (count, first)
            p = self.params
            if count >= p.refusals and event.at_ms - first >= p.after_ms and key not in self.given_up:
                self.given_up[key] = event.at_ms + p.for_ms
        elif isinstance(event, (VmStarted, VmRestarted, VmStopped)):
            self.refused.pop((event.host, event.vm), None)
            self.given_up.pop((event.host, event.vm), None)

    def plan(self, state: HostState, at_ms: int, policy: str) -> list[Any]:
        held = []
        for (host, vm), until in list(self.given_up.items()):
            if host != state.name:
                continue
            if until <= at_ms:  # time to ask again, from scratch
                del self.given_up[(host, vm)]
                self.refused.pop((host, vm), None)
            elif vm in state.vms:
                held.append((state.vms.index[vm], until))
        if not held:
            return self.plan_fn(state, at_ms, policy)
        view = state.copy()
        for i, until in held:
            row = view.vms.data[i]
            row[Col.FLOOR] = row[Col.ASSIGNED]
            row[Col.FLOOR_UNTIL] = max(int(row[Col.FLOOR_UNTIL]), until)
        return self.plan_fn(view, at_ms, policy)

    def wake(self, at_ms: int) -> float:
        """When a round must run again to ask a guest given up on (the study's timers)."""
        future = [until for until in self.given_up.values() if until > at_ms]
        return float(min(future)) if future else float("inf")
