"""Logs as the worker writes them: a frame of reports is one entry, a round with its decisions
another. They fold, verify and explain exactly like the same run written event by event."""

import json
import re

from twin.audit import verify
from twin.explain import explain
from twin.chain import Chainer
from twin.engine import Twin
from twin.events import EVENT_ADAPTER, BalancerRound, BalancerTicked, StatusFrame
from twin.chain import unchained
from twin.log import decode, encode, replay
from twin.scenario import simulate

from .logs import T0, chained, fleet

SCENARIO = fleet()
FLAT = chained(SCENARIO)
CHAINER = Chainer()
FRAMED = [CHAINER.line(entry) for entry in simulate(SCENARIO, framed=True)]


def rechain(lines):
    chainer = Chainer(version=None)
    return [chainer.line(decode(line)) for line in lines]


def rounds_with(kind: str) -> list[int]:
    return [i for i, line in enumerate(FRAMED) if '"balancer.round"' in line and f'"{kind}"' in line]


def test_a_framed_log_has_one_entry_per_frame_and_round_and_folds_to_the_same_state():
    kinds = [json.loads(line)["type"] for line in FRAMED]
    assert kinds.count("guest.status_frame") == kinds.count("balancer.round") == 2 * SCENARIO.duration_s
    assert "guest.status" not in kinds and "balancer.tick" not in kinds
    flat_kinds = [json.loads(line)["type"] for line in FLAT]
    batched = sum(1 for k in flat_kinds if k in ("guest.status", "balancer.tick") or k.startswith("decision."))
    restarts = flat_kinds.count("decision.smart_paging_started")  # not of a round: an entry of its own
    assert len(FRAMED) == len(FLAT) - batched + restarts + 4 * SCENARIO.duration_s
    flat, framed = replay(FLAT), replay(FRAMED)
    assert flat.rejected == framed.rejected == []
    assert {h: s.to_dict() for h, s in flat.twin.hosts.items()} == {h: s.to_dict() for h, s in framed.twin.hosts.items()}
    assert [d.model_dump_json() for d in flat.decisions] == [d.model_dump_json() for d in framed.decisions]


def test_a_framed_log_verifies_and_counts_what_the_flat_one_counts():
    flat, framed = verify(FLAT), verify(FRAMED)
    assert framed.clean and framed.status == "UNSIGNED", framed.to_text()
    assert (framed.inputs, framed.decisions) == (flat.inputs, flat.decisions)
    assert framed.events == len(FRAMED)


def test_a_round_entry_is_written_without_the_fields_its_decisions_share():
    line = FRAMED[rounds_with("decision.hot_add")[0]]
    data = json.loads(line)
    assert all(set(d) >= {"vm", "seq", "type"} and not set(d) & {"v", "at_ms", "host"} for d in data["decisions"])
    entry = decode(line)
    assert isinstance(entry, BalancerRound)
    assert all(d.at_ms == entry.at_ms and d.host == entry.host for d in entry.decisions)


def test_a_rewritten_decision_inside_a_round_is_found_at_its_line():
    i = rounds_with("decision.hot_add")[2]
    amount = re.search(r'"add_mib":(\d+)', FRAMED[i])[1]
    planted = list(FRAMED)
    planted[i] = planted[i].replace(f'"add_mib":{amount}', f'"add_mib":{int(amount) + 128}', 1)
    result = verify(rechain(planted))
    assert result.chain == [] and result.rejected == []
    [wrong] = result.mismatches
    assert wrong.position == i + 1
    assert f"add {amount} MiB" in wrong.expected and f"add {int(amount) + 128} MiB" in wrong.recorded


def test_a_decision_dropped_from_a_round_or_a_round_emptied_is_reported():
    i = rounds_with("decision.balloon")[0]
    data = json.loads(FRAMED[i])
    gone = data["decisions"][0]
    data["decisions"] = data["decisions"][1:]
    del data["chain"]
    planted = list(FRAMED)
    planted[i] = json.dumps(data)
    result = verify(rechain(planted))
    assert [(m.position, m.vm, m.recorded) for m in result.mismatches][:1] == [(i + 1, gone["vm"], "nothing")]


def test_a_frame_with_a_report_the_host_refuses_is_rejected_as_a_whole_naming_the_report():
    i = next(i for i, line in enumerate(FRAMED) if '"guest.status_frame"' in line and '"host":"h1"' in line)
    planted = list(FRAMED)
    planted[i] = planted[i].replace('"vm":"b"', '"vm":"ghost"', 1)
    result = replay(planted)
    [bad] = result.rejected
    assert (bad.position, bad.field, bad.value) == (i + 1, "reports.1.vm", "ghost")
    assert "no such VM running" in bad.reason


def test_a_bad_decision_inside_a_round_names_its_field():
    i = rounds_with("decision.balloon")[0]
    planted = re.sub(r'"seq":\d+', '"seq":0', FRAMED[i], count=1)
    try:
        decode(planted, 7)
    except Exception as error:  # noqa: BLE001 - the rejection is what is tested
        assert getattr(error, "field", None) == "decisions.0.seq" and getattr(error, "position", None) == 7
    else:
        raise AssertionError("a decision with seq 0 was accepted")


def test_explain_reads_a_framed_log_like_a_flat_one():
    at = T0 + 45_000
    assert explain(FRAMED, "a", at, "h2").to_text() == explain(FLAT, "a", at, "h2").to_text()


def test_a_live_ingest_folds_a_frame_and_its_round_like_the_log_replays_them():
    twin = Twin()
    entries = []
    for line in FLAT[:4]:  # the hosts and their VMs
        entries += twin.ingest(decode(line))[0]
    frame = EVENT_ADAPTER.validate_python({"type": "guest.status_frame", "at_ms": T0 + 1000, "host": "h1", "reports": [
        {"vm": "a", "committed_mib": 3000, "available_mib": 0}, {"vm": "ghost", "committed_mib": 1, "available_mib": 0},
        {"vm": "b", "committed_mib": 500, "available_mib": 100}]})
    logged, rejected = twin.ingest(frame)
    assert [(k, e.field, e.value) for k, e in rejected] == [(1, "vm", "ghost")]
    assert isinstance(logged[0], StatusFrame) and [r.vm for r in logged[0].reports] == ["a", "b"]
    assert isinstance(logged[1], BalancerRound) and logged[1].decisions
    again = replay([Chainer().line(e) for e in entries + logged])
    assert again.rejected == [] and again.twin.hosts["h1"].to_dict() == twin.hosts["h1"].to_dict()


def worker_log() -> list[str]:
    """A log as the worker writes it (``HostProcessor``, batches of 37 messages of 3 hosts)."""
    from streams.worker.processor import HostProcessor, Source, decode as decode_message
    from tests.streams.test_processor import fleet_messages

    processor, records, lines = HostProcessor(), {}, []
    items = [decode_message(host.encode(), value, Source("in", 0, k)) for k, (host, value) in enumerate(fleet_messages())]
    for start in range(0, len(items), 37):
        outs, changed = processor.fold_batch(items[start:start + 37], lambda h: records[h].copy() if h in records else None)
        records.update(changed)
        lines += [line.decode() for out in outs for line in out.log]
    return lines


def unmarked(lines: list[str]) -> list[str]:
    """The same log with each frame marked ``balanced`` written as the frame and an empty round."""
    out = []
    for entry in map(decode, lines):
        if isinstance(entry, StatusFrame) and entry.balanced:
            out += [entry.model_copy(update={"balanced": False}),
                    BalancerRound(at_ms=entry.at_ms, host=entry.host, decisions=[])]
        else:
            out.append(entry)
    chainer = Chainer(version=None)
    return [chainer.line(entry) for entry in out]


MARKED = worker_log()


def test_a_frame_marked_balanced_folds_and_verifies_like_its_frame_and_empty_round() -> None:
    framed = unmarked(MARKED)
    assert 0 < sum('"balanced":true' in line for line in MARKED) and len(MARKED) < len(framed)
    assert {h: s.to_dict() for h, s in replay(MARKED).twin.hosts.items()} == \
           {h: s.to_dict() for h, s in replay(framed).twin.hosts.items()}
    as_framed, as_marked = verify(framed), verify(MARKED)
    assert as_marked.clean, as_marked.to_text()
    assert (as_marked.inputs, as_marked.decisions) == (as_framed.inputs, as_framed.decisions)
    assert [unchained(d) for d in Twin().rederive(map(decode, MARKED))] == \
           [unchained(d) for d in Twin().rederive(map(decode, framed))]


def test_a_round_that_decided_something_hidden_as_a_mark_is_reported_at_its_frame() -> None:
    k = next(i for i, line in enumerate(MARKED) if '"balancer.round"' in line and '"decision.balloon"' in line)
    hidden = decode(MARKED[k])
    f = max(j for j in range(k) if f'"host":"{hidden.host}"' in MARKED[j])  # the host's entry before
    frame = decode(MARKED[f])
    assert isinstance(frame, StatusFrame) and frame.at_ms == hidden.at_ms
    forged = list(MARKED)
    forged[f] = encode(frame.model_copy(update={"balanced": True}))
    del forged[k]
    result = verify(rechain(forged))  # re-chained, as someone who can write the log would
    assert not result.clean
    assert {(m.position, m.vm, m.recorded) for m in result.mismatches} == \
           {(f + 1, d.vm, "nothing") for d in hidden.decisions}


def test_an_input_frame_cannot_say_that_its_round_ran() -> None:
    import pytest

    from twin.errors import Rejected

    twin = replay(FRAMED[:4]).twin
    frame = StatusFrame(at_ms=T0 + 500, host="h1", reports=[], balanced=True)
    with pytest.raises(Rejected) as refused:
        twin.frame(frame)
    assert (refused.value.field, refused.value.value) == ("balanced", True)
    assert "input frame cannot say" in refused.value.reason


def test_the_worker_dead_letters_an_input_frame_that_says_its_round_ran() -> None:
    from streams.worker.processor import HostProcessor, Source

    processor, record = HostProcessor(), None
    for k, line in enumerate(FRAMED[:4]):
        record, _ = processor.process(b"h1", line.encode(), Source("in", 0, k), record)
    frame = StatusFrame(at_ms=T0 + 500, host="h1", reports=[], balanced=True)
    _, out = processor.process(b"h1", frame.model_dump_json().encode(), Source("in", 0, 9), record)
    assert out.log == [] and out.reasons == ["state"]
    [letter] = out.dead_letters
    said = json.loads(letter.value)
    assert (said["field"], said["value"]) == ("balanced", True) and "cannot say" in said["reason"]


def test_a_marked_frame_behind_its_host_clock_is_refused_and_changes_nothing() -> None:
    """A ``balanced`` frame's round ticks the host's clock: a frame behind it is refused as a
    whole, before any of its reports folds."""
    lines = worker_log()
    twin = replay(lines).twin
    state = next(iter(twin.hosts.values()))
    frame = next(decode(line) for line in reversed(lines) if '"balanced":true' in line and f'"host":"{state.name}"' in line)
    ahead = state.last_at_ms + 5000
    twin.apply(BalancerTicked(at_ms=ahead, host=state.name))  # the host's clock, past its VMs' last reports
    behind = frame.model_copy(update={"at_ms": ahead - 2000})
    before = state.to_bytes()
    try:
        twin.apply(behind)
    except Exception as error:  # noqa: BLE001 - the refusal is what is tested
        assert getattr(error, "field", None) == "at_ms"
    else:
        raise AssertionError("a marked frame behind its host's clock was accepted")
    assert state.to_bytes() == before
