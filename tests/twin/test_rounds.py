"""The rounds of many hosts computed together (twin.rounds) decide what each host's own round does."""

import numpy as np

from twin.balancer import plan
from twin.engine import Twin
from twin.events import BalancerRound
from twin.rounds import plan_many
from twin.scenario import Scenario, simulate

KINDS = [{"kind": "diurnal", "base_mib": 2500, "amplitude_mib": 2000, "period_s": 90},
         {"kind": "bursty", "base_mib": 900, "burst_mib": 3000, "bursts_per_hour": 120},
         {"kind": "idle", "mib": 300}, {"kind": "steady", "mib": 2600}, {"kind": "leak", "start_mib": 800,
                                                                          "mib_per_hour": 40000}]


def fleet(seed: int) -> Scenario:
    """Hosts of every policy, some short of memory, with restarts (Smart Paging) and guests
    without hot-add or balloon."""
    rng = np.random.default_rng(seed)
    hosts = []
    for h, policy in enumerate(["hyperv", "squeezed", "mom", "esx", "hyperv", "hyperv"]):
        vms = []
        for i in range(int(rng.integers(1, 9))):
            startup = int(rng.choice([1024, 2048, 3072]))
            vms.append({"name": f"vm{i}", "startup_mib": startup, "minimum_mib": 512, "maximum_mib": 8192,
                        "weight": int(rng.integers(0, 10001)), "buffer_percent": int(rng.integers(5, 50)),
                        "restart_at_s": [int(rng.integers(20, 110))] if rng.random() < 0.3 else [],
                        "guest": {"os": str(rng.choice(["linux", "windows"])), "hot_add": bool(rng.random() < 0.8),
                                  "balloon": bool(rng.random() < 0.9)},
                        "workload": KINDS[int(rng.integers(0, len(KINDS)))]})
        total = int(sum(v["startup_mib"] for v in vms) * rng.uniform(1.0, 2.5)) + 1024
        hosts.append({"name": f"h{h}", "total_mib": total, "reserve_mib": 512, "policy": policy, "vms": vms})
    return Scenario.model_validate({"seed": seed, "duration_s": 150, "hosts": hosts})


def test_rounds_of_many_hosts_at_once_are_each_hosts_own_round():
    compared = decided = 0
    for seed in range(4):
        twin = Twin()
        scenario = fleet(seed)
        for entry in simulate(scenario, twin=twin, rejected=[], framed=True):
            if not isinstance(entry, BalancerRound) or entry.host != scenario.hosts[-1].name:
                continue
            at_ms = entry.at_ms + 700  # between rounds: reports folded, answers pending or not
            states = list(twin.hosts.values())
            together = plan_many([(state, at_ms + 37 * k) for k, state in enumerate(states)])
            alone = [plan(state, at_ms + 37 * k) for k, state in enumerate(states)]
            assert [[d.model_dump_json() for d in ds] for ds in together] == \
                   [[d.model_dump_json() for d in ds] for ds in alone]
            compared += len(states)
            decided += sum(map(len, alone))
    assert compared > 1000 and decided > 300, (compared, decided)


def test_a_host_without_vms_or_without_eligible_vms_decides_nothing():
    twin = Twin()
    scenario = fleet(9)
    for _ in simulate(scenario.model_copy(update={"duration_s": 1}), twin=twin, rejected=[]):
        pass
    states = list(twin.hosts.values())
    assert plan_many([(s, 0) for s in states]) == [plan(s, 0) for s in states]
    assert plan_many([]) == []
