"""Runs of frames of many hosts folded at once (twin.runs) give the state, and the VM rows after
each frame, that folding the frames one after the other gives, bit for bit; a run with a report
its host refuses or supersedes is left as it was."""

import numpy as np

from twin.events import FrameReport, StatusFrame
from twin.host import apply_frame
from twin.runs import MAX_RUN, Run, fold_runs
from twin.state import NO_DATA, Col

from .test_frames import T0, fleet


def frames_of(rng: np.random.Generator, vms: int, count: int, start_s: int, odd: bool) -> list[StatusFrame]:
    """``count`` frames a second apart, each reporting every VM once in some order; ``odd``: one
    of them is late or reports more memory than the guest sees."""
    out = []
    for j in range(count):
        reports = [FrameReport(vm=f"vm{i}", committed_mib=int(rng.integers(0, 9000)),
                               available_mib=int(rng.integers(0, 300))) for i in rng.permutation(vms)]
        out.append(StatusFrame(at_ms=T0 + 1000 * (start_s + j), host="h", reports=reports))
    if odd:
        j = int(rng.integers(0, count))
        if rng.random() < 0.5 and j:
            out[j] = out[j].model_copy(update={"at_ms": out[j - 1].at_ms - 1})
        else:
            bad = out[j].reports[0].model_copy(update={"available_mib": 1 << 30})
            out[j] = out[j].model_copy(update={"reports": [bad, *out[j].reports[1:]]})
    return out


def test_runs_fold_at_once_exactly_as_frame_after_frame():
    rng = np.random.default_rng(7)
    for trial in range(60):
        sizes = [int(rng.integers(2, 14)) for _ in range(int(rng.integers(1, 5)))]
        hosts = [fleet(np.random.default_rng(trial * 10 + h), n) for h, n in enumerate(sizes)]
        alike = [fleet(np.random.default_rng(trial * 10 + h), n) for h, n in enumerate(sizes)]
        second = 3
        for _ in range(3):  # a few runs one after the other: the pressure window fills and wraps
            runs, expected, odd = [], [], []
            for twin, other, n in zip(hosts, alike, sizes):
                frames = frames_of(rng, n, int(rng.integers(1, MAX_RUN + 1)), second, rng.random() < 0.15)
                state, index = twin.hosts["h"], twin.hosts["h"].vms.index
                run = Run(state)
                for frame in frames:
                    run.add(frame.at_ms, [index[r.vm] for r in frame.reports], [r.committed_mib for r in frame.reports],
                            [r.available_mib for r in frame.reports])
                runs.append(run)
                before = other.hosts["h"].copy()
                after, refused = [], False
                for frame in frames:
                    refused |= bool(apply_frame(other.hosts["h"], frame))
                    after.append(other.hosts["h"].vms.rows.copy())
                superseded = any(b.at_ms < a.at_ms for a, b in zip(frames, frames[1:])) or \
                    frames[0].at_ms < before.vms.rows[:, Col.LAST_AT].max()
                if refused or superseded:
                    other.hosts["h"] = before
                    after = None
                expected.append(after)
                odd.append(after is None)
            second += MAX_RUN + 1
            got = fold_runs(runs)
            for twin, other, rows, want in zip(hosts, alike, got, expected):
                assert (rows is None) == (want is None)
                if want is not None:
                    assert all((rows[:, j] == w).all() for j, w in enumerate(want))
                assert twin.hosts["h"].to_bytes() == other.hosts["h"].to_bytes()
            for twin, other, bad in zip(hosts, alike, odd):  # start the next runs from the same state
                if bad:
                    twin.hosts["h"] = other.hosts["h"].copy()


def test_surplus_since_carries_into_a_run_and_restarts_in_it():
    twin, other = fleet(np.random.default_rng(4), 1), fleet(np.random.default_rng(4), 1)
    state = twin.hosts["h"]
    run = Run(state)
    committed = [100, 100, 9000, 100, 100]  # surplus, surplus, not, surplus again
    for j, c in enumerate(committed):
        run.add(T0 + 5000 + 1000 * j, [0], [c], [0])
        apply_frame(other.hosts["h"], StatusFrame(at_ms=T0 + 5000 + 1000 * j, host="h",
                                                  reports=[FrameReport(vm="vm0", committed_mib=c, available_mib=0)]))
    [after] = fold_runs([run])
    assert after is not None
    since = after[0, :, Col.SURPLUS_SINCE].tolist()
    assert since[0] == since[1] == T0 + 5000 and since[2] == NO_DATA and since[3] == since[4] == T0 + 8000
    assert state.to_bytes() == other.hosts["h"].to_bytes()
