"""Helpers for pipeline tests: a real `dmtwin worker` process, the feeder, and topic readers."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from streams.kafka.feed import FeedStats, feed
from streams.kafka.topics import Topics
from twin.scenario import Scenario

from .conftest import free_ports

ROOT = Path(__file__).resolve().parents[2]


def unique_topics() -> tuple[str, Topics]:
    """An app id and topic prefix of one's own, so tests on one broker do not meet."""
    tag = uuid.uuid4().hex[:8]
    return f"dmtwin-test-{tag}", Topics(f"t{tag}.")


class WorkerProcess:
    """`dmtwin worker` as users run it, in its own process, with its own data dir and ports."""

    def __init__(self, bootstrap: str, data_dir: Path, app_id: str, topics: Topics,
                 partitions: int = 4, lateness_ms: int | None = None) -> None:
        self.web_port, self.metrics_port = free_ports(2)
        self.data_dir = data_dir
        self.log_path = data_dir.with_suffix(".log")
        self.env = {**os.environ, "DMTWIN_BROKER": bootstrap, "DMTWIN_APP_ID": app_id,
                    "DMTWIN_TOPIC_PREFIX": topics.prefix, "DMTWIN_DATA_DIR": str(data_dir),
                    "DMTWIN_WEB_PORT": str(self.web_port), "DMTWIN_METRICS_PORT": str(self.metrics_port),
                    "DMTWIN_PARTITIONS": str(partitions)}
        if lateness_ms is not None:
            self.env["DMTWIN_LATENESS_MS"] = str(lateness_ms)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 90) -> WorkerProcess:
        seen = self.log_path.stat().st_size if self.log_path.exists() else 0  # a restart appends
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "streams.cli", "worker", "--loglevel", "info"],
                                            env=self.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"worker exited: {self.log_path.read_text()[-3000:]}")
            if b"[^Worker]: Ready" in self.log_path.read_bytes()[seen:]:
                return self
            time.sleep(0.3)
        raise TimeoutError(f"worker not ready in {timeout_s}s: {self.log_path.read_text()[-3000:]}")

    def stop(self, timeout_s: float = 60) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def kill(self) -> None:
        """``kill -9``: no goodbye to the group, no flush, no commit."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def rss_mib(self) -> float:
        """Resident memory of the worker process, MiB."""
        assert self.process is not None
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def hosts(self) -> dict[str, Any]:
        """The worker's /hosts/ page: its hosts' state and counters."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.web_port}/hosts/", timeout=5) as page:
            return {h["host"]: h for h in json.load(page)["hosts"]}

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as page:
            return page.read().decode()


def run_feed(scenario: Scenario, bootstrap: str, topics: Topics, **options: Any) -> FeedStats:
    return asyncio.run(feed(scenario, bootstrap, topics, **options))


def read_records(bootstrap: str, topic: str, timeout_s: float = 10) -> list[Any]:
    """Every record of a topic (kafka-python ConsumerRecords), partition by partition, in order."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, isolation_level="read_committed")
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        end = consumer.end_offsets(partitions)
        records: dict[int, list[Any]] = {tp.partition: [] for tp in partitions}
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < end[tp] for tp in partitions) and time.monotonic() < deadline:
            for tp, batch in consumer.poll(timeout_ms=500, max_records=50_000).items():
                records[tp.partition] += batch
        return [record for p in sorted(records) for record in records[p]]
    finally:
        consumer.close()


def read_topic(bootstrap: str, topic: str, timeout_s: float = 10) -> list[tuple[bytes, bytes]]:
    """Every (key, value) of a topic, partition by partition (in order within each)."""
    return [(r.key, r.value) for r in read_records(bootstrap, topic, timeout_s)]


def wait_until_quiet(bootstrap: str, topic: str, quiet_s: float = 3.0, timeout_s: float = 120,
                     at_least: int = 1) -> int:
    """Wait until a topic holds ``at_least`` messages and then received nothing for ``quiet_s``;
    return its message count."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, isolation_level="read_committed")
    try:
        deadline = time.monotonic() + timeout_s
        last, since = -1, time.monotonic()
        while time.monotonic() < deadline:
            partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
            count = sum(consumer.end_offsets(partitions).values()) if partitions else 0
            if count != last:
                last, since = count, time.monotonic()
            elif time.monotonic() - since >= quiet_s and count >= at_least:
                return count
            time.sleep(0.5)
        raise TimeoutError(f"{topic} still busy after {timeout_s}s")
    finally:
        consumer.close()


def wait_until_consumed(bootstrap: str, group: str, topics: Topics, timeout_s: float = 180) -> None:
    """Wait until the worker group's committed offsets reach the end of both input topics: every
    input the broker holds has been through a committed transaction."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        partitions = [TopicPartition(t, p) for t in topics.inputs for p in consumer.partitions_for_topic(t) or []]
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            ends = consumer.end_offsets(partitions)
            if all((consumer.committed(tp) or 0) >= ends[tp] for tp in partitions):
                return
            time.sleep(0.5)
        raise TimeoutError(f"group {group} has not consumed its inputs after {timeout_s}s")
    finally:
        consumer.close()


def send_raw(bootstrap: str, topic: str, messages: list[tuple[bytes | None, bytes]]) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    for key, value in messages:
        producer.send(topic, key=key, value=value)
    producer.flush()
    producer.close()
