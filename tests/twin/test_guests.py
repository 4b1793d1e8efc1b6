"""The guests a scenario can describe (issue #14) and what the twin makes of them."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from twin.engine import Twin
from twin.events import BalloonResponded, BalloonTargetSet, HotAddResponded, MemoryAdditionRequested
from twin.invariants import violations
from twin.scenario import load_scenario, simulate
from twin.workload import Steps, series

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "squeezed-guests.toml"


def test_steps_hold_each_value_exactly_until_the_next():
    demand = series(Steps(points=[(0, 800), (60, 3000), (240, 4500)]), 300, seed=1)
    assert demand[:60].tolist() == [800] * 60 and demand[60:240].tolist() == [3000] * 180
    assert demand[240:].tolist() == [4500] * 60


def run_example():
    twin = Twin()
    events = list(simulate(load_scenario(EXAMPLE), twin=twin))
    return twin, events


def test_the_example_guests_behave_as_described():
    twin, events = run_example()
    host = twin.hosts["h"]
    assert violations(host) == []
    answers = [e for e in events if isinstance(e, BalloonResponded)]
    asked = {d.seq: d for d in events if isinstance(d, BalloonTargetSet)}
    # the floored guest answers partially and never goes below its hidden floor (above Minimum)
    floored = [a for a in answers if a.vm == "floored"]
    assert floored and any(a.released_mib < asked_for(events, a) for a in floored)
    assert host.vm("floored").assigned_mib >= 3072
    # the guest that frees nothing answers every balloon request with 0 pages
    nofree = [a for a in answers if a.vm == "nofree"]
    assert nofree and all(a.released_mib == 0 for a in nofree)
    # the one that refuses hot-add is refused once for good and then only gets ballooned memory back
    refused = [e for e in events if isinstance(e, HotAddResponded) and e.vm == "noadd"]
    assert all(e.added_mib == 0 for e in refused)
    adds_after = [d for d in events if isinstance(d, MemoryAdditionRequested) and d.vm == "noadd"]
    assert len(adds_after) <= 1
    assert host.vm("noadd").assigned_mib <= 2048  # never more than it has seen
    # the busy VM got its memory from the others
    assert host.vm("busy").assigned_mib >= 4500
    del asked


def asked_for(events, answer):
    for e in events:
        if isinstance(e, BalloonTargetSet) and e.vm == answer.vm and e.seq == answer.seq:
            return e.remove_mib
    raise AssertionError("no request")


def test_without_giving_up_a_guest_that_frees_nothing_is_asked_again_every_61_s():
    _, events = run_example()
    asks = [d.at_ms for d in events if isinstance(d, BalloonTargetSet) and d.vm == "nofree"]
    assert len(asks) >= 5 and all(b - a >= 60_000 for a, b in zip(asks, asks[1:]))


def test_the_mechanism_gives_up_on_a_guest_that_frees_nothing_and_takes_from_the_others():
    from twin.guest import SimulatedGuest
    from twin.study import PolicyResult, Study, StudyVm, run_host

    steps = 40  # of 60 s
    busy = np.array([800] * 2 + [4000] * (steps - 2), dtype=np.int64)
    vms = [StudyVm("nofree", 0, 4096, 512, 8192, 20, np.full(steps, 300, dtype=np.int64)),
           StudyVm("spare", 0, 4096, 512, 8192, 20, np.full(steps, 300, dtype=np.int64)),
           StudyVm("busy", 0, 1024, 512, 8192, 20, busy)]
    study = Study(vms, hosts=1, capacity_mib=9216, step_s=60)

    def guests(vm, host):
        return SimulatedGuest(host, vm.name, "windows", vm.startup_mib, refuses_balloon=vm.name == "nofree")

    def asks(policy):
        seen = []
        result = PolicyResult(policy, 1, 9216)
        run_host(study, 0, policy, result, guest_factory=guests,
                 on_event=lambda e: seen.append(e) if isinstance(e, BalloonTargetSet) and e.vm == "nofree" else None)
        return seen, result

    stubborn, plain = asks("hyperv")
    given_up, patient = asks("hyperv+giveup")
    assert len(stubborn) >= 20  # every 61 s for 40 minutes
    # three refusals over two minutes, then left alone for 30 minutes, then asked again (three more)
    at = [d.at_ms for d in given_up]
    assert len(at) == 6 and at[3] - at[2] >= 1_800_000
    assert patient.warning_s <= plain.warning_s  # the busy VM got its memory from "spare" all the same
