"""The worker's per-message step, without Kafka: the same core as replay, and nothing lost."""

import json

from streams.processor import HostProcessor, HostRecord, Source
from twin.chain import unchained
from twin.engine import Twin
from twin.events import FrameReport, StatusFrame
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
    log, dead = [], []
    for offset, value in enumerate(values, start=start_offset):
        blob, out = processor.process(b"h", value, Source("in", 0, offset), stored)
        stored = blob if blob is not None else stored
        log += out.log
        dead += out.dead_letters
    return stored, log, dead


def test_the_log_replays_to_the_worker_state_and_rounds_follow_event_time():
    stored, log, dead = run(HostProcessor(), messages())
    assert dead == []
    state = HostRecord.from_bytes(stored).state
    result = replay(log)
    assert result.rejected == []
    assert result.twin.hosts["h"].to_dict() == state.to_dict()
    ticks = [json.loads(line)["at_ms"] for line in log if b'"balancer.tick"' in line]
    assert len(ticks) == SCENARIO.duration_s and all(b - a == 1000 for a, b in zip(ticks, ticks[1:]))


def test_decisions_can_be_re_derived_from_the_inputs_in_the_log():
    _, log, _ = run(HostProcessor(), messages())
    result = replay(log)
    inputs = [line for line in log if b'"decision.' not in line]
    rederived = Twin().handle_all(decode(line) for line in inputs)
    assert rederived == [unchained(d) for d in result.decisions] and rederived


def test_a_redelivered_message_is_skipped_and_a_cold_cache_gives_the_same_result():
    values = messages()
    stored, log, _ = run(HostProcessor(), values[:50])
    again, log_again, _ = run(HostProcessor(), values[45:50], stored, start_offset=45)  # redelivered
    assert log_again == [] and again == stored
    rest, log_rest, _ = run(HostProcessor(), values[50:], stored, start_offset=50)  # new process: cold cache
    whole, log_whole, _ = run(HostProcessor(), values)
    assert log + log_rest == log_whole and rest == whole


def test_bad_messages_become_dead_letters_with_their_bytes_and_reason():
    processor = HostProcessor()
    stored, _, _ = run(processor, messages()[:10])
    frame = json.dumps({"type": "guest.status_frame", "at_ms": 1_767_225_609_000, "host": "h", "reports": [
        {"vm": "a", "committed_mib": 2000, "available_mib": 0},
        {"vm": "ghost", "committed_mib": 1, "available_mib": 0}]}).encode()
    bad = [b"{oops", b'{"type":"vm.teleported","at_ms":1,"host":"h"}', frame]
    reasons = []
    for offset, value in enumerate(bad, start=100):
        blob, out = processor.process(b"h", value, Source("in", 0, offset), stored)
        stored = blob or stored
        reasons += out.reasons
        for letter in out.dead_letters:
            record = json.loads(letter)
            assert record["original"] == value.decode() and record["offset"] == offset and record["reason"]
    assert reasons == ["json", "type", "state"]
    state = HostRecord.from_bytes(stored).state
    assert state.vm("a").demand_mib is not None  # the good report of the frame was kept
    _, out = processor.process(b"other", b'{"type":"balancer.tick","at_ms":1,"host":"h"}',
                               Source("in", 0, 200), stored)
    assert out.reasons == ["schema"] and "key" in json.loads(out.dead_letters[0])["reason"]
