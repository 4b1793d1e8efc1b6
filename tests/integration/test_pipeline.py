"""The streaming twin on a real Kafka broker: worker processes, feeder, topics. No mocks."""

from __future__ import annotations

import json
import time
from collections import Counter

import pytest

from twin.chain import unchained, verify_chain
from twin.engine import Twin
from twin.log import decode, replay
from twin.report import summary
from twin.scenario import Scenario

from .pipeline import (
    WorkerProcess,
    read_records,
    read_topic,
    run_feed,
    send_raw,
    unique_topics,
    wait_until_quiet,
)

pytestmark = pytest.mark.integration


def scenario(hosts=("hv-a",), duration_s=120, seed=4) -> Scenario:
    return Scenario.model_validate({"seed": seed, "duration_s": duration_s, "hosts": [
        {"name": name, "total_mib": 10240, "reserve_mib": 1024, "vms": [
            {"name": "busy", "startup_mib": 1024, "minimum_mib": 512, "maximum_mib": 6144,
             "workload": {"kind": "diurnal", "base_mib": 3000, "amplitude_mib": 2000, "period_s": 60}},
            {"name": "idle", "startup_mib": 4096, "minimum_mib": 512, "maximum_mib": 4096,
             "workload": {"kind": "idle"}},
            {"name": "legacy", "startup_mib": 2048, "minimum_mib": 512, "maximum_mib": 8192,
             "guest": {"os": "linux", "hot_add": False},
             "workload": {"kind": "batch", "idle_mib": 300, "job_mib": 2500, "every_s": 60, "job_s": 30}},
            {"name": "web", "startup_mib": 1024, "minimum_mib": 512, "maximum_mib": 4096,
             "workload": {"kind": "bursty", "base_mib": 800, "burst_mib": 1500, "bursts_per_hour": 120}},
        ]} for name in hosts]})


def event_log(bootstrap, topics):
    return [value for _, value in read_topic(bootstrap, topics.event_log)]


def states(replayed):
    return {h["host"]: h for h in summary(replayed, decisions=False)["hosts"]}


@pytest.fixture
def worker_factory(kafka_bootstrap, tmp_path):
    started = []

    def make(app_id, topics, name="w1"):
        worker = WorkerProcess(kafka_bootstrap, tmp_path / name, app_id, topics)
        started.append(worker)
        return worker

    yield make
    for worker in started:
        worker.stop()


def test_reports_in_commands_out_and_the_log_replays_to_the_live_state(kafka_bootstrap, worker_factory):
    app_id, topics = unique_topics()
    worker = worker_factory(app_id, topics).start()
    run_feed(scenario(), kafka_bootstrap, topics, speed=40, drain_s=5)  # 120 s of event time in 3 s
    wait_until_quiet(kafka_bootstrap, topics.event_log)

    log = event_log(kafka_bootstrap, topics)
    result = replay(log)
    assert result.rejected == [] and result.events == len(log)
    assert states(result) == worker.hosts(), "dmtwin replay of the event log must equal the live state"

    decisions = [d for d in result.decisions]
    rederived = Twin().rederive(map(decode, log))
    assert rederived == [unchained(d) for d in decisions], "every decision must re-derive from the logged inputs"
    assert verify_chain(log) == [], "the worker chains every host's log"

    balloons = [json.loads(v) for _, v in read_topic(kafka_bootstrap, topics.balloon_commands)]
    additions = [json.loads(v) for _, v in read_topic(kafka_bootstrap, topics.addition_commands)]
    kinds = Counter(d.type for d in decisions)
    assert kinds["decision.balloon"] and kinds["decision.hot_add"], kinds
    assert len(balloons) == kinds["decision.balloon"] + kinds["decision.unballoon"]
    assert len(additions) == kinds["decision.hot_add"]
    assert not [a for a in additions if a["vm"] == "legacy"], "no hot-add to a guest without hot-add"
    assert worker.hosts()["hv-a"]["vms"][2]["name"] == "legacy"
    assert all(v["visible_mib"] <= 2048 for v in worker.hosts()["hv-a"]["vms"] if v["name"] == "legacy")
    assert 'dmtwin_dynamic_memory_vm_physical_bytes{host="hv-a",vm="busy"}' in worker.metrics()


def test_every_kind_of_bad_input_lands_in_the_dead_letter_topic(kafka_bootstrap, worker_factory):
    app_id, topics = unique_topics()
    worker = worker_factory(app_id, topics).start()
    run_feed(scenario(duration_s=5), kafka_bootstrap, topics, speed=0, drain_s=1)
    t = 1_767_225_600_000 + 10_000
    good = json.dumps({"type": "guest.status", "at_ms": t, "host": "hv-a", "vm": "busy",
                       "committed_mib": 900, "available_mib": 100}).encode()
    bad = {
        "json": b'{"type": "guest.status", "at_ms": ',
        "schema": json.dumps({"type": "guest.status", "at_ms": t, "host": "hv-a", "vm": "busy",
                              "committed_mib": "many", "available_mib": 0}).encode(),
        "unknown_vm": json.dumps({"type": "guest.status", "at_ms": t, "host": "hv-a", "vm": "nobody",
                                  "committed_mib": 5, "available_mib": 0}).encode(),
        "out_of_range": json.dumps({"type": "guest.status", "at_ms": t, "host": "hv-a", "vm": "busy",
                                    "committed_mib": 5, "available_mib": 999_999}).encode(),
        "backwards": json.dumps({"type": "guest.status", "at_ms": t - 60_000, "host": "hv-a", "vm": "busy",
                                 "committed_mib": 5, "available_mib": 0}).encode(),
        "negative": json.dumps({"type": "guest.status", "at_ms": t, "host": "hv-a", "vm": "busy",
                                "committed_mib": -1, "available_mib": 0}).encode(),
    }
    send_raw(kafka_bootstrap, topics.telemetry, [(b"hv-a", value) for value in bad.values()] + [(b"hv-a", good)])
    wait_until_quiet(kafka_bootstrap, topics.event_log)

    letters = [json.loads(v) for _, v in read_topic(kafka_bootstrap, topics.dead_letters)]
    originals = {letter["original"]: letter for letter in letters}
    for kind, value in bad.items():
        assert value.decode() in originals, f"{kind} is missing from the dead letters"
        assert originals[value.decode()]["reason"], kind
    assert "time goes backwards" in originals[bad["backwards"].decode()]["reason"]
    assert originals[bad["unknown_vm"].decode()]["field"] == "vm"
    logged = [unchained(decode(line)) for line in event_log(kafka_bootstrap, topics)]
    assert decode(good) in logged, "a valid report after them is folded"
    metrics = worker.metrics()
    total = sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                if line.startswith("dmtwin_dead_letters_total{"))
    assert total == len(letters) >= len(bad)


def test_a_restarted_worker_resumes_from_its_tables_without_losing_or_repeating(kafka_bootstrap, worker_factory):
    app_id, topics = unique_topics()
    first = worker_factory(app_id, topics, name="w").start()
    run_feed(scenario(duration_s=60), kafka_bootstrap, topics, speed=0, drain_s=3)
    wait_until_quiet(kafka_bootstrap, topics.event_log)
    first.stop()
    before = len(event_log(kafka_bootstrap, topics))

    later = scenario(duration_s=120)
    second = worker_factory(app_id, topics, name="w")  # same data dir: RocksDB keeps the tables
    second.start()
    # The fleet goes on where it was: its events from second 60 on (the first 60 s are repeated by the
    # feeder as the same scenario; the twin rejects the repeated starts and skips nothing else).
    run_feed(later, kafka_bootstrap, topics, speed=0, drain_s=5)
    wait_until_quiet(kafka_bootstrap, topics.event_log)

    log = event_log(kafka_bootstrap, topics)
    assert len(log) > before
    result = replay(log)
    assert result.rejected == [], "a repeated or lost decision would break the per-VM sequence"
    assert verify_chain(log) == [], "the chain goes on across the restart (its head is in the table)"
    assert states(result) == second.hosts()
    commands = [json.loads(v) for _, v in read_topic(kafka_bootstrap, topics.balloon_commands)]
    commands += [json.loads(v) for _, v in read_topic(kafka_bootstrap, topics.addition_commands)]
    keys = [(c["host"], c["vm"], c["seq"]) for c in commands]
    assert len(keys) == len(set(keys)), "no command was sent twice"
    assert len(keys) == sum(1 for d in result.decisions if d.type != "decision.smart_paging_started"
                            and d.type != "decision.smart_paging_ended")


def test_a_restarted_worker_does_not_wait_for_the_host_events_it_had_processed(kafka_bootstrap, worker_factory):
    """A restarted worker is delivered nothing it committed before. Its caught-up host-events topic
    must not count as records still to come, or each frame would wait the event-time merge's 2 s
    for them (it did, after every restart, until the partition's next host event)."""
    app_id, topics = unique_topics()
    first = worker_factory(app_id, topics, name="w").start()
    run_feed(scenario(duration_s=10), kafka_bootstrap, topics, speed=0, drain_s=3)
    wait_until_quiet(kafka_bootstrap, topics.event_log)
    first.stop()
    last_at = max(json.loads(v)["at_ms"] for v in event_log(kafka_bootstrap, topics))
    second = worker_factory(app_id, topics, name="w").start()
    deadline = time.monotonic() + 60
    while "hv-a" not in second.hosts() and time.monotonic() < deadline:  # its partition loaded
        time.sleep(0.2)
    frame = {"v": 1, "at_ms": last_at + 1000, "host": "hv-a", "type": "guest.status_frame",
             "reports": [{"vm": vm, "committed_mib": 400, "available_mib": 0} for vm in ("busy", "idle", "legacy", "web")]}
    send_raw(kafka_bootstrap, topics.telemetry, [(b"hv-a", json.dumps(frame).encode())])
    sent = read_records(kafka_bootstrap, topics.telemetry)[-1].timestamp
    logged = []
    while not logged and time.monotonic() < deadline:
        logged = [r.timestamp for r in read_records(kafka_bootstrap, topics.event_log)
                  if json.loads(r.value)["at_ms"] == frame["at_ms"] and b"guest.status_frame" in r.value]
        time.sleep(0.2)
    assert logged, "the frame was logged"
    assert logged[0] - sent < 1500, f"the frame waited {logged[0] - sent} ms for host events processed before"


def test_two_workers_share_hosts_and_one_takes_over_when_the_other_stops(kafka_bootstrap, worker_factory):
    app_id, topics = unique_topics()
    hosts = ("hv-a", "hv-b", "hv-c", "hv-d", "hv-e", "hv-f")
    one = worker_factory(app_id, topics, name="one").start()
    two = worker_factory(app_id, topics, name="two").start()
    run_feed(scenario(hosts=hosts, duration_s=40), kafka_bootstrap, topics, speed=0, drain_s=3)
    wait_until_quiet(kafka_bootstrap, topics.event_log)
    mine, theirs = set(one.hosts()), set(two.hosts())
    assert mine and theirs and not (mine & theirs), (mine, theirs)
    assert mine | theirs == set(hosts)

    two.stop()
    # More of the same fleet: the remaining worker now owns every partition and every host's state.
    run_feed(scenario(hosts=hosts, duration_s=80), kafka_bootstrap, topics, speed=0, drain_s=5)
    deadline = time.monotonic() + 120
    while set(one.hosts()) != set(hosts):  # the group rebalances, then the worker recovers the tables
        assert time.monotonic() < deadline, f"worker one owns only {sorted(one.hosts())}"
        time.sleep(1)
    wait_until_quiet(kafka_bootstrap, topics.event_log)
    log = event_log(kafka_bootstrap, topics)
    result = replay(log)
    assert result.rejected == []
    assert verify_chain(log) == [], "the chain goes on when another worker takes a host over"
    assert states(result) == one.hosts()
