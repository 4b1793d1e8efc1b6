"""The runs of bench_pipeline.py, each on a real broker with topics of its own (4 partitions):

- ``throughput``: the hosts join (a worker folds their lifecycle), then one backlog of telemetry
  is read by the bare consumer, the empty Faust agent (floor_agent.py, its own process) and the
  ``dmtwin worker`` process in turn; then what the worker produced is read back and counted;
- ``latency``: the feeder at real time (one frame per host per second, the simulated guests
  answering) into a running worker; the delay from each frame's record timestamp to the record
  timestamp of each command its round caused;
- ``scaling``: one or two worker processes in one group read one backlog (hosts joined first);
  their reports/s from the event log's timestamps, and the CPU each worker and the broker used.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from streams.kafka.feed import ensure_topics
from streams.kafka.topics import Topics
from tests.integration.pipeline import (ROOT, WorkerProcess, read_records, run_feed, unique_topics,
                                        wait_until_consumed)

from pipeline_load import Load, bare_consumer, fleet, outputs, produce, telemetry_stamps, telemetry_window

PARTITIONS = 4


class FloorProcess(WorkerProcess):
    """benchmarks/floor_agent.py in its own process, with the environment a WorkerProcess gets."""

    def __init__(self, bootstrap: str, data_dir: Path, app_id: str, topics: Topics, expect: int) -> None:
        super().__init__(bootstrap, data_dir, app_id, topics, partitions=PARTITIONS)
        self.result = data_dir.with_suffix(".json")
        self.env.update(FLOOR_EXPECT=str(expect), FLOOR_RESULT=str(self.result))

    def start(self, timeout_s: float = 90) -> FloorProcess:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen([sys.executable, str(ROOT / "benchmarks" / "floor_agent.py")],
                                            env=self.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        return self

    def wait(self, timeout_s: float) -> dict:
        deadline = time.monotonic() + timeout_s
        assert self.process is not None
        while not self.result.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"floor agent gave no result: {self.log_path.read_text()[-3000:]}")
            time.sleep(0.2)
        return json.loads(self.result.read_text())


@dataclass
class Throughput:
    """One repetition on one backlog: seconds of each consumer, and the worker's outputs."""

    run: Load
    bare_s: float
    floor_s: float
    worker_s: float
    floor_cpu_s: float
    """The floor's CPU-seconds in its window (every thread of its process)."""
    worker_cpu_s: float
    """The worker's CPU-seconds in its window (sampled; 10 ms ticks)."""
    log_entries: int = 0
    commands: int = 0
    dead_letters: int = 0
    snapshots: int = 0
    checkpoints: int = 0
    drift: dict = field(default_factory=dict)

    @property
    def records(self) -> int:
        return self.log_entries + self.commands + self.dead_letters + self.snapshots + self.checkpoints


def fresh(bootstrap: str) -> tuple[str, Topics]:
    app_id, topics = unique_topics()
    asyncio.run(ensure_topics(bootstrap, topics, PARTITIONS))
    return app_id, topics


def joined(bootstrap: str, run: Load, data_dir: Path, timeout_s: float) -> tuple[str, Topics, WorkerProcess]:
    """Topics of a run's own, with its hosts and VMs joined: a worker folds the lifecycle, then
    stops. The app id, the topics and that (stopped) worker."""
    app_id, topics = fresh(bootstrap)
    produce(bootstrap, topics.host_events, run.lifecycle)
    worker = WorkerProcess(bootstrap, data_dir, app_id, topics, partitions=PARTITIONS).start()
    try:
        wait_until_consumed(bootstrap, app_id, topics, timeout_s=timeout_s)
    finally:
        worker.stop()
    return app_id, topics, worker


def throughput(bootstrap: str, run: Load, workdir: Path, tag: str, timeout_s: float,
               key: Path | None = None) -> Throughput:
    """The hosts and VMs join first (a worker folds them, then stops); then the telemetry goes in
    as a backlog, which the bare consumer, the floor and the worker (started again) read in turn,
    so that each consumer's window holds the telemetry alone."""
    app_id, topics, worker = joined(bootstrap, run, workdir / f"worker-{tag}", timeout_s)
    if key is not None:  # the worker signs a checkpoint of each chain it extends, per transaction
        worker.env["DMTWIN_KEY"] = str(key)
    produce(bootstrap, topics.telemetry, run.telemetry)
    bare_s = bare_consumer(bootstrap, topics, run, timeout_s)
    floor = FloorProcess(bootstrap, workdir / f"floor-{tag}", app_id + "-floor", topics, len(run.telemetry)).start()
    try:
        result = floor.wait(timeout_s)
    finally:
        floor.stop()
    worker.start()
    assert worker.process is not None
    sampler = CpuSampler(worker.process.pid)
    try:
        wait_until_consumed(bootstrap, app_id, topics, timeout_s=timeout_s)
    finally:
        sampler.stop()
        worker.stop()
    out = outputs(bootstrap, topics, app_id)
    worker_s, folded = telemetry_window(out.log)
    first_ms, last_ms, _ = telemetry_stamps(out.log)
    if folded != len(run.telemetry):
        print(f"    ({tag}: the worker logged {folded} of {len(run.telemetry)} telemetry messages, "
              f"{out.dead_letters} dead letters, e.g. {out.reasons.most_common(3)})", flush=True)
    return Throughput(run, bare_s, result["seconds"], worker_s, result["cpu_seconds"], sampler.between(first_ms, last_ms),
                      len(out.log), out.commands, out.dead_letters, out.snapshots, out.checkpoints,
                      result.get("differences", {}))


@dataclass
class Latency:
    delays_ms: list[int]
    frames: int
    unmatched: int

    def percentile(self, q: float) -> float:
        ordered = sorted(self.delays_ms)
        return float(ordered[min(len(ordered) - 1, int(q * len(ordered)))]) if ordered else float("nan")

    @property
    def p50(self) -> float:
        return statistics.median(self.delays_ms) if self.delays_ms else float("nan")


def latency(bootstrap: str, hosts: int, vms: int, seconds: int, warmup_s: int, workdir: Path) -> Latency:
    """The feeder (``dmtwin simulate --to``) at speed 1: each host's frame every second, and the
    simulated guests answering the commands, so every VM keeps being balanced. Commands caused by
    the frames of the first ``warmup_s`` seconds are left out (the VMs' first moves)."""
    app_id, topics = fresh(bootstrap)
    worker = WorkerProcess(bootstrap, workdir / "latency", app_id, topics, partitions=PARTITIONS).start()
    try:
        run_feed(fleet(hosts, seconds, vms).scenario, bootstrap, topics, speed=1, partitions=PARTITIONS, drain_s=3)
        wait_until_consumed(bootstrap, app_id, topics, timeout_s=120)
    finally:
        worker.stop()
    sent = {}
    for record in read_records(bootstrap, topics.telemetry, timeout_s=60):
        frame = json.loads(record.value)
        sent[(frame["host"], frame["at_ms"])] = record.timestamp
    begin = min((at_ms for _, at_ms in sent), default=0) + 1000 * warmup_s
    delays, unmatched = [], 0
    for topic in (topics.balloon_commands, topics.addition_commands):
        for record in read_records(bootstrap, topic, timeout_s=60):
            command = json.loads(record.value)
            cause = sent.get((command["host"], command["at_ms"]))
            if cause is None:
                unmatched += 1
            elif command["at_ms"] >= begin:
                delays.append(record.timestamp - cause)
    return Latency(delays, sum(at_ms >= begin for _, at_ms in sent), unmatched)


@dataclass
class Scaling:
    """One run of the group on one backlog, counted from the moment every worker served hosts."""

    workers: int
    seconds: float
    frames: int
    """Telemetry entries the group logged in those ``seconds``."""
    worker_cpu_s: list[float]
    """CPU-seconds each worker process used meanwhile."""
    broker_cpu_s: float | None
    """The broker's CPU-seconds meanwhile (None: a broker this run did not start)."""


def cpu_seconds(pid: int) -> float:
    """User + system CPU-seconds a live process has used (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuSampler:
    """A process's CPU-seconds sampled every ``every_s`` in a thread, so that the CPU it used
    between two timestamps of its records (ms since the epoch) can be read afterwards."""

    def __init__(self, pid: int, every_s: float = 0.02) -> None:
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, args=(pid, every_s), daemon=True)
        self._thread.start()

    def _sample(self, pid: int, every_s: float) -> None:
        while not self._stop.wait(every_s):
            try:
                self.samples.append((time.time() * 1000, cpu_seconds(pid)))
            except OSError:  # the process is gone
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def between(self, first_ms: float, last_ms: float) -> float:
        """CPU-seconds used from ``first_ms`` to ``last_ms`` (the nearest samples inside)."""
        inside = [cpu for at, cpu in self.samples if first_ms <= at <= last_ms]
        return inside[-1] - inside[0] if len(inside) >= 2 else float("nan")


def scaling(bootstrap: str, run: Load, workers: int, workdir: Path, tag: str, timeout_s: float,
            broker_pid: int | None = None) -> Scaling:
    """``workers`` worker processes in one group on 4 partitions read one backlog of telemetry,
    as ``throughput`` does: the hosts join first (one worker, then it stops), the telemetry goes
    in, then the group starts at once, so that the load generator is out of the window. The first
    worker up takes every partition until the others join (the broker does not wait for them),
    so the window and the CPU counts start when every worker serves hosts of its own."""
    app_id, topics, _ = joined(bootstrap, run, workdir / f"scale-{tag}-join", timeout_s)
    produce(bootstrap, topics.telemetry, run.telemetry)
    group = [WorkerProcess(bootstrap, workdir / f"scale-{tag}-{n}", app_id, topics, partitions=PARTITIONS)
             for n in range(workers)]
    try:
        with ThreadPoolExecutor(workers) as starting:
            list(starting.map(WorkerProcess.start, group))
        settled_ms = _settled(group, run.hosts)
        counted = [worker.process.pid for worker in group if worker.process is not None] + \
            ([broker_pid] if broker_pid else [])  # the workers, then the broker
        before = [cpu_seconds(pid) for pid in counted]
        wait_until_consumed(bootstrap, app_id, topics, timeout_s=timeout_s)
        used = [cpu_seconds(pid) - b for pid, b in zip(counted, before)]
    finally:
        for worker in group:
            worker.stop()
    log = read_records(bootstrap, topics.event_log, timeout_s=300)
    logged = telemetry_stamps(log)[2]
    if logged != len(run.telemetry):
        print(f"    ({tag}: {logged} of {len(run.telemetry)} telemetry messages logged)", flush=True)
    seconds, frames = telemetry_window(log, settled_ms)
    if frames < len(run.telemetry) / 2:
        print(f"    ({tag}: only {frames} of {len(run.telemetry)} telemetry messages after the group settled)", flush=True)
    return Scaling(workers, seconds, frames, used[:workers], used[workers] if broker_pid else None)


def _settled(group: list[WorkerProcess], hosts: int, timeout_s: float = 120) -> int:
    """Wait until every worker of ``group`` serves hosts and together they serve all ``hosts``;
    the time then, in ms since the epoch (the clock of the records' timestamps, on this machine)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            served = [len(worker.hosts()) for worker in group]
        except (OSError, ValueError):  # a web server not answering yet
            served = [0]
        if all(served) and sum(served) == hosts:
            return int(time.time() * 1000)
        if time.monotonic() > deadline:
            raise TimeoutError(f"workers serve {served} of {hosts} hosts")
        time.sleep(0.2)


def load_average() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())
