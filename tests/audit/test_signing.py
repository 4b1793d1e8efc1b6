"""Signed checkpoints: forge a log as an attacker who can write the files but has not the private
key would, and each forgery is rejected with its 1-based line number; an untouched signed log
passes; an unsigned or unchained one never passes as intact."""

import json

import pytest

from twin.audit import verify
from twin.chain import Chainer, link_digest
from twin.events import GuestStatusReported
from twin.log import decode
from twin.scenario import simulate
from twin.signing import Checkpoint, CheckpointCheck, PublicKey, Signer, Trail, fingerprint

from .logs import fleet

KEY = Signer(bytes(range(32)))
OTHER = Signer(bytes(range(1, 33)))


def signed(scenario=None, signer=KEY, every_ms=10_000):
    """A log and its checkpoints as `dmtwin simulate -o LOG --key K` writes them."""
    trail, lines, checkpoints = Trail(signer, every_ms), [], []
    for event in simulate(scenario or fleet()):
        due, line = trail.line(event)
        checkpoints += due
        lines.append(line)
    return lines, checkpoints + trail.finish()


LINES, CHECKPOINTS = signed()


def check(lines, checkpoints=CHECKPOINTS, key=KEY.public_key):
    return verify(lines, checkpoints=CheckpointCheck(key, checkpoints))


def problems(result):
    return [(p.position, p.host, p.kind) for p in result.signature]


def host_lines(lines, host):
    return [i for i, line in enumerate(lines) if f'"host":"{host}"' in line]


def rechain(lines):
    """What a forger with the code does after editing: chain every line anew."""
    chainer = Chainer(version=None)
    return [chainer.line(decode(line)) for line in lines]


def test_an_untouched_signed_log_passes():
    result = check(LINES)
    assert result.ok and result.status == "OK" and result.exit_code() == 0, result.to_text()
    assert result.signature == [] and result.chain == [] and result.mismatches == []
    assert {h: (c.lines, c.tail_lines) for h, c in result.coverage.items()} == \
        {h: (len(host_lines(LINES, h)), 0) for h in ("h1", "h2")}, "the last checkpoints cover every line"
    assert result.to_text().splitlines()[-1] == (
        f"OK: chain intact, signed by {KEY.public_key.short}, every decision re-derived: "
        f"{len(LINES):,} lines, 2 hosts, {result.decisions} decisions re-derived, 0 problems")
    assert len(CHECKPOINTS) == 2 * (120 // 10 + 1) - 2 or len(CHECKPOINTS) > 10


def test_a_checkpoint_is_one_canonical_json_line_signed_deterministically():
    cp = Checkpoint.model_validate_json(CHECKPOINTS[0])
    assert CHECKPOINTS[0] == cp.line() and cp.type == "log.checkpoint" and cp.key == KEY.fingerprint
    assert cp.key == fingerprint(KEY.public_key.raw) and KEY.public_key.verifies(cp)
    assert KEY.checkpoint(cp.host, cp.position, cp.head, cp.at_ms) == CHECKPOINTS[0], "Ed25519 is deterministic"
    assert json.loads(LINES[host_lines(LINES, cp.host)[cp.position - 1]])["chain"] == cp.head
    assert CHECKPOINTS[0].startswith(b'{"v":1,"at_ms":'), "keyed and filtered like an event"


def test_a_forged_append_after_the_last_checkpoint_is_the_unprotected_tail():
    last = json.loads(LINES[host_lines(LINES, "h1")[-1]])
    body = GuestStatusReported(at_ms=last["at_ms"] + 900, host="h1", vm="a", committed_mib=900,
                               available_mib=100).model_dump_json()
    forged = body[:-1] + f',"chain":"{link_digest(last["chain"], body.encode())}"}}'  # a recomputed digest
    result = check(LINES + [forged])
    assert result.chain == [] and result.signature == [] and result.status == "OK"
    tail = result.coverage["h1"]
    assert (tail.tail_lines, tail.tail_first_line, tail.tail_to_ms - tail.tail_from_ms) == (1, len(LINES) + 1, 900)
    assert any("the 1 lines after it, 0.9 s of event time" in note for note in result.notes())
    assert "1 lines after the last checkpoints are not signed" in result.verdict()


def test_an_append_before_the_last_checkpoint_is_rejected_at_its_line():
    h1 = host_lines(LINES, "h1")
    at = h1[len(h1) // 2]
    extra = decode(LINES[at]).model_copy(update={"chain": None})
    tampered = rechain(LINES[:at + 1] + [extra.model_dump_json()] + LINES[at + 1:])
    result = check(tampered)
    assert result.chain == [], "re-chained"
    [(position, host, kind)] = problems(result)
    assert host == "h1" and kind == "mismatch" and position > at + 1, result.to_text()
    assert "were rewritten and re-chained" in result.signature[0].detail
    assert result.status == "FAILED" and result.exit_code() == 1


def test_a_line_removed_without_rechaining_is_found_by_the_chain_and_the_checkpoint_after_it():
    h1 = host_lines(LINES, "h1")
    gone = h1[len(h1) // 2]
    result = check(LINES[:gone] + LINES[gone + 1:])
    assert [p.position for p in result.chain] == [gone + 1]
    [problem] = result.signature
    assert problem.kind == "mismatch" and "1 lines of the host were removed" in problem.detail


def test_a_rewritten_and_rechained_decision_is_rejected_with_its_line():
    i = next(i for i in host_lines(LINES, "h2") if '"decision.hot_add"' in LINES[i])
    planted = list(LINES)
    event = json.loads(planted[i])
    planted[i] = planted[i].replace(f'"add_mib":{event["add_mib"]}', f'"add_mib":{event["add_mib"] + 128}')
    result = check(rechain(planted))
    assert result.chain == [], "the forger re-chained: the hash chain alone is whole again"
    [problem] = result.signature
    assert (problem.host, problem.kind) == ("h2", "mismatch") and problem.position > i + 1
    assert "were rewritten and re-chained" in problem.detail and f"up to line {problem.position}" in problem.detail
    assert "later checkpoints of the host do not match either" in problem.detail
    assert [m.position for m in result.mismatches][:1] == [i + 1], "and re-derivation names the line itself"
    text = result.to_text()
    assert f"signature: line {problem.position} host h2: mismatch: checkpoints line {problem.checkpoint_line}" in text


def test_a_rewritten_input_rechained_is_rejected_between_the_checkpoints_around_it():
    h1 = host_lines(LINES, "h1")
    i = next(i for i in h1[100:] if '"guest.status"' in LINES[i])
    tampered = list(LINES)
    tampered[i] = tampered[i].replace('"committed_mib":', '"committed_mib":1', 1)
    result = check(rechain(tampered))
    [problem] = result.signature
    signed_before = result.coverage["h1"].signed_line
    assert signed_before < i + 1 <= problem.position, (signed_before, i, problem)
    assert f"after line {signed_before}" in problem.detail


@pytest.mark.parametrize("keep", [0.5, 0.9])
def test_a_cut_at_a_line_boundary_before_the_last_checkpoint_is_rejected(keep):
    cut = LINES[:int(len(LINES) * keep)]
    result = check(cut)
    assert result.chain == []
    found = problems(result)
    assert {(host, kind) for _, host, kind in found} == {("h1", "cut"), ("h2", "cut")}
    for problem in result.signature:
        last = host_lines(cut, problem.host)[-1] + 1
        assert problem.position == last + 1 and f"ends after line {last}" in problem.detail
    assert result.status == "FAILED"


def test_a_host_cut_out_entirely_is_rejected():
    result = check([line for line in LINES if '"host":"h2"' not in line])
    assert [(host, kind) for _, host, kind in problems(result)] == [("h2", "cut")]
    assert "has no line at all" in result.signature[0].detail


def test_a_replayed_old_checkpoint_from_another_log_is_rejected():
    other_lines, other_checkpoints = signed(fleet(duration_s=60, os="windows"))
    replayed = CHECKPOINTS[:3] + [other_checkpoints[4]] + CHECKPOINTS[3:]
    cp = Checkpoint.model_validate_json(other_checkpoints[4])
    result = check(LINES, replayed)
    [problem] = result.signature
    assert (problem.host, problem.kind, problem.checkpoint_line) == (cp.host, "mismatch", 4)
    assert problem.position == host_lines(LINES, cp.host)[cp.position - 1] + 1
    assert "replayed" in problem.detail


def test_a_redelivered_copy_of_a_checkpoint_is_harmless():
    result = check(LINES, CHECKPOINTS[:5] + [CHECKPOINTS[2]] + CHECKPOINTS[5:])
    assert result.ok and result.duplicate_checkpoints == 1


def test_checkpoints_signed_with_another_key_are_rejected():
    _, theirs = signed(signer=OTHER)
    assert theirs != CHECKPOINTS
    result = check(LINES, theirs)
    assert {kind for _, _, kind in problems(result)} == {"other-key"} and len(result.signature) == len(theirs)
    assert OTHER.public_key.short in result.signature[0].detail and result.status == "FAILED"
    assert all(p.position >= 1 for p in result.signature)


def test_a_checkpoint_resigned_with_another_key_under_ours_is_rejected():
    cp = Checkpoint.model_validate_json(CHECKPOINTS[-1])
    forged = OTHER.sign(cp.host, cp.position, cp.head, cp.at_ms).model_copy(update={"key": KEY.fingerprint})
    result = check(LINES, CHECKPOINTS[:-1] + [forged.line()])
    [problem] = result.signature
    assert problem.kind == "bad-signature" and problem.checkpoint_line == len(CHECKPOINTS)
    assert problem.position == host_lines(LINES, cp.host)[cp.position - 1] + 1


def test_a_forged_append_with_a_forged_checkpoint_is_rejected():
    last = json.loads(LINES[-1])
    body = GuestStatusReported(at_ms=last["at_ms"] + 100, host=last["host"], vm="a", committed_mib=900,
                               available_mib=100).model_dump_json()
    digest = link_digest(last["chain"], body.encode())
    forged_line = body[:-1] + f',"chain":"{digest}"}}'
    count = len(host_lines(LINES, last["host"])) + 1
    forged_cp = OTHER.sign(last["host"], count, digest, last["at_ms"] + 100).model_copy(
        update={"key": KEY.fingerprint})
    result = check(LINES + [forged_line], CHECKPOINTS + [forged_cp.line()])
    assert [(p.position, p.kind) for p in result.signature] == [(len(LINES) + 1, "bad-signature")]


def test_an_unreadable_checkpoint_line_is_reported_with_its_line():
    result = check(LINES, CHECKPOINTS[:2] + [b'{"not":"a checkpoint"}'] + CHECKPOINTS[2:])
    assert [(p.kind, p.checkpoint_line) for p in result.signature] == [("invalid", 3)]


def test_without_the_key_or_the_checkpoints_a_clean_log_is_unsigned_not_ok():
    for result in (verify(LINES), check(LINES, key=None)):
        assert result.clean and result.status == "UNSIGNED" and not result.ok and result.exit_code() == 3
        assert result.exit_code(accept_unsigned=True) == 0
        last = result.to_text(accept_unsigned=True).splitlines()[-1]
        assert last.startswith("UNSIGNED (accepted: --accept-unsigned): chain intact but not signed")
    assert any("checkpoints not checked: no public key" in n for n in check(LINES, key=None).notes())


def test_an_unchained_log_does_not_pass_as_intact():
    plain = [decode(line).model_copy(update={"chain": None}).model_dump_json() for line in LINES]
    result = verify(plain)
    assert result.clean and result.status == "UNCHAINED" and not result.ok and result.exit_code() == 4
    assert result.exit_code(accept_unsigned=True) == 4 and result.exit_code(accept_unchained=True) == 0
    assert "no hash chain for hosts h1, h2" in result.to_text().splitlines()[-1]
    stripped = check(plain)  # with the checkpoints of the chained original: its chains were stripped
    assert {(h, k) for _, h, k in problems(stripped)} == {("h1", "cut"), ("h2", "cut")}
    assert stripped.status == "FAILED"


def test_public_keys_are_32_bytes():
    with pytest.raises(ValueError):
        PublicKey(b"\0" * 31)
    with pytest.raises(ValueError):
        Signer(b"\0" * 16)


def test_verify_in_parallel_checks_each_hosts_checkpoints_where_its_lines_are():
    from streams.audit.parallel import verify_parallel

    def run(lines, checkpoints=CHECKPOINTS):
        return verify_parallel((line.encode() for line in lines), 2, key=KEY.public_key, checkpoints=checkpoints)

    whole = run(LINES)
    assert whole.ok and whole.checkpoints == len(CHECKPOINTS), whole.to_text()
    no_h2 = run([line for line in LINES if '"host":"h2"' not in line])
    assert [(s.host, s.kind) for s in no_h2.signature] == [("h2", "cut")]
    bad = run(LINES, CHECKPOINTS[:1] + [b"{}"] + CHECKPOINTS[1:])
    assert [(s.kind, s.checkpoint_line) for s in bad.signature] == [("invalid", 2)], "reported once"
