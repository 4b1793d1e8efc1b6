"""Benchmark of the streaming twin on a real broker (issue 10, "How it is shown"). Prints tables,
asserts nothing.

1. **Throughput**, for three message shapes (one ``guest.status`` per guest; frames of 12 VMs;
   frames of 50 VMs): the hosts and VMs join (a worker folds their start and stops), then one
   backlog of telemetry is put into the run's input topics (4 partitions) and read, in turn, by
   - a bare aiokafka consumer that reads both input topics and decodes every message with the
     twin's INPUT_MESSAGE_ADAPTER (in this process);
   - an empty Faust agent, the floor: a faust.App with the worker's settings whose agent only
     iterates the raw bytes and counts (benchmarks/floor_agent.py, a process of its own; it
     reports any Faust setting in which it differs from the worker's);
   - the worker, a ``dmtwin worker`` process (tests/integration/pipeline.py's WorkerProcess).
   Each one's time runs from its first telemetry message to its last (for the worker: the record
   timestamps of its first and last telemetry entry in the event log, as its transactions stamp
   them), so neither start-up nor the hosts' and VMs' start counts. Printed: reports/s and
   messages/s (min and median of ``--reps``), the ratios worker / floor and worker / bare (of the
   medians), and the records the worker produced per input message (lifecycle and telemetry),
   counted in the event log, command, dead-letter, snapshot and checkpoint topics after the run:
   log entries per message, and all records per message.
2. **Latency** at steady load: ``--latency-hosts`` × 12 VMs streamed by the feeder at real time
   (one frame per host per second, the simulated guests answering the commands), into a worker;
   report → command p50 / p99 from Kafka record timestamps (the frame's, the command's).
3. **Scaling**: one worker process, then two in one group, on input topics of 4 partitions; the
   hosts join first, then one backlog of frames of 12 VMs is put in and the group starts at
   once; reports/s of the group (event-log timestamps), min and median of ``--reps``, the ratio
   two / one, and the CPU-seconds each worker and the broker used. On a machine with fewer cores
   than workers + broker the ratio measures the cores; so the CPU figures are printed too, and
   the bound they set with a core per worker (the group ends with its busiest worker).

Run: .venv/bin/python benchmarks/bench_pipeline.py [--quick] [--hosts 40] [--messages 12000] ...
Uses $DMTWIN_KAFKA_BOOTSTRAP if set, else starts a local broker (streams.kafka.broker) for the run.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

from streams.kafka.broker import LocalKafka  # noqa: E402
from tests.integration.conftest import free_ports  # noqa: E402

from bench_core import processor_rate  # noqa: E402
from pipeline_load import SHAPES, Shape, fleet, load  # noqa: E402  (fleet: bench_core.py uses it)
from pipeline_runs import Scaling, Throughput, latency, load_average, scaling, throughput  # noqa: E402

__all__ = ["fleet", "main"]


def options() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a smoke run: small sizes, a few seconds each")
    parser.add_argument("--reps", type=int, help="repetitions of each throughput figure (3)")
    parser.add_argument("--hosts", type=int, help="hosts of the throughput runs (40; quick 8)")
    parser.add_argument("--messages", type=int, help="telemetry messages per shape (12000; quick 1500)")
    parser.add_argument("--shapes", default=",".join(s.name for s in SHAPES), help="shapes to run")
    parser.add_argument("--latency-hosts", type=int, default=20)
    parser.add_argument("--latency-seconds", type=int, help="seconds of paced load (60; quick 12)")
    parser.add_argument("--latency-warmup", type=int, default=5, help="first seconds left out of the percentiles")
    parser.add_argument("--scaling-hosts", type=int, help="hosts of the scaling runs (40; quick 16)")
    parser.add_argument("--scaling-messages", type=int, help="frames of 12 VMs per scaling run (30000; quick 8000)")
    parser.add_argument("--parts", default="throughput,latency,scaling,signing", help="which to run, in this order")
    parser.add_argument("--timeout", type=float, default=900, help="longest wait for any one consumer, s")
    args = parser.parse_args()
    defaults = dict(reps=3, hosts=8, messages=1500, latency_seconds=12, scaling_hosts=16, scaling_messages=8000) \
        if args.quick else dict(reps=3, hosts=40, messages=12000, latency_seconds=60, scaling_hosts=40,
                                scaling_messages=30000)
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    return args


def mm(values: list[float]) -> str:
    """min / median of rates."""
    return f"{min(values):>9,.0f} / {statistics.median(values):>9,.0f}"


def rates(runs: list[Throughput], seconds: str, per: str) -> list[float]:
    """Reports/s or telemetry messages/s of each run, by one consumer's seconds."""
    return [(r.run.reports if per == "reports" else len(r.run.telemetry)) / getattr(r, seconds) for r in runs]


def print_throughput(results: dict[str, list[Throughput]]) -> None:
    consumers = (("bare consumer", "bare_s"), ("empty Faust agent", "floor_s"), ("worker", "worker_s"))
    print("\nThroughput, reports/s (min / median):")
    print(f"  {'shape':10} {'messages':>9} {'reports':>9}" + "".join(f"  {name:>21}" for name, _ in consumers)
          + f"  {'worker/floor':>12} {'worker/bare':>11}")
    for shape, runs in results.items():
        run = runs[0].run
        medians = {s: statistics.median(rates(runs, s, "reports")) for _, s in consumers}
        print(f"  {shape:10} {len(run.telemetry):>9,} {run.reports:>9,}"
              + "".join(f"  {mm(rates(runs, s, 'reports'))}" for _, s in consumers)
              + f"  {medians['worker_s'] / medians['floor_s']:>11.2f}×"
              + f" {medians['worker_s'] / medians['bare_s']:>10.2f}×")
    print("\nThroughput, messages/s (min / median):")
    for shape, runs in results.items():
        print(f"  {shape:10} {'':>9} {'':>9}" + "".join(f"  {mm(rates(runs, s, 'messages'))}" for _, s in consumers))
    print("\nCPU per telemetry message, µs (medians; each in its own window, every thread of its process):")
    print(f"  {'shape':10} {'floor':>8} {'worker':>8} {'worker - floor':>15} {'in process':>11}  floor/worker")
    for shape, runs in results.items():
        floor, worker = (statistics.median(getattr(r, cpu) / len(r.run.telemetry) * 1e6 for r in runs)
                         for cpu in ("floor_cpu_s", "worker_cpu_s"))
        run = runs[0].run
        alone = processor_rate(run.shape.vms, run.shape.frames, run.hosts, len(run.telemetry), 500)[1]
        print(f"  {shape:10} {floor:>8.0f} {worker:>8.0f} {worker - floor:>15.0f} {alone:>11.0f}  {floor / worker:>11.2f}×")
    print("  (in process: the worker's decode, fold, rounds, log lines and commands without Kafka, bench_core.py)")
    print("\nRecords the worker produced per input message (median run; inputs = lifecycle + telemetry):")
    print(f"  {'shape':10} {'inputs':>8} {'log':>8} {'commands':>9} {'dead':>6} {'snapshots':>10} {'checkpts':>9}"
          f" {'log/msg':>8} {'records/msg':>12} {'per telemetry msg':>18}")
    for shape, runs in results.items():
        r = sorted(runs, key=lambda t: t.records)[len(runs) // 2]
        inputs = r.run.messages
        print(f"  {shape:10} {inputs:>8,} {r.log_entries:>8,} {r.commands:>9,} {r.dead_letters:>6,} {r.snapshots:>10,}"
              f" {r.checkpoints:>9,} {r.log_entries / inputs:>8.2f} {r.records / inputs:>12.2f}"
              f" {r.records / len(r.run.telemetry):>18.2f}")
    drift = {k: v for runs in results.values() for r in runs for k, v in r.drift.items()}
    if drift:
        print("  NOTE: the empty Faust agent's settings differ from the worker's:", drift)


def run_throughput(bootstrap: str, args: argparse.Namespace, workdir: Path) -> None:
    results = {}
    for shape in [s for s in SHAPES if s.name in args.shapes.split(",")]:
        run = load(shape, args.hosts, args.messages)
        print(f"  {shape.name}: {args.hosts} hosts × {shape.vms} VMs × {run.seconds} s: "
              f"{len(run.telemetry):,} messages, {run.reports:,} reports", flush=True)
        results[shape.name] = [throughput(bootstrap, run, workdir, f"{shape.name}-{i}", args.timeout)
                               for i in range(args.reps)]
    print_throughput(results)


def run_latency(bootstrap: str, args: argparse.Namespace, workdir: Path) -> None:
    lat = latency(bootstrap, args.latency_hosts, 12, args.latency_seconds, args.latency_warmup, workdir)
    print(f"\nLatency at steady load ({args.latency_hosts} hosts × 12 VMs, one frame per host per second for "
          f"{args.latency_seconds} s, guests answering; the first {args.latency_warmup} s left out):")
    print(f"  report → command, {len(lat.delays_ms)} commands from {lat.frames} frames: p50 {lat.p50:.0f} ms, "
          f"p99 {lat.percentile(0.99):.0f} ms, max {max(lat.delays_ms, default=float('nan')):.0f} ms"
          f"{f' ({lat.unmatched} commands matched no frame)' if lat.unmatched else ''}")


def run_scaling(bootstrap: str, args: argparse.Namespace, workdir: Path) -> None:
    shape = Shape("frames-12", 12, True)
    run = load(shape, args.scaling_hosts, args.scaling_messages)
    print(f"\nScaling ({args.scaling_hosts} hosts × 12 VMs, {len(run.telemetry):,} frames, "
          f"{run.reports:,} reports, 4 partitions, one backlog), reports/s once every worker serves hosts "
          "(min / median):", flush=True)
    by_count: dict[int, list[Scaling]] = {}
    for workers in (1, 2):
        done = by_count[workers] = [scaling(bootstrap, run, workers, workdir, f"{workers}-{i}", args.timeout,
                                            args.broker_pid) for i in range(args.reps)]
        cpu = " ".join("+".join(f"{c:.1f}" for c in d.worker_cpu_s) for d in done)
        broker = " ".join(f"{d.broker_cpu_s:.1f}" for d in done if d.broker_cpu_s is not None)
        print(f"  {workers} worker{'s' if workers > 1 else ' '}: {mm([d.frames * shape.vms / d.seconds for d in done])}"
              f"   worker CPU-s {cpu}{f'; broker CPU-s {broker}' if broker else ''}", flush=True)
    if any(d.frames < 2 for done in by_count.values() for d in done):
        print("  (too few frames read after the group settled for a figure: give more --scaling-messages)")
        return
    wall = {n: statistics.median(d.frames * shape.vms / d.seconds for d in done) for n, done in by_count.items()}
    print(f"  two workers / one: {wall[2] / wall[1]:.2f}× (medians)")
    # Each worker's CPU time bounds how fast it could go on a core of its own: the group is done
    # when its busiest worker is. This is what the figures imply, not a measurement of free cores.
    busiest = {n: statistics.median(max(d.worker_cpu_s) / d.frames for d in done) for n, done in by_count.items()}
    per_cpu = {n: statistics.median(d.frames * shape.vms / sum(d.worker_cpu_s) for d in done) for n, done in by_count.items()}
    print(f"  reports per worker CPU-second: one {per_cpu[1]:,.0f}, two {per_cpu[2]:,.0f}; with a core per worker "
          f"(and the broker elsewhere) the busiest worker's CPU time bounds two / one at "
          f"{busiest[1] / busiest[2]:.2f}× ({os.cpu_count()} cores here, shared with the broker)")


def run_signing(bootstrap: str, args: argparse.Namespace, workdir: Path) -> None:
    """The worker's throughput on frames of 12 with a signing key against without (issue #12: at most 5 %)."""
    from streams.cli import main as dmtwin

    key = workdir / "worker.key"
    if not key.exists():
        dmtwin(["keys", "new", str(key)])
    run = load(Shape("frames-12", 12, True), args.hosts, args.messages)
    plain, signed = [], []
    for i in range(args.reps):  # interleaved, so that a change of the machine's load hits both alike
        plain.append(throughput(bootstrap, run, workdir, f"plain-{i}", args.timeout))
        signed.append(throughput(bootstrap, run, workdir, f"signed-{i}", args.timeout, key=key))
    a, b = rates(plain, "worker_s", "reports"), rates(signed, "worker_s", "reports")
    print(f"\nSigning (frames of 12, {args.hosts} hosts), worker reports/s (min / median):")
    print(f"  without a key: {mm(a)}\n  with a key:    {mm(b)}   "
          f"({sum(t.checkpoints for t in signed) // len(signed):,} checkpoints a run)")
    print(f"  signed / unsigned: {statistics.median(b) / statistics.median(a):.2f}× (medians)")


def main() -> None:
    args = options()
    logging.getLogger("aiokafka").setLevel(logging.ERROR)  # a new topic's first sends retry, noisily
    parts = {"throughput": run_throughput, "latency": run_latency, "scaling": run_scaling, "signing": run_signing}
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        bootstrap = os.environ.get("DMTWIN_KAFKA_BOOTSTRAP")
        broker = None
        if not bootstrap:
            port, controller = free_ports(2)
            broker = LocalKafka(data_dir=workdir / "kafka", port=port, controller_port=controller)
            broker.up()
            bootstrap = broker.bootstrap
        args.broker_pid = broker.pid() if broker is not None else None
        print(f"bench_pipeline{' --quick' if args.quick else ''}: broker {bootstrap}"
              f"{' (started for the run)' if broker else ''}, {os.cpu_count()} cores, "
              f"load average {load_average()}, {args.reps} repetitions", flush=True)
        try:
            for name in args.parts.split(","):
                parts[name](bootstrap, args, workdir)
        finally:
            if broker is not None:
                broker.down()
    print(f"\n({time.monotonic() - started:.0f} s; load average at the end {load_average()})")


if __name__ == "__main__":
    main()
