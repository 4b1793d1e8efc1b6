"""``explain``: a VM's state at a moment, the last decision taken for it and the rule and numbers
behind it, in words (``twin.balancer.assess`` on the state the round saw)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .audit import describe_decision, format_time, is_decision
from .balancer import Assessment, assess
from .engine import Twin
from .errors import Rejected
from .events import (
    BalloonTargetSet,
    Decision,
    InputEvent,
    MemoryAdditionRequested,
    SmartPagingEnded,
    SmartPagingStarted,
    UnballoonRequested,
    VmRestarted,
    flatten,
)
from .log import decode
from .state import NO_DATA, Col, HostState, Pending, VmRecord

__all__ = ["Explanation", "explain"]



@dataclass
class Explanation:
    """One VM at one moment: its state, its host's, its last decision and why, in words."""

    vm: str
    at_ms: int
    host: str | None = None
    record: VmRecord | None = None
    host_facts: dict[str, Any] = field(default_factory=dict)
    decision: Decision | None = None
    decision_facts: dict[str, Any] = field(default_factory=dict)
    """The numbers of the rule that took ``decision``."""
    latest_round_facts: dict[str, Any] = field(default_factory=dict)
    """The numbers of the latest round, when it came after the decision and decided nothing."""
    words: list[str] = field(default_factory=list)

    def to_text(self) -> str:
        return "\n".join(self.words) + "\n"

    def to_dict(self) -> dict[str, Any]:
        return {"vm": self.vm, "at_ms": self.at_ms, "at": format_time(self.at_ms), "host": self.host,
                "state": self.record.__dict__ if self.record else None, "host_state": self.host_facts,
                "decision": self.decision.model_dump(mode="json") if self.decision else None,
                "why": self.decision_facts, "latest_round": self.latest_round_facts, "text": self.words}


@dataclass
class _Round:
    at_ms: int
    state: HostState


def explain(lines: Iterable[str | bytes], vm: str, at_ms: int, host: str | None = None) -> Explanation:
    """Replay ``lines`` up to ``at_ms`` and explain ``vm`` (on ``host``, or wherever it last started)."""
    out = Explanation(vm, at_ms, host)
    twin = Twin()
    before: dict[str, _Round] = {}  # state of each host before its latest round's decisions
    decided_in: _Round | None = None
    restart: tuple[int, int, int] | None = None  # (at_ms, assigned before, free before) of the last restart
    last_round: _Round | None = None
    for position, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            entry = decode(line, position)
        except Rejected:
            continue
        if entry.at_ms > at_ms or (host is not None and entry.host != host):
            continue
        for event in flatten(entry):
            found = _follow(out, twin, event, before, restart)
            if found is not None:
                restart, last_round = found[0], found[1] or last_round
                if found[2] is not None:
                    decided_in = found[2] or None
    _describe(out, twin, decided_in, last_round, restart)
    return out


def _follow(out: Explanation, twin: Twin, event: InputEvent | Decision, before: dict[str, _Round],
            restart: tuple[int, int, int] | None
            ) -> tuple[tuple[int, int, int] | None, _Round | None, _Round | bool | None] | None:
    """Fold one event for ``explain``: (the last restart, the host's latest round if this is one,
    the round of the VM's decision if this is one: False when not known); None if it did not apply."""
    vm = out.vm
    state = twin.hosts.get(event.host)
    if isinstance(event, VmRestarted) and event.vm == vm and state is not None and vm in state.vms:
        restart = (event.at_ms, int(state.vms.data[state.vms.index[vm], Col.ASSIGNED]), state.free_mib())
    try:
        twin.apply(event)
    except Rejected:
        return None
    state = twin.hosts[event.host]
    last_round, decided_in = None, None
    if event.type == "vm.started" and getattr(event, "vm", None) == vm:
        out.host = event.host
    if event.type == "balancer.tick" and vm in state.vms:
        before[event.host] = _Round(event.at_ms, state.copy())
        if event.host == out.host:
            last_round = before[event.host]
    if is_decision(event) and event.vm == vm and event.host == (out.host or event.host):
        out.host = event.host
        out.decision = event
        round_ = before.get(event.host)
        decided_in = round_ if round_ is not None and round_.at_ms == event.at_ms else False
    return restart, last_round, decided_in


def _describe(out: Explanation, twin: Twin, decided_in: _Round | None, last_round: _Round | None,
              restart: tuple[int, int, int] | None) -> None:
    words = out.words
    state = twin.hosts.get(out.host) if out.host else None
    if state is None or out.vm not in state.vms:
        where = f" on host {out.host}" if out.host else ""
        words.append(f"At {format_time(out.at_ms)} VM {out.vm} was not running{where}.")
        if out.decision is not None:
            words.append(f"Its last decision was {describe_decision(out.decision)} at "
                         f"{format_time(out.decision.at_ms)}.")
        return
    r = out.record = state.vm(out.vm)
    out.host_facts = {"host": state.name, "policy": state.policy, "total_mib": state.total_mib,
                      "reserve_mib": state.reserve_mib, "free_mib": state.free_mib(),
                      "vms": len(state.vms)}
    words.append(f"At {format_time(out.at_ms)} ({out.at_ms}) VM {r.name} on host {state.name} "
                 f"(policy {state.policy}):")
    demand = "no status report yet" if r.demand_mib is None else f"demand {r.demand_mib} MiB"
    pressure = "" if r.pressure_current is None else f", pressure {r.pressure_current}%"
    words.append(f"  {r.assigned_mib} MiB assigned, {demand}{pressure}, status {r.status or 'blank'}; "
                 f"the guest sees {r.visible_mib} MiB, {r.balloon_mib} MiB of it in the balloon"
                 + (f", {r.smart_paging_mib} MiB in the Smart Paging file" if r.smart_paging_mib else "") + ".")
    words.append(f"  Settings: Minimum {r.minimum_mib}, Startup {r.startup_mib}, Maximum {r.maximum_mib} MiB, "
                 f"buffer {r.buffer_percent}%, weight {r.weight}; Dynamic Memory "
                 f"{'on' if r.dynamic_memory_enabled else 'off'}; the guest "
                 f"{'can' if r.can_balloon else 'cannot'} balloon and "
                 f"{'can' if r.can_hot_add and not r.hot_add_blocked else 'cannot'} take hot-added memory"
                 + (f" (alignment {r.hot_add_alignment_mib} MiB)" if r.can_hot_add else "") + ".")
    if r.pending != "none":
        words.append(f"  Waiting for the guest's answer to {r.pending} #{r.pending_seq} ({r.pending_mib} MiB).")
    words.append(f"  Host: {state.total_mib} MiB, {state.reserve_mib} MiB reserved for the parent partition, "
                 f"{state.free_mib()} MiB free for VMs, {len(state.vms)} VM{'s' if len(state.vms) != 1 else ''} running.")
    d = out.decision
    if d is None:
        words.append("No decision was taken for this VM up to then.")
    else:
        words.append(f"Last decision: {describe_decision(d)} at {format_time(d.at_ms)}"
                     + (f" ({reason})." if (reason := getattr(d, "reason", "")) else "."))
        if isinstance(d, SmartPagingStarted):
            out.decision_facts = _smart_paging_words(words, d, restart)
        elif decided_in is not None:
            out.decision_facts = _round_words(words, out.vm, decided_in, d)
    if last_round is not None and (d is None or last_round.at_ms > d.at_ms):
        words.append(f"The latest round at {format_time(last_round.at_ms)} decided nothing for it:")
        out.latest_round_facts = _round_words(words, out.vm, last_round, None)


def _smart_paging_words(words: list[str], d: SmartPagingStarted, restart: tuple[int, int, int] | None
                        ) -> dict[str, Any]:
    if restart is None:
        return {}
    _, assigned, free = restart
    words.append(f"  Why: the VM restarted and boots with Startup RAM, but it held {assigned} MiB and "
                     f"the host had only {free} MiB free, so {d.paging_mib} MiB were backed by the Smart "
                     "Paging file (used only on restart when memory cannot be found, DOMAIN.md §1.6).")
    return {"rule": "smart paging", "assigned_before_mib": assigned, "free_mib": free, "paging_mib": d.paging_mib}


def _round_words(words: list[str], vm: str, round_: _Round, decision: Decision | None) -> dict[str, Any]:
    """Say how the round at ``round_`` treated ``vm``; return its numbers."""
    state = round_.state
    a = assess(state, round_.at_ms)
    row = state.vms.data[state.vms.index[vm]]
    if isinstance(decision, SmartPagingEnded):
        words.append(f"  Why: {decision.backed_mib} MiB of the VM were in the Smart Paging file and the host had "
                     f"{a.free_mib + decision.backed_mib} MiB free, enough to back them with RAM.")
        return {"rule": "smart paging ended", "backed_mib": decision.backed_mib}
    where = np.flatnonzero(a.idx == state.vms.index[vm])
    if a.snapshot is None or len(where) == 0:
        words.append("  Why: the round left the VM alone: " + _ineligible(row))
        return {"rule": "left alone", "why": _ineligible(row)}
    k = int(where[0])
    s, p = a.snapshot, a.params
    demand, assigned = int(s.demand[k]), int(s.assigned[k])
    buffer, lower, upper = int(s.buffer_percent[k]), int(s.lower[k]), int(s.upper[k])
    wanted = -(-demand * (100 + buffer) // 100)
    ideal = int(s.ideal()[k])
    target, delta = int(a.target[k]), int(a.target[k]) - assigned
    pressure = int(a.pressure[k])
    short = demand > assigned
    grow_band = p.grow_deadband_mib if short else int(a.grow_band[k])
    facts: dict[str, Any] = {
        "demand_mib": demand, "assigned_mib": assigned, "pressure_percent": pressure, "buffer_percent": buffer,
        "demand_with_buffer_mib": wanted, "lower_mib": lower, "upper_mib": upper, "ideal_mib": ideal,
        "policy": a.policy, "target_mib": target, "delta_mib": delta, "free_mib": a.free_mib,
        "budget_mib": s.budget_mib, "wanted_growth_mib": int(a.want.sum()), "host_short": a.host_short,
        "weight": int(s.weight[k]), "grow_band_mib": grow_band, "shrink_band_mib": int(a.shrink_band[k]),
    }
    words.append(f"  Round at {format_time(round_.at_ms)}: demand {demand} MiB, assigned {assigned} MiB: pressure "
                 f"{pressure}% ({'short of memory: the guest pages' if short else 'enough memory'}).")
    words.append(f"  Ideal = demand × (1 + {buffer}% buffer) = {wanted} MiB, kept within "
                 f"[{lower}, {upper}] MiB ({_bounds(row, lower, upper, round_.at_ms)}) → {ideal} MiB.")
    words.append(f"  Host: {a.free_mib} MiB free; the VMs this round may move could hold {s.budget_mib} MiB "
                 f"together and would want {int(s.ideal().sum())} MiB at their ideal. {_policy_words(a, k)}")
    words.append(f"  Target {target} MiB, {'+' if delta >= 0 else ''}{delta} MiB from now. Growth needs at least "
                 f"{grow_band} MiB{' (the guest is short, so the small band)' if short else ''}; removal at least "
                 f"{int(a.shrink_band[k])} MiB and "
                 + ("the host short, or a surplus lasting "
                    f"{p.reclaim_after_ms // 1000} s (Hyper-V reclaims late)" if p.reclaim_after_ms else
                    "no waiting under this policy") + ".")
    growing = a.order[a.want[a.order] > 0]
    if isinstance(decision, (UnballoonRequested, MemoryAdditionRequested)):
        rank = int(np.flatnonzero(growing == k)[0]) + 1 if k in growing else 0
        ballooned = int(row[Col.VISIBLE] - row[Col.ASSIGNED] - row[Col.PAGING])
        how = (f"ballooned memory goes back first: {ballooned} MiB were in the balloon, so it unballooned "
               f"{decision.return_mib} MiB" if isinstance(decision, UnballoonRequested) else
               f"nothing was in the balloon, so it hot-added {decision.add_mib} MiB in multiples of the "
               f"{int(row[Col.ALIGNMENT])} MiB alignment (at most {p.max_add_mib} MiB at once)")
        words.append(f"  Decision: grow. The host was {'short: ' if a.host_short else 'not short: '}the VM came "
                     f"{rank} of {len(growing)} in growth order (weight {int(s.weight[k])}, then pressure); "
                     f"{how}.")
        facts.update(rule="grow", rank=rank, growing=len(growing), ballooned_mib=ballooned)
    elif isinstance(decision, BalloonTargetSet):
        why = ("the host was short" if a.host_short else
               "the surplus had lasted" if bool(a.lasted[k]) else "this policy reclaims at once")
        words.append(f"  Decision: shrink, because {why}: balloon {decision.remove_mib} MiB (2 MiB units, at most "
                     f"{p.max_balloon_mib} MiB at once), down to {decision.target_mib} MiB.")
        facts.update(rule="shrink", reclaim_reason=why)
    elif decision is None:
        if delta > 0 and not bool(a.grow[k]):
            words.append(f"  Nothing: the gap of {delta} MiB is inside the growth dead band ({grow_band} MiB).")
        elif delta > 0:
            words.append("  Nothing: it wanted to grow, but the free memory went to VMs before it in growth order.")
        elif delta < 0 and -delta < int(a.shrink_band[k]):
            words.append(f"  Nothing: the surplus of {-delta} MiB is inside the removal dead band.")
        elif delta < 0:
            words.append("  Nothing: the surplus is recent and the host is not short (reclaimed only after "
                         f"{p.reclaim_after_ms // 1000} s).")
        else:
            words.append("  Nothing: it is at its target.")
        facts["rule"] = "nothing"
    return facts


def _ineligible(row: np.ndarray) -> str:
    if row[Col.PENDING] != Pending.NONE:
        return (f"it was waiting for the guest's answer to {Pending(int(row[Col.PENDING])).name.lower()} "
                f"#{int(row[Col.PENDING_SEQ])} (one request in flight per VM).")
    if not row[Col.DM_ENABLED]:
        return "Dynamic Memory is off for it."
    if row[Col.DEMAND] == NO_DATA:
        return "the guest had not reported its memory yet."
    return "its Smart Paging file was being ended."


def _bounds(row: np.ndarray, lower: int, upper: int, at_ms: int) -> str:
    low = "Minimum"
    if not row[Col.CAN_BALLOON]:
        low = "no balloon: never below what it has"
    elif row[Col.FLOOR_UNTIL] > at_ms and row[Col.FLOOR] == lower:
        low = f"the guest refused to balloon below {lower} MiB, held until {format_time(int(row[Col.FLOOR_UNTIL]))}"
    if not row[Col.CAN_HOT_ADD] or row[Col.HOT_ADD_BLOCKED]:
        high = "no hot-add: at most the memory the guest has seen"
    elif row[Col.RETRY_AT] > at_ms:
        high = f"hot-add failed for now: retry at {format_time(int(row[Col.RETRY_AT]))}"
    else:
        high = "Maximum"
    return f"low: {low}; high: {high}"


def _policy_words(a: Assessment, k: int) -> str:
    s = a.snapshot
    assert s is not None
    if a.policy == "hyperv":
        ideal = s.ideal()
        need = np.clip(s.demand, s.lower, s.upper)
        if ideal.sum() <= s.budget_mib:
            return "Every VM's ideal fits: hyperv aims at the ideal."
        if need.sum() <= s.budget_mib:
            return ("Not every buffer fits: hyperv gives each VM its demand and shares the rest of the buffers "
                    f"by weight ({int(s.weight[k])} here).")
        return ("Not even every demand fits: hyperv gives each VM its Minimum and shares the rest by weight "
                f"({int(s.weight[k])} here).")
    if a.policy == "squeezed":
        return "squeezed gives every VM the same fraction of its range between Minimum and Maximum."
    if a.policy == "mom":
        return ("mom shrinks every VM by up to 5% a round while the host has less than 20% free, else grows by "
                "up to 5%.")
    return "esx shares memory by shares per active page, taxing idle memory (75%)."
