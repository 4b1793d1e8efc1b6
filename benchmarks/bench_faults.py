"""Faults as inputs (issue "Nothing lost, nothing twice"): real broker, real worker processes.

Runs each fault against a simulated fleet streamed at ``--speed`` and prints, per fault: inputs in
the input topics, logged, dead-lettered (valid ones among them), lost, duplicated; the chain and
decision check of the log; live /hosts/ == replay of the log; seconds to recover; worker RSS.

  kill9      ``kill -9`` of the worker at ``--kills`` random moments, restarted each time
  broker     the broker stopped for ``--outage`` seconds under load, then started again
  flood      100,000 bad messages and 20 messages of 1 MB while valid traffic flows
  failover   two workers; one is killed: seconds until the other serves all hosts
  steady     RSS of one worker under steady load, after warm-up and at the end

Run: .venv/bin/python benchmarks/bench_faults.py [--faults kill9,broker,...] [--hosts 8]
Loopback only; each fault is bounded in time; the broker is started by the script.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from streams.kafka.broker import LocalKafka  # noqa: E402
from tests.integration.conftest import free_ports  # noqa: E402
from tests.integration.faults import Books, FeedThread, audit  # noqa: E402
from tests.integration.pipeline import WorkerProcess, send_raw, unique_topics, wait_until_consumed  # noqa: E402
from twin.scenario import Scenario  # noqa: E402

START_MS = 1_767_225_600_000


def fleet(hosts: int, duration_s: int, loop: bool = False) -> Scenario:
    kinds = [{"kind": "bursty", "base_mib": 700, "burst_mib": 1800, "bursts_per_hour": 240},
             {"kind": "diurnal", "base_mib": 900, "amplitude_mib": 700, "period_s": 300},
             {"kind": "steady", "mib": 1500}, {"kind": "idle"}]
    return Scenario.model_validate({"seed": 11, "start_ms": START_MS, "duration_s": duration_s, "hosts": [
        {"name": f"hv-{h:02d}", "total_mib": 24576, "reserve_mib": 1024, "vms": [
            {"name": f"vm-{v}", "startup_mib": 1024, "minimum_mib": 512, "maximum_mib": 6144,
             "workload": kinds[v % len(kinds)]} for v in range(10)]} for h in range(hosts)]})


def report(name: str, books: Books, extra: str = "") -> None:
    verdict = "CLEAN" if books.clean() else "NOT CLEAN"
    print(f"{name:9s} {verdict}: {books.line()}{'; ' + extra if extra else ''}", flush=True)
    if books.lost_examples:
        print(f"          lost e.g. {books.lost_examples}", flush=True)


def from_the_fleet(identity: tuple) -> bool:
    """Whether an input came from the simulated fleet: the flood's messages name no host."""
    return identity[1] is not None


def settle(bootstrap: str, topics, worker: WorkerProcess) -> Books:
    wait_until_consumed(bootstrap, worker.env["DMTWIN_APP_ID"], topics, timeout_s=600)
    return audit(bootstrap, topics, worker.hosts, ours=from_the_fleet)


def start_run(kafka: LocalKafka, data_dir: Path, args: argparse.Namespace
              ) -> tuple[Any, WorkerProcess, FeedThread]:
    """A worker, and the simulated fleet streaming into it."""
    app_id, topics = unique_topics()
    worker = WorkerProcess(kafka.bootstrap, data_dir, app_id, topics).start()
    run = FeedThread(fleet(args.hosts, args.seconds), kafka.bootstrap, topics, speed=args.speed, drain_s=5)
    run.start()
    return topics, worker, run


def fault_kill9(kafka: LocalKafka, work: Path, args: argparse.Namespace) -> None:
    topics, worker, run = start_run(kafka, work / "kill9", args)
    chance = random.Random(args.seed)
    recover = []
    rss0 = worker.rss_mib()
    for _ in range(args.kills):
        time.sleep(chance.uniform(1.0, max(1.5, args.seconds / args.speed / args.kills)))
        worker.kill()
        started = time.monotonic()
        worker.start()
        recover.append(time.monotonic() - started)
    run.join()
    books = settle(kafka.bootstrap, topics, worker)
    report("kill9", books, f"{args.kills} kills, restart to ready {min(recover):.1f}-{max(recover):.1f} s, "
                           f"RSS {rss0:.0f} → {worker.rss_mib():.0f} MiB")
    worker.stop()


def fault_broker(kafka: LocalKafka, work: Path, args: argparse.Namespace) -> None:
    topics, worker, run = start_run(kafka, work / "broker", args)
    time.sleep(5)
    kafka.down()
    time.sleep(args.outage)
    started = time.monotonic()
    kafka.up()
    run.join()
    books = settle(kafka.bootstrap, topics, worker)
    report("broker", books, f"{args.outage} s outage, caught up {time.monotonic() - started:.0f} s after restart, "
                            f"feeder error {run.error!r}")
    worker.stop()


def fault_flood(kafka: LocalKafka, work: Path, args: argparse.Namespace) -> None:
    topics, worker, run = start_run(kafka, work / "flood", args)
    bad = [(b"hv-00", b'{"type":"guest.status","at_ms":%d}' % i) for i in range(args.bad)]
    big = [(b"hv-01", b'{"type":"guest.status","pad":"' + b"x" * 1_000_000 + b'"}') for _ in range(20)]
    for chunk in range(0, len(bad), 10_000):
        send_raw(kafka.bootstrap, topics.telemetry, bad[chunk:chunk + 10_000])
    send_raw(kafka.bootstrap, topics.telemetry, big)
    run.join()
    books = settle(kafka.bootstrap, topics, worker)
    alive = worker.process is not None and worker.process.poll() is None
    report("flood", books, f"{args.bad} bad + 20 × 1 MB sent, worker alive {alive}")
    worker.stop()


def fault_failover(kafka: LocalKafka, work: Path, args: argparse.Namespace) -> None:
    app_id, topics = unique_topics()
    first = WorkerProcess(kafka.bootstrap, work / "fo1", app_id, topics).start()
    second = WorkerProcess(kafka.bootstrap, work / "fo2", app_id, topics).start()
    run = FeedThread(fleet(args.hosts, args.seconds), kafka.bootstrap, topics, speed=args.speed, drain_s=5)
    run.start()
    time.sleep(8)
    first.kill()
    killed = time.monotonic()
    served = None
    while time.monotonic() - killed < 120:
        try:
            if len(second.hosts()) == args.hosts:
                served = time.monotonic() - killed
                break
        except OSError:
            pass
        time.sleep(0.25)
    run.join()
    books = settle(kafka.bootstrap, topics, second)
    report("failover", books, f"the survivor serves all {args.hosts} hosts {served:.1f} s after the kill"
           if served is not None else "the survivor never served all hosts")
    second.stop()


def fault_steady(kafka: LocalKafka, work: Path, args: argparse.Namespace) -> None:
    app_id, topics = unique_topics()
    worker = WorkerProcess(kafka.bootstrap, work / "steady", app_id, topics).start()
    run = FeedThread(fleet(args.hosts, args.steady_seconds), kafka.bootstrap, topics, speed=1, drain_s=3)
    run.start()
    samples = []
    while run.is_alive():
        samples.append(worker.rss_mib())
        time.sleep(5)
    warm = samples[min(len(samples) - 1, 6)]  # after 30 s
    books = settle(kafka.bootstrap, topics, worker)
    report("steady", books, f"{args.steady_seconds} s at 1×, RSS start {samples[0]:.0f}, after warm-up {warm:.0f}, "
                            f"end {samples[-1]:.0f} MiB ({(samples[-1] / warm - 1) * 100:+.1f} % after warm-up)")
    worker.stop()


FAULTS = {"kill9": fault_kill9, "broker": fault_broker, "flood": fault_flood, "failover": fault_failover,
          "steady": fault_steady}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faults", default=",".join(FAULTS))
    parser.add_argument("--hosts", type=int, default=8)
    parser.add_argument("--seconds", type=int, default=600, help="event time of each run")
    parser.add_argument("--speed", type=float, default=10)
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--outage", type=int, default=60)
    parser.add_argument("--bad", type=int, default=100_000)
    parser.add_argument("--steady-seconds", type=int, default=300)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        port, controller = free_ports(2)
        kafka = LocalKafka(data_dir=work / "kafka", port=port, controller_port=controller)
        kafka.up()
        try:
            for name in args.faults.split(","):
                FAULTS[name](kafka, work, args)
        finally:
            kafka.down()
    print(json.dumps({"hosts": args.hosts, "speed": args.speed, "seconds": args.seconds}))


if __name__ == "__main__":
    main()
