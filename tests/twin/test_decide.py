"""The amounts of a round's growth, computed for all VMs at once, are those of counting each host's
free memory down one VM at a time, whatever runs short."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from twin.decide import growth_requests
from twin.decisions import HOT_ADD, UNBALLOON
from twin.state import HostState


def one_at_a_time(free: list[int], max_add: int, of, wanted, ballooned, align, room) -> list[tuple[int, int, str]]:
    """The mechanism as a loop over the VMs in order: (host, amount, kind) of each request."""
    out = []
    for h, want, back, step, space in zip(of, wanted, ballooned, align, room):
        left = free[h]
        if left <= 0:
            continue
        grant = min(want, left, max_add)
        if back > 0:
            amount, kind = min(grant, back), "decision.unballoon"
        else:
            amount, kind = -(-grant // step) * step, "decision.hot_add"
            if amount > min(space, left):
                amount = min(space, left) // step * step
            if amount <= 0:
                continue
        out.append((h, amount, kind))
        free[h] = left - amount
    return out


vm = st.tuples(st.integers(0, 3), st.integers(1, 5000), st.sampled_from([0, 0, 100, 3000]),
               st.sampled_from([1, 2, 64, 128, 1024]), st.integers(0, 4000))


@settings(max_examples=300, deadline=None)
@given(st.lists(vm, max_size=40), st.lists(st.integers(-100, 20_000), min_size=4, max_size=4),
       st.sampled_from([2048, 512]))
def test_growth_amounts_are_those_of_one_vm_at_a_time(vms, free, max_add) -> None:
    vms = sorted(vms, key=lambda v: v[0])  # the round's order: by host, then growth order
    of, wanted, ballooned, align, room = (np.array([v[k] for v in vms], dtype=np.int64).reshape(-1) for k in range(5))
    states = [HostState(f"h{h}", 100_000, 0, "hyperv", 0) for h in range(4)]
    names = [f"vm{k}" for k in range(len(vms))]
    zeros = np.zeros(len(vms), dtype=np.int64)
    expected_free = list(free)
    expected = one_at_a_time(expected_free, max_add, of.tolist(), wanted.tolist(), ballooned.tolist(),
                             align.tolist(), room.tolist())
    for at_once in (0, 10**9):  # all at once, and one at a time
        left = list(free)
        made = growth_requests(states, left, max_add, of, np.arange(len(vms)), wanted, zeros, zeros, zeros,
                               ballooned, align, room, names, at_once=at_once)
        assert all(row[0] in (UNBALLOON, HOT_ADD) for _, row in made)
        tag = {UNBALLOON: "decision.unballoon", HOT_ADD: "decision.hot_add"}
        got = sorted(((h, row[3], tag[row[0]]) for h, row in made), key=lambda r: r[0])
        assert got == sorted(expected, key=lambda r: r[0])  # stable: each host's own order is kept
        assert [max(f, 0) for f in left] == [max(f, 0) for f in expected_free]


def test_a_busy_rounds_requests_equal_validated_events_field_for_field() -> None:
    from twin.balancer import plan
    from twin.engine import Twin
    from twin.events import GuestStatusReported, HostJoined, MemorySettings, VmStarted

    twin = Twin()
    twin.apply(HostJoined(at_ms=0, host="h", total_mib=40 * 3000, reserve_mib=1024))
    for k in range(40):
        twin.apply(VmStarted(at_ms=0, host="h", vm=f"vm{k}", settings=MemorySettings(
            startup_mib=2048, minimum_mib=512, maximum_mib=8192)))
        twin.apply(GuestStatusReported(at_ms=1000, host="h", vm=f"vm{k}", committed_mib=200 + 97 * k,
                                       available_mib=0))
    decisions = plan(twin.hosts["h"], 61_500)
    assert {d.type for d in decisions} == {"decision.hot_add", "decision.balloon"}
    for d in decisions:
        validated = type(d)(**d.model_dump(exclude_unset=True))
        assert d == validated and d.model_fields_set == validated.model_fields_set
        assert list(d.__dict__) == list(validated.__dict__) and d.model_dump_json() == validated.model_dump_json()
