"""A frame folded at once (twin.frames) gives the state its reports give one by one, bit for bit."""

import numpy as np

from twin.engine import Twin
from twin.events import FrameReport, HostJoined, MemorySettings, StatusFrame, VmStarted
from twin.host import apply_frame

T0 = 1_767_225_600_000


def fleet(rng: np.random.Generator, vms: int) -> Twin:
    twin = Twin()
    twin.apply(HostJoined(at_ms=T0, host="h", total_mib=vms * 4096, reserve_mib=512))
    for i in range(vms):
        startup = int(rng.integers(512, 4096))
        twin.apply(VmStarted(at_ms=T0 + int(rng.integers(0, 3)) * 1000, host="h", vm=f"vm{i}", settings=MemorySettings(
            startup_mib=startup, minimum_mib=256, maximum_mib=8192, buffer_percent=int(rng.integers(5, 60)))))
    return twin


def test_frames_fold_at_once_exactly_as_report_by_report():
    rng = np.random.default_rng(3)
    for vms in (1, 3, 12, 50):
        at_once, one_by_one = fleet(np.random.default_rng(vms), vms), fleet(np.random.default_rng(vms), vms)
        for second in range(120):
            at_ms = T0 + 1000 * second + int(rng.integers(-2500, 500))  # some before a VM's start, some late
            names = [f"vm{i}" for i in rng.permutation(vms)[: int(rng.integers(1, vms + 1))]] + ["ghost"] * int(rng.random() < 0.1)
            reports = [FrameReport(vm=name, committed_mib=int(rng.integers(0, 9000)),
                                   available_mib=int(rng.integers(0, 5000))) for name in names]
            frame = StatusFrame(at_ms=max(at_ms, 0), host="h", reports=reports)
            refused = apply_frame(at_once.hosts["h"], frame)
            expected = []
            for k, event in enumerate(frame.events()):
                try:
                    one_by_one.apply(event)
                except Exception as error:  # noqa: BLE001 - compared below
                    expected.append((k, str(error)))
            assert [(k, str(e)) for k, e in refused] == expected
            assert at_once.hosts["h"].to_bytes() == one_by_one.hosts["h"].to_bytes(), (vms, second)


def test_a_frame_naming_a_vm_twice_folds_report_by_report():
    twin, other = fleet(np.random.default_rng(1), 2), fleet(np.random.default_rng(1), 2)
    frame = StatusFrame(at_ms=T0 + 5000, host="h", reports=[
        FrameReport(vm="vm0", committed_mib=900, available_mib=10), FrameReport(vm="vm0", committed_mib=1900, available_mib=20)])
    assert apply_frame(twin.hosts["h"], frame) == []
    for event in frame.events():
        other.apply(event)
    assert twin.hosts["h"].to_bytes() == other.hosts["h"].to_bytes()
