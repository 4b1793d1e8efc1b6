"""Nothing lost, nothing twice: real worker processes and a real broker, with faults inflicted.

Each test balances the books of its run (tests/integration/faults.py): every input the broker
accepted is in the event log or the dead letters, once; the log's chain holds, every decision
re-derives, and the live state equals the replay of the log. The longer runs (more kills, longer
outages, floods, failover, memory) are in benchmarks/bench_faults.py.
"""

from __future__ import annotations

import asyncio
import gc
import json
import random
import time
import warnings

import pytest

from streams.kafka.broker import LocalKafka
from streams.kafka.feed import ensure_topics
from twin.scenario import Scenario

from .conftest import free_ports
from .faults import FeedThread, audit, identities
from .pipeline import (WorkerProcess, read_records, run_feed, send_raw, unique_topics, wait_until_consumed,
                       wait_until_quiet)

pytestmark = pytest.mark.integration

START_MS = 1_767_225_600_000


def fleet(hosts: int = 4, duration_s: int = 240) -> Scenario:
    return Scenario.model_validate({"seed": 5, "start_ms": START_MS, "duration_s": duration_s, "hosts": [
        {"name": f"hv-{h}", "total_mib": 16384, "reserve_mib": 1024, "vms": [
            {"name": f"vm-{v}", "startup_mib": 1024, "minimum_mib": 512, "maximum_mib": 6144,
             "workload": {"kind": "bursty", "base_mib": 700, "burst_mib": 1800, "bursts_per_hour": 240}}
            for v in range(5)]} for h in range(hosts)]})


def settle(bootstrap, topics, worker):
    wait_until_consumed(bootstrap, worker.env["DMTWIN_APP_ID"], topics)
    return audit(bootstrap, topics, worker.hosts)


def test_kill_9_at_random_moments_loses_and_repeats_nothing(kafka_bootstrap, tmp_path):
    app_id, topics = unique_topics()
    worker = WorkerProcess(kafka_bootstrap, tmp_path / "w", app_id, topics).start()
    run = FeedThread(fleet(), kafka_bootstrap, topics, speed=20, drain_s=4)
    run.start()
    chance = random.Random(9)
    try:
        for _ in range(2):
            time.sleep(chance.uniform(2.0, 4.0))
            worker.kill()
            worker.start()
        run.join(120)
        assert run.error is None and run.stats is not None
        books = settle(kafka_bootstrap, topics, worker)
    finally:
        worker.stop()
    assert books.sent > 1000 and books.logged == books.sent - books.dead_lettered
    assert books.clean(), books.line() + f" lost e.g. {books.lost_examples}"
    assert books.dead_lettered == 0, books.line()


def test_a_broker_restart_under_load_loses_nothing_and_dead_letters_nothing(tmp_path):
    port, controller = free_ports(2)
    kafka = LocalKafka(data_dir=tmp_path / "kafka", port=port, controller_port=controller)
    kafka.up()
    app_id, topics = unique_topics()
    worker = WorkerProcess(kafka.bootstrap, tmp_path / "w", app_id, topics)
    try:
        worker.start()
        run = FeedThread(fleet(duration_s=300), kafka.bootstrap, topics, speed=15, drain_s=6)
        run.start()
        time.sleep(5)
        kafka.down()
        time.sleep(12)
        kafka.up()
        run.join(240)
        assert run.error is None, run.error
        books = settle(kafka.bootstrap, topics, worker)
    finally:
        worker.stop()
        kafka.down()
        with warnings.catch_warnings():  # kafka-python leaves sockets of clients whose bootstrap
            warnings.simplefilter("ignore", ResourceWarning)  # failed while the broker was away:
            gc.collect()  # collect them here, not in whichever test runs next
    assert books.sent > 1000 and books.clean(), books.line() + f" lost e.g. {books.lost_examples}"
    assert books.dead_lettered == 0, books.line()


def test_oversized_and_hostile_messages_are_kept_once_and_stop_nothing(kafka_bootstrap, tmp_path):
    app_id, topics = unique_topics()
    worker = WorkerProcess(kafka_bootstrap, tmp_path / "w", app_id, topics).start()
    try:
        run = FeedThread(fleet(hosts=2, duration_s=60), kafka_bootstrap, topics, speed=20, drain_s=3)
        run.start()
        big = b'{"type":"guest.status","host":"hv-0","pad":"' + b"x" * 1_000_000 + b'"}'
        hostile = [big, b"\xff\xfe" * 300_000, b"[" * 100_000, b'{"type":"guest.status_frame","host":"hv-0",'
                   b'"at_ms":1,"reports":' + b"[" * 5000 + b"]" * 5000 + b"}", b"", b"null"]
        send_raw(kafka_bootstrap, topics.telemetry, [(b"hv-0", value) for value in hostile])
        run.join(60)
        assert run.error is None
        books = settle(kafka_bootstrap, topics, worker)
        letters = read_records(kafka_bootstrap, topics.dead_letters)
    finally:
        worker.stop()
    assert len(letters) == len(hostile), "each hostile message is kept once"
    raw = [r for r in letters if any(name == "dmtwin-dead-letter" for name, _ in r.headers or [])]
    assert sorted(r.value for r in raw) == sorted(v for v in hostile if len(v) > 256 * 1024)
    assert books.clean(), books.line()
    assert worker.process is not None and worker.process.returncode is not None  # stopped by us, not crashed


def test_out_of_order_topics_fold_in_event_time_and_only_the_too_late_are_dead_lettered(kafka_bootstrap, tmp_path):
    """A backlog in which the host-events topic runs a minute ahead of the telemetry queued before
    it: nothing valid is refused. A report beyond the lateness is dead-lettered as late."""
    app_id, topics = unique_topics()
    join = {"v": 1, "type": "host.joined", "at_ms": START_MS, "host": "hv-0", "total_mib": 8192, "reserve_mib": 512}
    start = {"v": 1, "type": "vm.started", "at_ms": START_MS, "host": "hv-0", "vm": "a",
             "settings": {"startup_mib": 1024, "minimum_mib": 512, "maximum_mib": 4096}}
    stop_b = {"v": 1, "type": "vm.settings_changed", "at_ms": START_MS + 60_000, "host": "hv-0", "vm": "a",
              "weight": 9000}
    reports = [{"v": 1, "type": "guest.status", "at_ms": START_MS + 1000 * s, "host": "hv-0", "vm": "a",
                "committed_mib": 800 + 10 * s, "available_mib": 100} for s in range(1, 90)]
    too_late = {**reports[0], "at_ms": START_MS + 1000, "committed_mib": 1}
    asyncio.run(ensure_topics(kafka_bootstrap, topics, 4))
    send_raw(kafka_bootstrap, topics.host_events, [(b"hv-0", json.dumps(e).encode()) for e in (join, start, stop_b)])
    send_raw(kafka_bootstrap, topics.telemetry, [(b"hv-0", json.dumps(r).encode()) for r in reports])
    worker = WorkerProcess(kafka_bootstrap, tmp_path / "w", app_id, topics, lateness_ms=60_000).start()
    try:
        wait_until_quiet(kafka_bootstrap, topics.event_log, quiet_s=3)
        send_raw(kafka_bootstrap, topics.telemetry, [(b"hv-0", json.dumps(too_late).encode())])
        books = settle(kafka_bootstrap, topics, worker)
        letters = [json.loads(r.value) for r in read_records(kafka_bootstrap, topics.dead_letters)]
        inputs = [json.loads(r.value) for r in read_records(kafka_bootstrap, topics.event_log)]
    finally:
        worker.stop()
    assert [letter["reason"].split(":")[0] for letter in letters] == ["late"]
    assert identities(json.dumps(too_late).encode())[0] in {tuple(i) for i in [identities(
        letters[0]["original"].encode())[0]]}
    assert books.clean() and books.logged == 3 + len(reports), books.line()
    times = [e["at_ms"] for e in inputs if not e["type"].startswith("decision.")]
    assert times == sorted(times), "the two topics are folded in event-time order"


def test_a_worker_with_a_key_signs_its_chains_and_the_export_verifies_with_the_public_key(
        kafka_bootstrap, tmp_path, capsys):
    from streams.cli import main

    key = tmp_path / "worker.key"
    assert main(["keys", "new", str(key)]) == 0
    app_id, topics = unique_topics()
    worker = WorkerProcess(kafka_bootstrap, tmp_path / "w", app_id, topics)
    worker.env["DMTWIN_KEY"] = str(key)
    worker.start()
    try:
        run = FeedThread(fleet(hosts=2, duration_s=60), kafka_bootstrap, topics, speed=20, drain_s=3)
        run.start()
        time.sleep(2)
        worker.kill()  # a crash in the middle: checkpoints stay consistent with the committed log
        worker.start()
        run.join(60)
        wait_until_quiet(kafka_bootstrap, topics.event_log, quiet_s=4)
    finally:
        worker.stop()
    out = tmp_path / "log.jsonl"
    broker = f"kafka://{kafka_bootstrap}"
    assert main(["log", "export", str(out), "--from", broker, "--topic", topics.event_log, "--checkpoints",
                 "--checkpoints-topic", topics.checkpoints]) == 0
    capsys.readouterr()
    assert main(["audit", "verify", str(out), "--key", f"{key}.pub"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("OK: chain intact, signed by SHA256:")


def test_a_cold_worker_on_a_backlog_of_both_topics_dead_letters_nothing(kafka_bootstrap, tmp_path):
    """Host events and telemetry both queued before the worker starts: the hosts' and VMs' starts
    are folded before their reports, though the telemetry topic is read first."""
    app_id, topics = unique_topics()
    run_feed(fleet(hosts=8, duration_s=200), kafka_bootstrap, topics, speed=0, drain_s=0, per_guest=True)
    worker = WorkerProcess(kafka_bootstrap, tmp_path / "w", app_id, topics).start()
    try:
        books = settle(kafka_bootstrap, topics, worker)
    finally:
        worker.stop()
    assert books.clean() and books.dead_lettered == 0 and books.sent > 1000, books.line()
