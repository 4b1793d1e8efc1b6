"""The fold: how each event changes one host's state, and which events it refuses.

``apply(state, event)`` validates an event against the host's state and then changes the state in
place. It raises ``Rejected`` (naming the field and the value) before changing anything, so a refused
event leaves no trace. Decisions are folded exactly like inputs: replaying a log is applying it.
"""

from __future__ import annotations

from typing import Callable, Sequence

from . import frames
from .errors import Rejected
from .requests import fold_requests
from .events import (
    BalancerRound,
    BalancerTicked,
    BalloonResponded,
    BalloonTargetSet,
    GuestStatusReported,
    HostMemoryChanged,
    HotAddResponded,
    MemoryAdditionRequested,
    SmartPagingEnded,
    SmartPagingStarted,
    StatusFrame,
    UnballoonRequested,
    UnballoonResponded,
    VmRestarted,
    VmSettingsChanged,
    VmStarted,
    VmStopped,
)
from .state import (
    NO_DATA,
    PRESSURE_WINDOW,
    Col,
    HostState,
    Pending,
    ideal_mib,
    pressure_percent,
)

__all__ = ["apply", "apply_frame", "check_clock", "fold_round", "HOT_ADD_RETRY_MS", "FLOOR_HOLD_MS", "SURPLUS_SLACK_PERCENT"]

HOT_ADD_RETRY_MS = 30_000
"""After a transient hot-add failure (result 0, DOMAIN.md §2.4) the host waits this long to retry."""

FLOOR_HOLD_MS = 60_000
"""After a short balloon answer the balancer asks no lower for this long: the guest's floor depends
on what it runs at the time (hv_balloon.c compares its available memory with the floor)."""

SURPLUS_SLACK_PERCENT = frames.SURPLUS_SLACK_PERCENT


_NONE, _BALLOON, _UNBALLOON, _HOT_ADD = (int(k) for k in (Pending.NONE, Pending.BALLOON, Pending.UNBALLOON,
                                                          Pending.HOT_ADD))
"""The kinds of transaction as plain ints: an enum member costs a slow attribute lookup each time."""


def apply(state: HostState, event: object) -> None:
    """Fold one event into ``state``; raise ``Rejected`` and change nothing if it is not valid."""
    handler = _HANDLERS.get(type(event))
    if handler is None:
        raise Rejected("type", getattr(event, "type", type(event).__name__),
                       f"not an event of host {state.name!r}")
    handler(state, event)


def _row(state: HostState, event: object, *, in_order: bool = True) -> int:
    """Row of the event's VM, after checking it runs and, if ``in_order``, that its time does not
    go backwards. Events that may arrive late (reports, answers) pass ``in_order=False``; they
    must still come after the VM's (re)start."""
    name: str = getattr(event, "vm")
    i = state.vms.index.get(name)
    if i is None:
        raise Rejected("vm", name, f"no such VM running on host {state.name!r}")
    at_ms: int = getattr(event, "at_ms")
    row = state.vms.data[i]
    started = int(row[Col.STARTED_AT])
    if at_ms < started:
        raise Rejected("at_ms", at_ms, f"time goes backwards for VM {name!r}: before its start at {started}")
    last = int(row[Col.LAST_AT])
    if in_order and at_ms < last:
        raise Rejected("at_ms", at_ms, f"time goes backwards for VM {name!r} (last event at {last})")
    return i


def check_clock(state: HostState, at_ms: int) -> None:
    """Refuse an event of the host at ``at_ms`` if it is behind the host's clock."""
    if at_ms < state.last_at_ms:
        raise Rejected("at_ms", at_ms,
                       f"time goes backwards for host {state.name!r} (last event at {state.last_at_ms})")


# --- host and VM lifecycle -----------------------------------------------------------------------


def _host_memory_changed(state: HostState, event: HostMemoryChanged) -> None:
    check_clock(state, event.at_ms)
    committed = state.committed_mib()
    if event.total_mib - event.reserve_mib < committed:
        raise Rejected("total_mib", event.total_mib,
                       f"total − reserve = {event.total_mib - event.reserve_mib} MiB is less than the "
                       f"{committed} MiB already assigned to VMs")
    state.total_mib, state.reserve_mib, state.last_at_ms = event.total_mib, event.reserve_mib, event.at_ms


def _balancer_ticked(state: HostState, event: BalancerTicked) -> None:
    check_clock(state, event.at_ms)
    state.last_at_ms = state.last_round_ms = event.at_ms


def _vm_started(state: HostState, event: VmStarted) -> None:
    if event.vm in state.vms:
        raise Rejected("vm", event.vm, "VM is already running")
    settings, caps = event.settings, event.capabilities
    free = state.free_mib()
    if settings.startup_mib > free:
        # A cold start gets no Smart Paging (DOMAIN.md §1.6): Hyper-V refuses to start the VM.
        raise Rejected("settings.startup_mib", settings.startup_mib,
                       f"host {state.name!r} has only {free} MiB available for VMs")
    i = state.vms.add(event.vm)
    row = state.vms.data[i]
    row[Col.STARTUP] = settings.startup_mib
    row[Col.MINIMUM] = settings.minimum_mib
    row[Col.MAXIMUM] = settings.maximum_mib
    row[Col.BUFFER_PERCENT] = settings.buffer_percent
    row[Col.WEIGHT] = settings.weight
    row[Col.DM_ENABLED] = settings.dynamic_memory_enabled
    row[Col.CAN_BALLOON] = caps.balloon
    row[Col.CAN_HOT_ADD] = caps.hot_add
    row[Col.ALIGNMENT] = caps.hot_add_alignment_mib
    row[Col.ASSIGNED] = row[Col.VISIBLE] = settings.startup_mib
    row[Col.DEMAND] = row[Col.COMMITTED] = row[Col.AVAILABLE] = NO_DATA
    row[Col.SURPLUS_SINCE] = NO_DATA
    row[Col.LAST_AT] = row[Col.STARTED_AT] = event.at_ms
    state.last_seq.setdefault(event.vm, 0)


def _vm_stopped(state: HostState, event: VmStopped) -> None:
    _row(state, event)
    state.vms.remove(event.vm)


def _vm_restarted(state: HostState, event: VmRestarted) -> None:
    """The guest boots again with Startup RAM. Memory above Startup goes back to the host; a VM
    below Startup takes what is free, and the rest is bridged by Smart Paging (§1.6), which the
    engine then records as a decision. Any transaction in flight dies with the old boot."""
    i = _row(state, event)
    row = state.vms.data[i]
    startup = int(row[Col.STARTUP])
    assigned = int(row[Col.ASSIGNED])
    row[Col.PENDING] = _NONE
    row[Col.PENDING_SEQ] = row[Col.PENDING_MIB] = row[Col.PENDING_AT] = 0
    if assigned >= startup:
        released = assigned - startup
        row[Col.ASSIGNED] = startup
        row[Col.REMOVED] += released
        row[Col.REMOVE_OPS] += released > 0
        row[Col.PAGING] = 0
    else:
        grant = min(startup - assigned, state.free_mib())
        row[Col.ASSIGNED] = assigned + grant
        row[Col.ADDED] += grant
        row[Col.ADD_OPS] += grant > 0
        row[Col.PAGING] = startup - assigned - grant
    row[Col.VISIBLE] = startup
    row[Col.DEMAND] = row[Col.COMMITTED] = row[Col.AVAILABLE] = NO_DATA
    row[Col.FLOOR] = row[Col.FLOOR_UNTIL] = row[Col.HOT_ADD_BLOCKED] = row[Col.RETRY_AT] = 0
    row[Col.SURPLUS_SINCE] = NO_DATA
    row[Col.LAST_AT] = row[Col.STARTED_AT] = event.at_ms


def _vm_settings_changed(state: HostState, event: VmSettingsChanged) -> None:
    """Runtime changes follow Hyper-V (§1.1): Maximum may only rise and Minimum only fall while the
    VM runs; buffer and weight may change any time; Minimum and Maximum need Dynamic Memory."""
    i = _row(state, event)
    row = state.vms.data[i]
    if (event.minimum_mib is not None or event.maximum_mib is not None) and not row[Col.DM_ENABLED]:
        field = "minimum_mib" if event.minimum_mib is not None else "maximum_mib"
        raise Rejected(field, getattr(event, field), "Dynamic Memory is off for this VM")
    if event.minimum_mib is not None and event.minimum_mib > row[Col.MINIMUM]:
        raise Rejected("minimum_mib", event.minimum_mib,
                       f"Minimum RAM may only be lowered while the VM runs (now {int(row[Col.MINIMUM])})")
    if event.maximum_mib is not None and event.maximum_mib < row[Col.MAXIMUM]:
        raise Rejected("maximum_mib", event.maximum_mib,
                       f"Maximum RAM may only be raised while the VM runs (now {int(row[Col.MAXIMUM])})")
    for value, col in ((event.minimum_mib, Col.MINIMUM), (event.maximum_mib, Col.MAXIMUM),
                       (event.buffer_percent, Col.BUFFER_PERCENT), (event.weight, Col.WEIGHT)):
        if value is not None:
            row[col] = value
    row[Col.LAST_AT] = event.at_ms


# --- the guest's reports and answers -------------------------------------------------------------


def _status_reported(state: HostState, event: GuestStatusReported) -> None:
    """Demand is the guest's committed memory less its ballooned pages: guests count the pages
    they hold in the balloon as committed (Linux adds them explicitly: "the host expects the
    pressure information to include the ballooned out pages", hv_balloon.c, DOMAIN.md S10)."""
    i = _row(state, event, in_order=False)
    row = state.vms.data[i]
    if event.at_ms < row[Col.LAST_AT]:
        # Arrived late (another topic, an outage): folding it in event-time order would leave the
        # VM as its newer events made it, so it changes nothing.
        return
    visible = int(row[Col.VISIBLE])
    if event.available_mib > visible:
        raise Rejected("available_mib", event.available_mib,
                       f"more than the {visible} MiB the guest can see")
    assigned = int(row[Col.ASSIGNED])
    ballooned = visible - assigned - int(row[Col.PAGING])
    demand = max(0, event.committed_mib - ballooned)
    row[Col.COMMITTED] = event.committed_mib
    row[Col.AVAILABLE] = event.available_mib
    row[Col.DEMAND] = demand
    pressure = pressure_percent(demand, assigned)
    count = int(row[Col.PRESSURE_COUNT])
    ring = state.vms.history[i]
    slot = count % PRESSURE_WINDOW
    if count >= PRESSURE_WINDOW:
        row[Col.PRESSURE_SUM] -= ring[slot]
    ring[slot] = pressure
    row[Col.PRESSURE_SUM] += pressure
    row[Col.PRESSURE_COUNT] = count + 1
    ideal = ideal_mib(demand, int(row[Col.BUFFER_PERCENT]), int(row[Col.MINIMUM]), int(row[Col.MAXIMUM]))
    if 100 * assigned > (100 + SURPLUS_SLACK_PERCENT) * ideal:
        if row[Col.SURPLUS_SINCE] == NO_DATA:
            row[Col.SURPLUS_SINCE] = event.at_ms
    else:
        row[Col.SURPLUS_SINCE] = NO_DATA
    row[Col.LAST_AT] = event.at_ms


def apply_frame(state: HostState, frame: StatusFrame) -> list[tuple[int, Rejected]]:
    """Fold the reports of a frame that the host accepts; return the others, by index in the frame."""
    checked = frames.check(state, frame)
    if checked is not None:
        frames.fold(state, frame, checked)
        return checked.rejected
    rejected = []
    for k, report in enumerate(frame.report_events()):
        try:
            _status_reported(state, report)
        except Rejected as error:
            rejected.append((k, error))
    return rejected


def _status_frame(state: HostState, frame: StatusFrame) -> None:
    """A frame from the log: all of its reports are accepted, or it is refused as a whole."""
    if frame.balanced:  # its round's tick must be in order too, before anything folds
        check_clock(state, frame.at_ms)
    checked = frames.check(state, frame)
    if checked is None:
        seen: set[str] = set()
        twice = next(r.vm for r in frame.reports if r.vm in seen or seen.add(r.vm))  # type: ignore[func-returns-value]
        raise Rejected("reports.vm", twice, "reported twice in one frame")
    if checked.rejected:
        k, error = checked.rejected[0]
        raise Rejected(f"reports.{k}.{error.field}", error.value, error.reason)
    frames.fold(state, frame, checked)
    if frame.balanced:  # its round ran right after and decided nothing
        _balancer_ticked(state, BalancerTicked(at_ms=frame.at_ms, host=frame.host))


def _balancer_round(state: HostState, entry: BalancerRound) -> None:
    """A round from the log: its tick, then its decisions, all or nothing."""
    check_clock(state, entry.at_ms)
    if not entry.decisions:
        state.last_at_ms = state.last_round_ms = entry.at_ms
        return
    trial = state.copy()
    fold_round(trial, entry.at_ms, entry.decisions)
    state.__dict__.update(trial.__dict__)


ROUND_AT_ONCE = 16
"""From this many decisions a round's requests are folded as arrays (``twin.requests``); below it
numpy's per-call cost is more than checking each request in turn. The state is the same."""


def fold_round(state: HostState, at_ms: int, decisions: Sequence[object]) -> None:
    """A balancing round at ``at_ms`` and its decisions (a refusal names the decision's index).

    Counts the host's available memory down as additions are promised, rather than summing the
    VM table again for each decision."""
    check_clock(state, at_ms)
    state.last_at_ms = state.last_round_ms = at_ms
    if len(decisions) >= ROUND_AT_ONCE and fold_requests(state, at_ms, decisions):
        return
    free = state.free_mib()
    for k, decision in enumerate(decisions):
        kind = type(decision)
        try:
            if kind is UnballoonRequested or kind is MemoryAdditionRequested:
                _HANDLERS[kind](state, decision, free)  # type: ignore[call-arg]
                free -= getattr(decision, "return_mib" if kind is UnballoonRequested else "add_mib")
            else:
                _HANDLERS[kind](state, decision)
                if kind is SmartPagingEnded:
                    free = state.free_mib()
        except Rejected as error:
            raise Rejected(f"decisions.{k}.{error.field}", error.value, error.reason) from None


def _answered(state: HostState, event: BalloonResponded | UnballoonResponded | HotAddResponded,
              kind: int) -> int:
    i = _row(state, event, in_order=False)  # matched by seq: an answer may be folded after newer reports
    row = state.vms.data[i]
    if row[Col.PENDING] != kind or row[Col.PENDING_SEQ] != event.seq:
        in_flight = (f"{Pending(int(row[Col.PENDING])).name.lower()} #{int(row[Col.PENDING_SEQ])}"
                     if row[Col.PENDING] else "nothing")
        raise Rejected("seq", event.seq, f"answers no {Pending(kind).name.lower()} request in flight "
                                         f"(in flight: {in_flight})")
    return i


def _done(row: object) -> None:
    row[Col.PENDING] = _NONE  # type: ignore[index]
    row[Col.PENDING_SEQ] = row[Col.PENDING_MIB] = row[Col.PENDING_AT] = 0  # type: ignore[index]


def _balloon_responded(state: HostState, event: BalloonResponded) -> None:
    """Released pages leave the VM: Smart-Paged pages first, then physical ones. Fewer than asked
    means the guest reached its floor (§2.4); the balancer will not ask below it again."""
    i = _answered(state, event, _BALLOON)
    row = state.vms.data[i]
    asked = int(row[Col.PENDING_MIB])
    if event.released_mib > asked:
        raise Rejected("released_mib", event.released_mib, f"more than the {asked} MiB asked for")
    from_paging = min(int(row[Col.PAGING]), event.released_mib)
    row[Col.PAGING] -= from_paging
    row[Col.ASSIGNED] -= event.released_mib - from_paging
    row[Col.REMOVED] += event.released_mib
    row[Col.REMOVE_OPS] += event.released_mib > 0
    if event.released_mib < asked:
        row[Col.FLOOR] = row[Col.ASSIGNED]
        row[Col.FLOOR_UNTIL] = event.at_ms + FLOOR_HOLD_MS
    _done(row)
    row[Col.LAST_AT] = max(int(row[Col.LAST_AT]), event.at_ms)


def _unballoon_responded(state: HostState, event: UnballoonResponded) -> None:
    i = _answered(state, event, _UNBALLOON)
    row = state.vms.data[i]
    row[Col.ASSIGNED] += row[Col.PENDING_MIB]
    row[Col.ADDED] += row[Col.PENDING_MIB]
    row[Col.ADD_OPS] += 1
    _done(row)
    row[Col.LAST_AT] = max(int(row[Col.LAST_AT]), event.at_ms)


def _hot_add_responded(state: HostState, event: HotAddResponded) -> None:
    """A short answer tells the host future hot-adds will fail; result=permanent stops them for
    good, result=transient means retry later (§1.7, §2.4)."""
    i = _answered(state, event, _HOT_ADD)
    row = state.vms.data[i]
    asked = int(row[Col.PENDING_MIB])
    if event.added_mib > asked:
        raise Rejected("added_mib", event.added_mib, f"more than the {asked} MiB asked for")
    row[Col.ASSIGNED] += event.added_mib
    row[Col.VISIBLE] = max(int(row[Col.VISIBLE]), int(row[Col.ASSIGNED] + row[Col.PAGING]))
    row[Col.ADDED] += event.added_mib
    row[Col.ADD_OPS] += event.added_mib > 0
    if event.result == "transient_failure":
        row[Col.RETRY_AT] = event.at_ms + HOT_ADD_RETRY_MS
    elif event.result == "permanent_failure" or event.added_mib < asked:
        row[Col.HOT_ADD_BLOCKED] = 1
    _done(row)
    row[Col.LAST_AT] = max(int(row[Col.LAST_AT]), event.at_ms)


# --- decisions -------------------------------------------------------------------------------------


def _decided(state: HostState, event: BalloonTargetSet | UnballoonRequested | MemoryAdditionRequested
             | SmartPagingStarted | SmartPagingEnded) -> int:
    i = _row(state, event)
    expected = state.last_seq.get(event.vm, 0) + 1
    if event.seq != expected:
        raise Rejected("seq", event.seq, f"the next decision for VM {event.vm!r} is #{expected}")
    return i


def _start_transaction(state: HostState, event: BalloonTargetSet | UnballoonRequested
                       | MemoryAdditionRequested, kind: int, amount: int) -> None:
    i = _decided(state, event)
    row = state.vms.data[i]
    if row[Col.PENDING]:
        raise Rejected("seq", event.seq, f"VM {event.vm!r} already has a transaction in flight "
                                         f"(#{int(row[Col.PENDING_SEQ])})")
    if not row[Col.DM_ENABLED]:
        raise Rejected("vm", event.vm, "Dynamic Memory is off for this VM")
    row[Col.PENDING] = kind
    row[Col.PENDING_SEQ] = event.seq
    row[Col.PENDING_MIB] = amount
    row[Col.PENDING_AT] = event.at_ms
    row[Col.LAST_AT] = event.at_ms
    state.last_seq[event.vm] = event.seq


def _balloon_target_set(state: HostState, event: BalloonTargetSet) -> None:
    row = state.vms.data[_row(state, event)]
    if not row[Col.CAN_BALLOON]:
        raise Rejected("vm", event.vm, "the guest did not announce balloon support")
    lowest = int(row[Col.MINIMUM])
    physical = max(0, event.remove_mib - int(row[Col.PAGING]))  # Smart-Paged pages go first
    if row[Col.ASSIGNED] - physical < lowest:
        raise Rejected("remove_mib", event.remove_mib, f"would take the VM below Minimum RAM ({lowest} MiB)")
    _start_transaction(state, event, _BALLOON, event.remove_mib)


def _unballoon_requested(state: HostState, event: UnballoonRequested, free: int | None = None) -> None:
    row = state.vms.data[_row(state, event)]
    ballooned = int(row[Col.VISIBLE] - row[Col.ASSIGNED] - row[Col.PAGING])
    if event.return_mib > ballooned:
        raise Rejected("return_mib", event.return_mib, f"the balloon holds only {ballooned} MiB")
    _check_room(state, event.return_mib, "return_mib", free)
    _start_transaction(state, event, _UNBALLOON, event.return_mib)


def _memory_addition_requested(state: HostState, event: MemoryAdditionRequested, free: int | None = None) -> None:
    row = state.vms.data[_row(state, event)]
    if not row[Col.CAN_HOT_ADD] or row[Col.HOT_ADD_BLOCKED]:
        raise Rejected("vm", event.vm, "the guest cannot take hot-added memory")
    if row[Col.ASSIGNED] + row[Col.PAGING] + event.add_mib > row[Col.MAXIMUM]:
        raise Rejected("add_mib", event.add_mib,
                       f"would take the VM above Maximum RAM ({int(row[Col.MAXIMUM])} MiB)")
    _check_room(state, event.add_mib, "add_mib", free)
    _start_transaction(state, event, _HOT_ADD, event.add_mib)


def _check_room(state: HostState, amount: int, field: str, free: int | None = None) -> None:
    """``free``: the host's available memory if the caller knows it (a round keeps count)."""
    if free is None:
        free = state.free_mib()
    if amount > free:
        raise Rejected(field, amount, f"host {state.name!r} has only {free} MiB available")


def _smart_paging_started(state: HostState, event: SmartPagingStarted) -> None:
    i = _decided(state, event)
    row = state.vms.data[i]
    if row[Col.SMART_PAGING] or row[Col.PAGING] != event.paging_mib:
        raise Rejected("paging_mib", event.paging_mib,
                       f"the VM's Startup RAM lacks {int(row[Col.PAGING])} MiB of physical memory")
    row[Col.SMART_PAGING] = 1
    row[Col.LAST_AT] = event.at_ms
    state.last_seq[event.vm] = event.seq


def _smart_paging_ended(state: HostState, event: SmartPagingEnded) -> None:
    i = _decided(state, event)
    row = state.vms.data[i]
    if not row[Col.SMART_PAGING] or row[Col.PAGING] != event.backed_mib:
        raise Rejected("backed_mib", event.backed_mib,
                       f"{int(row[Col.PAGING])} MiB are Smart-Paged, and all must be backed to end it")
    _check_room(state, event.backed_mib, "backed_mib")
    row[Col.ASSIGNED] += event.backed_mib
    row[Col.ADDED] += event.backed_mib
    row[Col.ADD_OPS] += event.backed_mib > 0
    row[Col.PAGING] = 0
    row[Col.SMART_PAGING] = 0
    row[Col.LAST_AT] = event.at_ms
    state.last_seq[event.vm] = event.seq


_HANDLERS: dict[type, Callable[[HostState, object], None]] = {  # type: ignore[dict-item]
    HostMemoryChanged: _host_memory_changed,
    BalancerTicked: _balancer_ticked,
    VmStarted: _vm_started,
    VmStopped: _vm_stopped,
    VmRestarted: _vm_restarted,
    VmSettingsChanged: _vm_settings_changed,
    GuestStatusReported: _status_reported,
    StatusFrame: _status_frame,
    BalancerRound: _balancer_round,
    BalloonResponded: _balloon_responded,
    UnballoonResponded: _unballoon_responded,
    HotAddResponded: _hot_add_responded,
    BalloonTargetSet: _balloon_target_set,
    UnballoonRequested: _unballoon_requested,
    MemoryAdditionRequested: _memory_addition_requested,
    SmartPagingStarted: _smart_paging_started,
    SmartPagingEnded: _smart_paging_ended,
}
