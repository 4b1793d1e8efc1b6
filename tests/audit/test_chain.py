"""Tamper evidence: every host's log is a hash chain, and each kind of tampering is reported where
it happened (by 1-based line number: list index + 1), and the check goes on after it."""

import json

import pytest

from streams.worker.processor import HostProcessor, HostRecord, Source
from twin.audit import verify
from twin.chain import GENESIS, Chainer, link_digest, unchained, verify_chain
from twin.events import BalancerTicked, HostJoined
from twin.log import decode, encode, replay
from twin.scenario import simulate

from .logs import chained, fleet

LINES = chained(fleet())


def host_lines(lines, host):
    return [i for i, line in enumerate(lines) if f'"host":"{host}"' in line]


def kinds(lines, **options):
    return [(p.position, p.host, p.kind) for p in verify_chain(lines, **options)]


def test_an_untouched_log_verifies_and_replays_like_an_unchained_one():
    assert verify_chain(LINES) == []
    plain = [encode(e) for e in simulate(fleet())]
    assert [json.loads(a) | {"chain": None} for a in LINES][5:] == [json.loads(b) | {"chain": None} for b in plain][5:]
    chained_replay, plain_replay = replay(LINES), replay(plain)
    assert chained_replay.rejected == [] and plain_replay.rejected == []
    assert {h: s.to_dict() for h, s in chained_replay.twin.hosts.items()} == \
        {h: s.to_dict() for h, s in plain_replay.twin.hosts.items()}
    assert [unchained(d) for d in chained_replay.decisions] == plain_replay.decisions


def test_the_chain_is_sha256_of_the_previous_digest_and_the_canonical_json():
    first = decode(LINES[0])  # h1 joins
    assert first.chain == link_digest(GENESIS, unchained(first).model_dump_json().encode())
    h1 = [decode(LINES[i]) for i in host_lines(LINES, "h1")[:2]]
    assert h1[1].chain == link_digest(h1[0].chain, encode(unchained(h1[1])).encode())
    assert encode(decode(LINES[7])) == LINES[7], "a chained line re-encodes to the same bytes"
    assert LINES[0].endswith(f',"chain":"{first.chain}"}}') and '"twin_version":' in LINES[0]


def test_unchained_lines_keep_their_bytes():
    joined = HostJoined(at_ms=1, host="h", total_mib=4096, reserve_mib=512)
    assert encode(joined) == '{"v":1,"at_ms":1,"host":"h","type":"host.joined","total_mib":4096,"reserve_mib":512,"policy":"hyperv"}'
    assert verify_chain([encode(joined)]) == []


def edit(lines, i, old, new):
    out = list(lines)
    assert old in out[i]
    out[i] = out[i].replace(old, new, 1)
    return out


def status_line(lines, host="h1", n=20):
    return [i for i in host_lines(lines, host) if '"guest.status"' in lines[i]][n]


def test_a_changed_line_is_reported_at_its_position():
    i = status_line(LINES)
    committed = json.loads(LINES[i])["committed_mib"]
    tampered = edit(LINES, i, f'"committed_mib":{committed}', f'"committed_mib":{committed + 1}')
    [problem] = verify_chain(tampered)
    assert (problem.position, problem.host, problem.kind) == (i + 1, "h1", "changed")


def test_an_altered_chain_value_is_told_from_a_changed_content():
    i = status_line(LINES)
    digest = json.loads(LINES[i])["chain"]
    [problem] = verify_chain(edit(LINES, i, digest, "f" * 64))
    assert (problem.position, problem.kind) == (i + 1, "changed") and "chain value" in problem.detail


def test_a_removed_decision_is_reported_where_it_is_missing():
    i = next(i for i in host_lines(LINES, "h1") if '"decision.hot_add"' in LINES[i])
    tampered = LINES[:i] + LINES[i + 1:]
    following = next(j for j in host_lines(tampered, "h1") if j >= i)
    [problem] = verify_chain(tampered)
    assert (problem.position, problem.host, problem.kind) == (following + 1, "h1", "removed")
    assert "missing" in problem.detail


def test_a_removed_report_breaks_the_chain_where_it_was():
    i = status_line(LINES)
    tampered = LINES[:i] + LINES[i + 1:]
    following = next(j for j in host_lines(tampered, "h1") if j >= i)
    [problem] = verify_chain(tampered)
    assert problem.position == following + 1 and problem.kind == "changed" and "removed" in problem.detail


def test_an_inserted_copy_of_an_earlier_line_is_reported():
    i = status_line(LINES)
    tampered = LINES[:i] + [LINES[status_line(LINES, n=5)]] + LINES[i:]
    [problem] = verify_chain(tampered)
    assert (problem.position, problem.kind) == (i + 1, "inserted") and "copy" in problem.detail


def test_an_inserted_line_with_a_forged_chain_is_reported():
    h1 = host_lines(LINES, "h1")
    before = json.loads(LINES[h1[30]])
    body = BalancerTicked(at_ms=before["at_ms"], host="h1").model_dump_json()
    forged = body[:-1] + f',"chain":"{link_digest(before["chain"], body.encode())}"}}'
    tampered = LINES[:h1[31]] + [forged] + LINES[h1[31]:]
    assert kinds(tampered) == [(h1[31] + 1, "h1", "inserted")]


def test_an_inserted_line_without_a_chain_is_reported():
    i = status_line(LINES)
    extra = json.dumps({"v": 1, "at_ms": json.loads(LINES[i])["at_ms"], "host": "h1", "type": "balancer.tick"},
                       separators=(",", ":"))
    assert kinds(LINES[:i] + [extra] + LINES[i:]) == [(i + 1, "h1", "inserted")]


def test_swapped_lines_are_reported_as_reordered():
    h1 = host_lines(LINES, "h1")
    a, b = h1[40], h1[41]
    tampered = list(LINES)
    tampered[a], tampered[b] = tampered[b], tampered[a]
    assert kinds(tampered) == [(a + 1, "h1", "reordered")]


def test_a_line_moved_far_back_is_reported_as_reordered():
    h1 = host_lines(LINES, "h1")
    tampered = list(LINES)
    moved = tampered.pop(h1[50])
    tampered.insert(h1[40], moved)
    assert kinds(tampered) == [(h1[40] + 1, "h1", "reordered")]


def test_a_stripped_chain_is_reported_as_missing():
    i = status_line(LINES)
    line = LINES[i]
    tampered = LINES[:i] + [line[: line.rindex(',"chain"')] + "}"] + LINES[i + 1:]
    [problem] = verify_chain(tampered)
    assert (problem.position, problem.kind) == (i + 1, "missing") and "content is intact" in problem.detail


def test_a_truncated_line_is_reported_and_the_rest_still_checked():
    i, j = status_line(LINES, n=10), status_line(LINES, "h2", n=30)
    tampered = list(LINES)
    tampered[i] = tampered[i][:45]
    tampered = edit(tampered, j, '"type":"guest.status","committed_mib":', '"type":"guest.status","committed_mib":1')
    assert kinds(tampered) == [(i + 1, "?", "changed"), (j + 1, "h2", "changed")]


def test_a_log_cut_short_is_caught_with_the_heads_of_the_chains():
    chainer = Chainer()
    lines = [chainer.line(e) for e in simulate(fleet(duration_s=20))]
    assert verify_chain(lines, heads=chainer.heads) == []
    last_h2 = host_lines(lines, "h2")[-1]
    cut = lines[:last_h2] + lines[last_h2 + 1:]
    assert kinds(cut, heads=chainer.heads) == [(len(cut) + 1, "h2", "removed")]


def test_several_tamperings_are_all_reported_in_order():
    h1, h2 = host_lines(LINES, "h1"), host_lines(LINES, "h2")
    tampered = edit(LINES, status_line(LINES, n=3), '"committed_mib":', '"committed_mib":9')
    tampered[h2[60]], tampered[h2[61]] = tampered[h2[61]], tampered[h2[60]]
    tampered = tampered[:h1[200]] + tampered[h1[200] + 1:]
    found = kinds(tampered)
    assert [k for _, _, k in found] == ["changed", "reordered", "changed"]
    assert found[0][0] == status_line(LINES, n=3) + 1 and found[1][0] == h2[60] + 1


def test_the_worker_chains_what_it_logs_and_goes_on_after_a_restart():
    from tests.streams.test_processor import messages

    stored, log, processor = None, [], HostProcessor()
    for offset, value in enumerate(messages()):
        if offset % 17 == 0 and stored is not None:
            processor = HostProcessor()  # a restarted worker: only the snapshot's bytes are left
            stored = HostRecord.from_bytes(stored.to_bytes())
        record, out = processor.process(b"h", value, Source("in", 0, offset), stored)
        stored = record if record is not None else stored
        log += out.log
    assert verify_chain(log) == []
    assert verify(log).clean, "and every decision in it re-derives"
    record = stored
    assert record.entries == len(log) and record.chain == json.loads(log[-1])["chain"]
    assert '"twin_version":' in log[0].decode()


@pytest.mark.parametrize("digest", ["x" * 64, "A" * 64, "0" * 63])
def test_a_chain_must_be_64_lower_case_hex(digest):
    line = LINES[3][: LINES[3].rindex('"chain":"')] + f'"chain":"{digest}"}}'
    with pytest.raises(Exception, match="chain"):
        decode(line)


def test_a_reformatted_log_still_verifies_but_an_edited_one_does_not():
    pretty = [json.dumps(dict(reversed(list(json.loads(line).items()))), indent=1).replace("\n", "") for line in LINES]
    assert verify_chain(pretty) == []
    i = status_line(LINES)
    pretty[i] = pretty[i].replace('"available_mib": ', '"available_mib": 1')
    assert kinds(pretty) == [(i + 1, "h1", "changed")]
