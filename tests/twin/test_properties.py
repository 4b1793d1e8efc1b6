"""Property tests: random event streams, valid or not, never break the invariants."""

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from twin.engine import Twin
from twin.errors import Rejected
from twin.events import (
    POLICY_NAMES,
    BalancerTicked,
    BalloonResponded,
    GuestCapabilities,
    GuestStatusReported,
    HostJoined,
    HostMemoryChanged,
    HotAddResponded,
    MemoryAdditionRequested,
    MemorySettings,
    UnballoonResponded,
    VmRestarted,
    VmSettingsChanged,
    VmStarted,
    VmStopped,
)
from twin.invariants import violations
from twin.log import encode, replay
from twin.state import Col

H = "h"
VMS = ["a", "b", "c", "d"]
MIB = st.integers(min_value=0, max_value=12_000)
RUNNING = st.integers(0, 7)
"""A VM by index: mostly one of those running (index modulo their number), else any name."""


def pick(twin, index):
    running = twin.hosts[H].vms.names
    return running[index % len(running)] if running and index < 6 else VMS[index % len(VMS)]


@st.composite
def settings_(draw):
    minimum = draw(st.integers(32, 2048))
    startup = draw(st.integers(minimum, 4096))
    maximum = draw(st.integers(startup, 12_000))
    return MemorySettings(startup_mib=startup, minimum_mib=minimum, maximum_mib=maximum,
                          buffer_percent=draw(st.integers(5, 2000)), weight=draw(st.integers(0, 10000)),
                          dynamic_memory_enabled=draw(st.booleans()))


START = st.tuples(st.just("start"), st.sampled_from(VMS), settings_(), st.booleans(), st.booleans(),
                  st.sampled_from([1, 2, 128]))
OPS = st.one_of(
    START,
    st.tuples(st.just("stop"), RUNNING),
    st.tuples(st.just("restart"), RUNNING),
    st.tuples(st.just("report"), RUNNING, MIB, st.floats(0, 1.05)),
    st.tuples(st.just("report"), RUNNING, MIB, st.floats(0, 1.0)),
    st.tuples(st.just("report"), RUNNING, MIB, st.floats(0, 1.0)),
    st.tuples(st.just("tick")),
    st.tuples(st.just("tick")),
    st.tuples(st.just("answer"), RUNNING, st.floats(0, 1.2), st.sampled_from([0, 0, 0, 0, 1, -1]),
              st.sampled_from(["success", "success", "transient_failure", "permanent_failure"])),
    st.tuples(st.just("answer"), RUNNING, st.just(1.0), st.just(0), st.just("success")),
    st.tuples(st.just("change"), RUNNING, st.one_of(st.none(), st.integers(32, 4096)),
              st.one_of(st.none(), st.integers(1, 12_000)), st.one_of(st.none(), st.integers(5, 2000))),
    st.tuples(st.just("host"), st.integers(4096, 20_000), st.integers(0, 2048)),
)


def to_event(op, twin, at):
    kind = op[0]
    if kind == "start":
        _, vm, s, balloon, hot_add, align = op
        return VmStarted(at_ms=at, host=H, vm=vm, settings=s,
                         capabilities=GuestCapabilities(balloon=balloon, hot_add=hot_add, hot_add_alignment_mib=align))
    if kind == "stop":
        return VmStopped(at_ms=at, host=H, vm=pick(twin, op[1]))
    if kind == "restart":
        return VmRestarted(at_ms=at, host=H, vm=pick(twin, op[1]))
    if kind == "report":
        vm = pick(twin, op[1])
        visible = twin.hosts[H].vm(vm).visible_mib if vm in twin.hosts[H].vms else 1000
        return GuestStatusReported(at_ms=at, host=H, vm=vm, committed_mib=op[2],
                                   available_mib=int(visible * op[3]))
    if kind == "tick":
        return BalancerTicked(at_ms=at, host=H)
    if kind == "answer":
        _, index, fraction, seq_shift, result = op
        state = twin.hosts[H]
        waiting = [n for n in state.vms.names if state.vms.data[state.vms.index[n], Col.PENDING]]
        vm = waiting[index % len(waiting)] if waiting and index < 6 else pick(twin, index)
        i = state.vms.index.get(vm)
        pending, seq, amount = (0, 1, 0) if i is None else (int(state.vms.data[i, Col.PENDING]),
                                                            int(state.vms.data[i, Col.PENDING_SEQ]),
                                                            int(state.vms.data[i, Col.PENDING_MIB]))
        seq = max(1, seq + seq_shift)
        part = int(amount * fraction)
        if pending == 1:
            return BalloonResponded(at_ms=at, host=H, vm=vm, seq=seq, released_mib=part)
        if pending == 2:
            return UnballoonResponded(at_ms=at, host=H, vm=vm, seq=seq)
        return HotAddResponded(at_ms=at, host=H, vm=vm, seq=seq, added_mib=part, result=result)
    if kind == "change":
        _, index, minimum, maximum, buffer = op
        vm = pick(twin, index)
        if minimum is None and maximum is None and buffer is None:
            buffer = 20
        return VmSettingsChanged(at_ms=at, host=H, vm=vm, minimum_mib=minimum, maximum_mib=maximum,
                                 buffer_percent=buffer)
    return HostMemoryChanged(at_ms=at, host=H, total_mib=op[1] + op[2] + 1, reserve_mib=op[2])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(total=st.integers(4096, 20_000), policy=st.sampled_from(POLICY_NAMES), starts=st.lists(START, min_size=1, max_size=4),
       ops=st.lists(OPS, min_size=30, max_size=200))
def test_random_streams_keep_every_invariant(total, policy, starts, ops):
    ops = starts + ops
    twin = Twin()
    joined = HostJoined(at_ms=0, host=H, total_mib=total, reserve_mib=512, policy=policy)
    twin.apply(joined)
    log = [encode(joined)]
    seen_visible: dict[str, int] = {}
    counters: dict[str, tuple] = {}
    at = 0
    for op in ops:
        at += 2000
        event = to_event(op, twin, at)
        before = twin.hosts[H].to_dict()
        try:
            decisions = twin.handle(event)
        except Rejected as error:
            assert error.field and error.reason
            assert twin.hosts[H].to_dict() == before, "a rejected event must change nothing"
            continue
        log.append(encode(event))
        log.extend(encode(d) for d in decisions)
        state = twin.hosts[H]
        assert violations(state) == []
        for d in decisions:
            if isinstance(d, MemoryAdditionRequested):
                assert state.vm(d.vm).can_hot_add
        for record in state.records():
            name = record.name
            restarted = isinstance(event, (VmRestarted, VmStarted)) and event.vm == name
            if name in seen_visible and not restarted:
                assert record.visible_mib >= seen_visible[name], "visible memory fell while running"
                assert (record.added_mib, record.removed_mib, record.add_operations,
                        record.remove_operations) >= counters[name]
                old = counters[name]
                assert record.added_mib >= old[0] and record.removed_mib >= old[1]
                assert record.add_operations >= old[2] and record.remove_operations >= old[3]
            seen_visible[name] = record.visible_mib
            counters[name] = (record.added_mib, record.removed_mib, record.add_operations,
                              record.remove_operations)
        for gone in set(seen_visible) - set(state.vms.names):
            del seen_visible[gone], counters[gone]
    result = replay(log)
    assert result.rejected == []
    assert result.twin.hosts[H].to_dict() == twin.hosts[H].to_dict(), "replay must rebuild the state"


WORKLOADS = st.one_of(
    st.builds(lambda m: {"kind": "steady", "mib": m}, st.integers(100, 9000)),
    st.builds(lambda m: {"kind": "idle", "mib": m}, st.integers(100, 800)),
    st.builds(lambda b, a, p: {"kind": "diurnal", "base_mib": b, "amplitude_mib": a, "period_s": p},
              st.integers(1000, 5000), st.integers(0, 1000), st.integers(20, 200)),
    st.builds(lambda b, x: {"kind": "bursty", "base_mib": b, "burst_mib": x, "bursts_per_hour": 300, "burst_s": 20},
              st.integers(200, 3000), st.integers(0, 5000)),
    st.builds(lambda s, p: {"kind": "boot_storm", "peak_mib": p, "steady_mib": s, "decay_s": 20},
              st.integers(200, 1000), st.integers(1000, 6000)),
)


@st.composite
def vm_specs(draw, index):
    minimum = draw(st.integers(256, 1024))
    startup = draw(st.integers(minimum, 4096))
    return {
        "name": f"vm{index}", "startup_mib": startup, "minimum_mib": minimum,
        "maximum_mib": draw(st.integers(startup, 10_000)), "weight": draw(st.integers(0, 10000)),
        "buffer_percent": draw(st.sampled_from([5, 20, 50, 200])),
        "dynamic_memory": draw(st.sampled_from([True] * 4 + [False])),
        "guest": {"os": draw(st.sampled_from(["linux", "windows"])), "hot_add": draw(st.booleans()),
                  "refuses_requests": draw(st.sampled_from([False] * 5 + [True]))},
        "workload": draw(WORKLOADS),
        "restart_at_s": draw(st.lists(st.integers(1, 119), max_size=2)),
        "stop_at_s": draw(st.one_of(st.none(), st.integers(60, 119))),
    }


@st.composite
def scenarios(draw):
    from twin.scenario import Scenario

    count = draw(st.integers(1, 6))
    return Scenario.model_validate({
        "seed": draw(st.integers(0, 1000)), "duration_s": 120,
        "hosts": [{"name": H, "total_mib": draw(st.integers(6144, 24_576)), "reserve_mib": 1024,
                   "policy": draw(st.sampled_from(POLICY_NAMES)),
                   "vms": [draw(vm_specs(i)) for i in range(count)]}],
    })


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario=scenarios())
def test_simulated_fleets_keep_every_invariant_and_replay_exactly(scenario):
    from twin.scenario import simulate

    twin = Twin()
    log = []
    for event in simulate(scenario, twin=twin, rejected=[]):
        log.append(encode(event))
        assert violations(twin.hosts[H]) == []
    again = [encode(e) for e in simulate(scenario, rejected=[])]
    assert again == log, "the same scenario must give the same log, bit for bit"
    result = replay(log)
    assert result.rejected == []
    assert result.twin.hosts[H].to_dict() == twin.hosts[H].to_dict()
