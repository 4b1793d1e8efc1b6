"""Each peer's published rule (DOMAIN.md §1.4, §3.1–§3.3) on small hand-made hosts, at the policy
level (``twin.policies``: a snapshot in, targets out), and the study driver's exactness."""

from __future__ import annotations

import numpy as np
import pytest

from twin.policies import POLICY_INTERVAL_MS, Snapshot, esx, hyperv, mom, squeezed


def snap(assigned, demand, *, minimum=None, maximum=None, weight=None, budget=None, capacity=None,
         buffer=20) -> Snapshot:
    a = np.array(assigned, dtype=np.int64)
    n = len(a)
    lo = np.array(minimum if minimum is not None else [512] * n, dtype=np.int64)
    hi = np.array(maximum if maximum is not None else [16384] * n, dtype=np.int64)
    budget = int(budget if budget is not None else a.sum() + 100_000)
    capacity = int(capacity if capacity is not None else budget)
    return Snapshot(assigned=a, demand=np.array(demand, dtype=np.int64), available=np.zeros(n, dtype=np.int64),
                    minimum=lo, maximum=hi, buffer_percent=np.full(n, buffer, dtype=np.int64),
                    weight=np.array(weight if weight is not None else [5000] * n, dtype=np.int64),
                    lower=np.minimum(lo, a), upper=np.maximum(hi, a), budget_mib=budget,
                    free_mib=budget - int(a.sum()), capacity_mib=capacity)


# --- Hyper-V (§1.4) ------------------------------------------------------------------------------

def test_hyperv_aims_at_ideal_memory_when_it_fits():
    s = snap([2048, 2048], [1000, 3000])
    assert hyperv(s).tolist() == [1200, 3600]


def test_hyperv_drops_buffers_first_when_the_host_is_short():
    s = snap([2048, 2048], [1000, 3000], budget=4400)  # ideal 4800 does not fit, demand 4000 does
    target = hyperv(s)
    assert (target >= [1000, 3000]).all() and target.sum() <= 4400


def test_hyperv_lets_weight_decide_when_even_demand_does_not_fit():
    s = snap([2048, 2048], [4000, 4000], weight=[10000, 0], budget=5000)
    high, low = hyperv(s).tolist()
    assert high > low and high + low <= 5000 and low >= 512


# --- Xen squeezed (§3.2) -------------------------------------------------------------------------

def test_squeezed_gives_every_domain_the_same_fraction_whatever_its_demand():
    s = snap([1024, 1024], [100, 9000], minimum=[512, 1024], maximum=[4608, 9216], budget=8000)
    low, high = squeezed(s).tolist()
    gamma = (8000 - 9 - 1536) / (4096 + 8192)
    assert (low - 512) / 4096 == pytest.approx(gamma, abs=1e-3)
    assert (high - 1024) / 8192 == pytest.approx(gamma, abs=1e-3)


def test_squeezed_issues_only_the_freeing_targets_while_someone_must_free():
    # a holds far above its share and must free; b is below its share but waits (two phases)
    s = snap([6000, 600], [0, 0], minimum=[512, 512], maximum=[8192, 8192], budget=6600)
    a, b = squeezed(s).tolist()
    assert a < 6000 and b == 600


# --- oVirt MOM (§3.3) ----------------------------------------------------------------------------

def test_mom_grows_by_at_least_five_percent_while_the_host_has_20_percent_free():
    s = snap([1000], [100], budget=10_000, capacity=10_000)  # host 90 % free, the guest needs little
    assert mom(s).tolist() == [1050]


def test_mom_grows_at_once_to_what_leaves_the_guest_20_percent_free():
    s = snap([1000], [2000], budget=10_000, capacity=10_000)
    assert mom(s).tolist() == [2000 + 200]


def test_mom_shrinks_by_at_most_five_percent_under_host_pressure():
    # host free 10 % < 20 %: guest_free% = 0.20 × 0.10 / 0.20 = 10 %
    s = snap([4000, 4000], [1000, 3900], budget=8890, capacity=8890)
    idle, busy = mom(s).tolist()
    assert idle == 3800  # 0.95 × 4000, above the floor 1000 + 10 % × 4000
    assert busy == 4000  # its floor 3900 + 400 is above what it holds: never grows while shrinking


def test_mom_under_critical_pressure_holds_guests_below_what_they_use():
    # host free 2 % ≤ 5 %: guest_free% = 0.02 − 0.05 < 0, the floor is below what the guest uses
    s = snap([4000], [3990], minimum=[512], budget=4082, capacity=4082)
    (target,) = mom(s).tolist()
    assert target < 3990 and target >= 0.95 * 4000 - 1


def test_mom_skips_changes_of_a_quarter_percent_or_less():
    s = snap([10_000], [9_990], budget=12_400, capacity=12_400)  # 19.4 % free: shrink, floor above
    assert mom(s).tolist() == [10_000]


def test_mom_runs_every_ten_seconds_hyperv_every_second():
    assert POLICY_INTERVAL_MS["mom"] == 10_000 and POLICY_INTERVAL_MS["hyperv"] == 1000
    assert POLICY_INTERVAL_MS["esx"] == 15_000


# --- VMware ESX (§3.1) ---------------------------------------------------------------------------

def test_esx_keeps_what_each_vm_uses_plus_its_buffer_without_contention():
    s = snap([2048, 2048], [1000, 3000])
    assert esx(s).tolist() == [1200, 3600]


def test_esx_taxes_idle_memory_first_under_contention():
    # same shares (same Maximum, weight); a uses little of what it holds, b nearly all
    s = snap([4000, 4000], [500, 3900], maximum=[8192, 8192], budget=6000)
    a, b = esx(s).tolist()
    assert a + b <= 6000
    assert 4000 - a > 4000 - b  # the idle VM gives more
    assert b >= 3900 * 0.9  # the active one keeps nearly what it uses


def test_esx_shares_decide_between_equally_idle_vms():
    s = snap([4000, 4000], [3000, 3000], maximum=[8192, 8192], weight=[10000, 2500], budget=5000)
    rich, poor = esx(s).tolist()
    assert rich > poor


# --- the study driver: quiet rounds are skipped exactly ------------------------------------------

@pytest.mark.parametrize("policy", ["hyperv", "mom", "esx", "squeezed"])
def test_skipping_quiet_rounds_decides_exactly_what_a_round_every_interval_decides(policy):
    from twin.study import PolicyResult, Study, StudyVm, run_host

    rng = np.random.default_rng(3)
    vms = [StudyVm(f"v{i}", 0, 1024, 512, 6144, 20, rng.integers(200, 5000, 12).astype(np.int64))
           for i in range(4)]
    study = Study(vms, hosts=1, capacity_mib=9000, step_s=60)

    def decisions(skip: bool) -> tuple[list, PolicyResult]:
        seen: list = []
        result = PolicyResult(policy, 1, 9000)
        run_host(study, 0, policy, result, skip_quiet=skip,
                 on_event=lambda e: seen.append(e) if e.type.startswith("decision.") else None)
        return [d.model_dump() for d in seen], result

    fast, quick = decisions(True)
    slow, full = decisions(False)
    assert fast == slow and fast
    assert quick.rounds < full.rounds
    assert quick.warning_s == full.warning_s and quick.assigned_mib_s == full.assigned_mib_s
