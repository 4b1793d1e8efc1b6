"""The worker's per-message step, without Kafka: the same core as replay, and nothing lost."""

import json

from streams.worker.processor import HostProcessor, HostRecord, Source
from twin.chain import unchained
from twin.engine import Twin
from twin.events import BalancerRound, FrameReport, StatusFrame
from twin.log import decode, encode, replay
from twin.scenario import Fleet, Scenario

SCENARIO = Scenario.model_validate({"seed": 2, "duration_s": 90, "hosts": [
    {"name": "h", "total_mib": 8192, "reserve_mib": 1024, "vms": [
        {"name": "a", "startup_mib": 1024, "minimum_mib": 512, "maximum_mib": 6144,
         "workload": {"kind": "steady", "mib": 3000}},
        {"name": "b", "startup_mib": 3072, "minimum_mib": 512, "maximum_mib": 4096,
         "guest": {"hot_add": False}, "workload": {"kind": "idle"}},
    ]}]})


def messages():
    """What a collector sends: lifecycle events, then a frame per second (answers left out)."""
    fleet = Fleet(SCENARIO)
    out = [encode(join).encode() for join in fleet.joins()]
    for second in range(SCENARIO.duration_s):
        fleet.second = second
        host = SCENARIO.hosts[0]
        out += [encode(e).encode() for e in fleet.lifecycle(host)]
        reports = fleet.reports(host)
        if reports:
            frame = StatusFrame(at_ms=fleet.now_ms(), host="h", reports=[
                FrameReport(vm=r.vm, committed_mib=r.committed_mib, available_mib=r.available_mib)
                for r in reports])
            out.append(frame.model_dump_json().encode())
    return out


def run(processor, values, stored=None, start_offset=0):
    """Fold ``values`` into a copy of ``stored`` (a HostRecord); the record, log and dead letters."""
    record = stored.copy() if stored is not None else None
    log, dead = [], []
    for offset, value in enumerate(values, start=start_offset):
        new, out = processor.process(b"h", value, Source("in", 0, offset), record)
        record = new if new is not None else record
        log += out.log
        dead += out.dead_letters
    return record, log, dead


def test_the_log_replays_to_the_worker_state_and_rounds_follow_event_time():
    stored, log, dead = run(HostProcessor(), messages())
    assert dead == []
    state = HostRecord.from_bytes(stored.to_bytes()).state
    assert stored.entries == len(log)
    result = replay(log)
    assert result.rejected == []
    assert result.twin.hosts["h"].to_dict() == state.to_dict()
    ticks = [json.loads(line)["at_ms"] for line in log if b'"balancer.round"' in line or b'"balanced":true' in line]
    assert len(ticks) == SCENARIO.duration_s and all(b - a == 1000 for a, b in zip(ticks, ticks[1:]))


def test_a_frame_is_one_log_entry_and_a_round_with_its_decisions_another():
    processor, record, per_frame = HostProcessor(), None, []
    for offset, value in enumerate(messages()):
        record, out = processor.process(b"h", value, Source("in", 0, offset), record)
        if b'"guest.status_frame"' in value:
            per_frame.append(len(out.log))
            assert [json.loads(line)["type"] for line in out.log] in (
                ["guest.status_frame"], ["guest.status_frame", "balancer.round"])
    assert max(per_frame) == 2



def test_decisions_can_be_re_derived_from_the_inputs_in_the_log():
    _, log, _ = run(HostProcessor(), messages())
    result = replay(log)
    rederived = Twin().rederive(decode(line) for line in log)
    assert [unchained(d) for d in result.decisions] == [unchained(d) for d in rederived] and rederived


def test_a_record_read_back_from_its_bytes_goes_on_exactly_like_the_one_in_memory():
    values = messages()
    stored, log, _ = run(HostProcessor(), values[:50])
    restored = HostRecord.from_bytes(stored.to_bytes())  # another worker, after a rebalance
    rest, log_rest, _ = run(HostProcessor(), values[50:], restored, start_offset=50)
    whole, log_whole, _ = run(HostProcessor(), values)
    assert log + log_rest == log_whole and rest.to_bytes() == whole.to_bytes()


def test_an_input_beyond_the_lateness_is_dead_lettered_as_late_and_changes_nothing():
    processor = HostProcessor(lateness_ms=30_000)
    stored, _, _ = run(processor, messages()[:60])
    now = stored.state.last_at_ms
    late = json.dumps({"type": "guest.status", "at_ms": now - 30_001, "host": "h", "vm": "a",
                       "committed_mib": 5, "available_mib": 0}).encode()
    within = json.dumps({"type": "guest.status", "at_ms": now - 30_000, "host": "h", "vm": "a",
                         "committed_mib": 5, "available_mib": 0}).encode()
    before = stored.to_bytes()
    record, out = processor.process(b"h", late, Source("in", 0, 500), stored.copy())
    assert out.reasons == ["late"] and out.log == [] and record.to_bytes() == before
    letter = json.loads(out.dead_letters[0].value)
    assert letter["field"] == "at_ms" and "late: 30001 ms behind" in letter["reason"]
    _, out = processor.process(b"h", within, Source("in", 0, 501), stored.copy())
    assert out.dead_letters == [] and len(out.log) == 1  # folded, superseded by newer reports


def test_lateness_reads_the_clock_a_round_waiting_in_the_batch_moves():
    """A round waiting in a batch moves its host's clock before the host's next message is read:
    a frame late only against that round is dead-lettered in a batch as it is alone (it used to
    pass the stale clock, and be logged with its reports superseded)."""
    from streams.worker.processor import decode as decode_message

    processor = HostProcessor(lateness_ms=30_000)
    stored, _, _ = run(processor, messages()[:60])
    now = stored.state.last_at_ms + 1000

    def frame(at_ms: int) -> bytes:
        return StatusFrame(at_ms=at_ms, host="h", reports=[FrameReport(vm="a", committed_mib=5, available_mib=0)]
                           ).model_dump_json().encode()

    values = [frame(now), frame(now - 30_500)]  # the first makes a round due at ``now``
    _, alone_log, alone_dead = run(processor, values, stored, start_offset=100)
    items = [decode_message(b"h", value, Source("in", 0, 100 + k)) for k, value in enumerate(values)]
    outs, _ = processor.fold_batch(items, lambda host: stored.copy())
    assert [o.reasons for o in outs] == [[], ["late"]]
    assert [line for o in outs for line in o.log] == alone_log and len(alone_log) == 1
    assert [d.value for o in outs for d in o.dead_letters] == [d.value for d in alone_dead]


def test_a_huge_message_is_dead_lettered_raw_once_with_its_reason_in_a_header():
    huge = b'{"type": "guest.status", "junk": "' + b"x" * 1_000_000 + b'"}'
    _, out = HostProcessor().process(b"h", huge, Source("in", 0, 7), None)
    (letter,) = out.dead_letters
    assert letter.value == huge
    (name, description), = letter.headers
    described = json.loads(description)
    assert name == "dmtwin-dead-letter" and described["original"] is None
    assert described["original_bytes"] == len(huge) and described["offset"] == 7
    assert len(description) < 2000


def test_bad_messages_become_dead_letters_with_their_bytes_and_reason():
    processor = HostProcessor()
    stored, _, _ = run(processor, messages()[:10])
    frame = json.dumps({"type": "guest.status_frame", "at_ms": 1_767_225_609_000, "host": "h", "reports": [
        {"vm": "a", "committed_mib": 2000, "available_mib": 0},
        {"vm": "ghost", "committed_mib": 1, "available_mib": 0}]}).encode()
    bad = [b"{oops", b'{"type":"vm.teleported","at_ms":1,"host":"h"}', frame]
    reasons = []
    for offset, value in enumerate(bad, start=100):
        record, out = processor.process(b"h", value, Source("in", 0, offset), stored)
        stored = record or stored
        reasons += out.reasons
        for letter in out.dead_letters:
            record = json.loads(letter.value)
            assert record["original"] == value.decode() and record["offset"] == offset and record["reason"]
    assert reasons == ["json", "type", "state"]
    state = stored.state
    assert state.vm("a").demand_mib is not None  # the good report of the frame was kept
    _, out = processor.process(b"other", b'{"type":"balancer.tick","at_ms":1,"host":"h"}',
                               Source("in", 0, 200), stored)
    assert out.reasons == ["schema"] and "key" in json.loads(out.dead_letters[0].value)["reason"]


def fleet_messages():
    """Three hosts' messages, interleaved as one partition delivers them, frames and all."""
    scenario = Scenario.model_validate({"seed": 4, "duration_s": 60, "hosts": [
        {"name": f"h{h}", "total_mib": 6144 + 2048 * h, "reserve_mib": 512, "policy": policy, "vms": [
            {"name": f"vm{i}", "startup_mib": 1024, "minimum_mib": 512, "maximum_mib": 4096,
             "workload": {"kind": "bursty", "base_mib": 800, "burst_mib": 2500, "bursts_per_hour": 300}}
            for i in range(3 + h)]} for h, policy in enumerate(["hyperv", "mom", "esx"])]})
    fleet = Fleet(scenario)
    out = [(join.host, encode(join).encode()) for join in fleet.joins()]
    for second in range(scenario.duration_s):
        fleet.second = second
        for host in scenario.hosts:
            out += [(host.name, encode(e).encode()) for e in fleet.lifecycle(host)]
            reports = fleet.reports(host)
            if second % 7 == 3:  # some hosts send reports one by one
                out += [(host.name, encode(r).encode()) for r in reports]
            elif reports:
                frame = StatusFrame(at_ms=fleet.now_ms(), host=host.name, reports=[
                    FrameReport(vm=r.vm, committed_mib=r.committed_mib, available_mib=r.available_mib) for r in reports])
                out.append((host.name, frame.model_dump_json().encode()))
    return out


def test_a_batch_folds_and_logs_each_host_exactly_as_one_message_at_a_time():
    from streams.worker.processor import decode as decode_message

    processor, messages = HostProcessor(), fleet_messages()
    alone_records, alone_logs = {}, {}
    for offset, (host, value) in enumerate(messages):
        record, out = processor.process(host.encode(), value, Source("in", 0, offset), alone_records.get(host))
        if record is not None:
            alone_records[host] = record
        alone_logs.setdefault(host, []).extend(out.log)
    batch_records, batch_logs = {}, {}
    items = [decode_message(host.encode(), value, Source("in", 0, offset)) for offset, (host, value) in enumerate(messages)]
    for start in range(0, len(items), 37):  # batches of every size, across hosts
        outs, changed = processor.fold_batch(items[start:start + 37], lambda h: batch_records[h].copy() if h in batch_records else None)
        batch_records.update(changed)
        for item, out in zip(items[start:start + 37], outs):
            batch_logs.setdefault(item.host, []).extend(out.log)
    assert batch_logs == alone_logs and sum(map(len, alone_logs.values())) > 300
    assert {h: r.to_bytes() for h, r in batch_records.items()} == {h: r.to_bytes() for h, r in alone_records.items()}
    rounds = sum(line.count(b'"balancer.round"') for log in alone_logs.values() for line in log)
    marked = sum(line.count(b'"balanced":true') for log in alone_logs.values() for line in log)
    assert rounds + marked >= 3 * 59 and marked > 0 and rounds > 0  # an empty round after a frame: in it
    for host, log in batch_logs.items():  # and each round is what the host's own round decides
        entries = [decode(line) for line in log]
        recorded = [d for e in entries if isinstance(e, BalancerRound) for d in e.decisions]
        assert [unchained(d) for d in Twin().rederive(entries) if not d.type.endswith("started")] == \
               [unchained(d) for d in recorded] and recorded
