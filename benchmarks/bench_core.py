"""Benchmarks of the pure core (issues #2 and #10): one balancer round by host size, the live
driver's fold + balance rate in process, and replay vs parse.

Run: .venv/bin/python benchmarks/bench_core.py [--events N] [--hosts N]
Prints medians; nothing here is asserted (see the closing note of the issue for the goals). Verify
vs parse on a million-event log, with peak memory, is benchmarks/bench_audit.py.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from twin.balancer import plan  # noqa: E402
from twin.engine import Twin  # noqa: E402
from twin.events import (  # noqa: E402
    EVENT_ADAPTER,
    BalancerRound,
    FrameReport,
    GuestStatusReported,
    InputEvent,
    StatusFrame,
    HostJoined,
    MemorySettings,
    VmStarted,
    trusted,
)
from twin.log import encode, replay  # noqa: E402
from twin.scenario import Scenario, simulate  # noqa: E402


def host_with(vms: int, seed: int = 1, steady: bool = False) -> Twin:
    """A host of ``vms`` VMs. Busy: varied demand, so nearly every VM needs a decision.
    Steady: each VM near its ideal memory, the common case, when a round decides nothing."""
    rng = np.random.default_rng(seed)
    twin = Twin()
    twin.apply(HostJoined(at_ms=0, host="h", total_mib=vms * 3000, reserve_mib=1024))
    for i in range(vms):
        twin.apply(VmStarted(at_ms=0, host="h", vm=f"vm{i}", settings=MemorySettings(
            startup_mib=2048, minimum_mib=512, maximum_mib=8192, weight=int(rng.integers(0, 10001)))))
    for i in range(vms):
        twin.apply(GuestStatusReported(at_ms=1000, host="h", vm=f"vm{i}",
                                       committed_mib=int(rng.integers(1650, 1750) if steady else rng.integers(200, 4000)),
                                       available_mib=0))
    return twin


def time_round(vms: int, steady: bool) -> tuple[float, int]:
    twin = host_with(vms, steady=steady)
    state = twin.hosts["h"]
    repeats = max(5, min(2000, 200_000 // vms))
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        decisions = plan(state, 61_500)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples), len(decisions)


def time_made_round(vms: int) -> tuple[float, float]:
    """A busy round's decisions made into events (as the audit tools read them), and its log
    line: the costs ``plan`` leaves to those who need them (``twin.decisions``)."""
    twin = host_with(vms)
    state = twin.hosts["h"]
    repeats = max(5, min(2000, 200_000 // vms))
    made, text = [], []
    for _ in range(repeats):
        decisions = plan(state, 61_500)
        start = time.perf_counter()
        decisions.events()
        made.append(time.perf_counter() - start)
        entry = trusted(BalancerRound, at_ms=61_500, host="h", decisions=plan(state, 61_500))
        start = time.perf_counter()
        entry.model_dump_json()
        text.append(time.perf_counter() - start)
    return statistics.median(made), statistics.median(text)


def time_full_round(vms: int, steady: bool) -> float:
    """``Twin.round``: the plan, folding its decisions, and the round's log entry."""
    twin = host_with(vms, steady=steady)
    repeats = max(5, min(2000, 200_000 // vms))
    samples = []
    for _ in range(repeats):
        trial = twin.copy()
        start = time.perf_counter()
        trial.round("h", 61_500)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def messages(hosts: int, vms: int, seconds: int) -> tuple[list[InputEvent | StatusFrame], int]:
    """What the worker gets from ``hosts`` hosts of ``vms`` VMs for ``seconds``: their lifecycle
    events and a frame of reports per host per second; and the number of reports."""
    from benchmarks.bench_pipeline import fleet  # the pipeline benchmark's fleet: the same load

    run = fleet(hosts, seconds, vms) if "vms" in fleet.__code__.co_varnames else fleet(hosts, seconds)
    out: list[InputEvent | StatusFrame] = list(run.joins())
    reports = 0
    for second in range(seconds):
        run.second = second
        for host in run.scenario.hosts:
            out += run.lifecycle(host)
            frame = [FrameReport(vm=r.vm, committed_mib=r.committed_mib, available_mib=r.available_mib)
                     for r in run.reports(host)]
            if frame:
                out.append(StatusFrame(at_ms=run.now_ms(), host=host.name, reports=frame))
                reports += len(frame)
    return out, reports


def fold_and_balance_rate(hosts: int, seconds: int) -> tuple[float, int]:
    """Reports per second through ``Twin.ingest`` (fold each message, a round when one is due), and
    the log entries it made."""
    inputs, reports = messages(hosts, 12, seconds)
    best, entries = float("inf"), 0
    for _ in range(3):
        twin = Twin()
        start = time.perf_counter()
        entries = sum(len(twin.ingest(message)[0]) for message in inputs)
        best = min(best, time.perf_counter() - start)
    return reports / best, entries


def batched_rate(hosts: int, seconds: int, batch: int) -> tuple[float, int]:
    """As ``fold_and_balance_rate``, folding ``batch`` messages at a time as the worker folds a
    transaction's worth (``twin.batch.Batch``: frames and rounds of many hosts together)."""
    from twin.batch import Batch

    inputs, reports = messages(hosts, 12, seconds)
    best, entries = float("inf"), 0
    for _ in range(3):
        twin = Twin()
        entries = 0
        start = time.perf_counter()
        for first in range(0, len(inputs), batch):
            folding = Batch(twin)
            for message in inputs[first:first + batch]:
                logged, _, rounds = folding.add(message)
                entries += len(logged) + len(rounds)
            entries += len(folding.flush())
        best = min(best, time.perf_counter() - start)
    return reports / best, entries


def processor_rate(vms: int, frames: bool, hosts: int, messages: int, batch: int) -> tuple[float, float]:
    """The worker's own work per telemetry message, in process and without Kafka
    (``streams.worker.processor``: decode, fold, rounds, chained log lines, commands), on the
    messages bench_pipeline.py sends, folded ``batch`` at a time as one partition's transactions
    fold them. Returns (reports/s, µs per message), the best of three."""
    from benchmarks.pipeline_load import Shape, load
    from streams.worker.processor import HostProcessor, Source, decode

    run = load(Shape("", vms, frames), hosts, messages)
    processor = HostProcessor()
    best = float("inf")
    thresholds = gc.get_threshold()
    gc.freeze()  # as the worker collects garbage (streams.worker.app.tune_gc)
    gc.set_threshold(20_000, 20, 20)
    for _ in range(3):
        records: dict = {}

        def fold(items: list[tuple[str, bytes]], topic: str, first: int) -> None:
            decoded = [decode(key.encode(), value, Source(topic, 0, first + n)) for n, (key, value) in enumerate(items)]
            _, working = processor.fold_batch(decoded, lambda host: records[host].copy() if host in records else None)
            records.update(working)

        fold(run.lifecycle, "host-events", 0)
        start = time.perf_counter()
        for first in range(0, len(run.telemetry), batch):
            fold(run.telemetry[first:first + batch], "telemetry", first)
        best = min(best, time.perf_counter() - start)
    gc.set_threshold(*thresholds)
    gc.unfreeze()
    return run.reports / best, best / len(run.telemetry) * 1e6


def log_lines(events: int) -> list[str]:
    """A realistic log: a dozen-VM host simulated until it has about ``events`` events."""
    seconds = max(10, events // 14)
    scenario = Scenario.model_validate({"seed": 1, "duration_s": seconds, "hosts": [
        {"name": "h", "total_mib": 40960, "reserve_mib": 2048, "vms": [
            {"name": f"vm{i}", "startup_mib": 2048, "minimum_mib": 512, "maximum_mib": 8192,
             "workload": {"kind": "diurnal", "base_mib": 1500 + 150 * i, "amplitude_mib": 1200,
                          "period_s": 300 + 37 * i}} for i in range(12)]}]})
    return [encode(e) for e in simulate(scenario)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--hosts", type=int, default=100, help="hosts of 12 VMs for the fold + balance rate")
    parser.add_argument("--seconds", type=int, default=60, help="event time of the fold + balance run")
    args = parser.parse_args()

    for steady in (True, False):
        print(f"balancer round, {'steady host (VMs near ideal)' if steady else 'busy host (most VMs move)'}, median:")
        per_vm = {}
        for vms in (10, 100, 1_000, 10_000):
            seconds, decisions = time_round(vms, steady)
            per_vm[vms] = seconds / vms
            print(f"  {vms:>6} VMs: {seconds * 1e3:8.3f} ms  ({seconds / vms * 1e6:6.2f} µs/VM, "
                  f"{decisions} decisions)")
        print(f"  cost per VM, 10,000 vs 1,000 VMs: ×{per_vm[10_000] / per_vm[1_000]:.2f} (1.0 = linear)")
        for vms in (12, 1_000, 10_000):
            print(f"  Twin.round (plan, fold its decisions, the entry), {vms:>6} VMs: "
                  f"{time_full_round(vms, steady) * 1e3:8.3f} ms")
        if not steady:
            for vms in (1_000, 10_000):
                made, text = time_made_round(vms)
                print(f"  {vms:>6} VMs, left to who needs them: the decisions as events {made * 1e3:.3f} ms, "
                      f"the round's log line {text * 1e3:.3f} ms")

    rate, entries = fold_and_balance_rate(args.hosts, args.seconds)
    print(f"fold + balance in process (Twin.ingest, {args.hosts} hosts × 12 VMs, a frame per host per second, "
          f"{args.seconds} s): {rate:,.0f} reports/s, {entries:,} log entries")
    for batch in (100, 1000):
        rate, entries = batched_rate(args.hosts, args.seconds, batch)
        print(f"  folding each batch of {batch} messages together, as the worker does (twin.batch): "
              f"{rate:,.0f} reports/s, {entries:,} log entries")

    print("the worker's own work in process (decode, fold, rounds, log lines, commands; no Kafka), "
          f"{args.hosts} hosts, one partition, 500 messages a transaction:")
    for name, vms, frames in (("per-guest", 12, False), ("frames-12", 12, True), ("frames-50", 50, True)):
        rate, per_message = processor_rate(vms, frames, args.hosts, 12_000, 500)
        print(f"  {name:10} {rate:10,.0f} reports/s, {per_message:6.1f} µs per message")

    lines = log_lines(args.events)
    parse_s = min(_timed(lambda: [EVENT_ADAPTER.validate_json(line) for line in lines]) for _ in range(3))
    replay_s = min(_timed(lambda: replay(lines)) for _ in range(3))
    n = len(lines)
    print(f"replay of {n} events:")
    print(f"  parse only: {n / parse_s:12,.0f} events/s")
    print(f"  replay:     {n / replay_s:12,.0f} events/s  ({parse_s / replay_s:.2f} of parse speed)")


def _timed(work) -> float:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
