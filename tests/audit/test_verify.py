"""dmtwin audit verify: the chain, then every decision re-derived from the inputs."""

import json
import re

from twin import __version__
from twin.audit import verify
from twin.chain import Chainer
from twin.log import decode, encode

from .logs import chained, fleet

LINES = chained(fleet())


def rechain(lines):
    """The lines chained anew, as a worker with a bug (or a forger with the code) would write them."""
    chainer = Chainer(version=None)
    return [chainer.line(decode(line)) for line in lines]


def test_an_untouched_log_is_clean_but_without_a_signature_not_ok():
    result = verify(LINES)
    assert result.clean and result.status == "UNSIGNED" and not result.ok, result.to_text()
    assert result.events == len(LINES) and result.decisions > 20 and result.inputs + result.decisions == len(LINES)
    assert result.versions == {"h1": __version__, "h2": __version__}
    assert result.policies == {"h1": "hyperv", "h2": "hyperv"}
    last = result.to_text().splitlines()[-1]
    assert last.startswith("UNSIGNED: chain intact but not signed (no key given: --key)")
    assert last.endswith(f": {len(LINES):,} lines, 2 hosts, {result.decisions} decisions re-derived, 0 problems")
    assert result.exit_code() == 3 and result.exit_code(accept_unsigned=True) == 0


def test_a_planted_wrong_decision_is_found_even_with_a_valid_chain():
    i = [i for i, line in enumerate(LINES) if '"host":"h2"' in line and '"decision.hot_add"' in line][3]
    amount = json.loads(LINES[i])["add_mib"]
    planted = list(LINES)
    planted[i] = re.sub(r'"add_mib":\d+', f'"add_mib":{amount + 128}', planted[i])
    planted = rechain(planted)
    result = verify(planted)
    assert result.chain == [] and result.rejected == []
    [wrong] = result.mismatches
    assert (wrong.position, wrong.host, wrong.vm) == (i + 1, "h2", json.loads(LINES[i])["vm"])
    assert f"add {amount} MiB" in wrong.expected and f"add {amount + 128} MiB" in wrong.recorded
    assert not result.ok


def test_a_planted_decision_without_rechaining_breaks_the_chain_too():
    i = next(i for i, line in enumerate(LINES) if '"decision.balloon"' in line)
    planted = list(LINES)
    planted[i] = re.sub(r'"remove_mib":(\d+)', lambda m: f'"remove_mib":{int(m[1]) + 2}', planted[i])
    result = verify(planted)
    assert [(p.position, p.kind) for p in result.chain] == [(i + 1, "changed")]
    assert [m.position for m in result.mismatches] == [i + 1]


def test_a_missing_and_an_invented_decision_are_both_reported():
    decisions = [i for i, line in enumerate(LINES) if '"decision.' in line]
    gone, invented_after = decisions[5], decisions[9]
    extra = decode(LINES[invented_after]).model_copy(update={"seq": 999, "chain": None})
    tampered = LINES[:gone] + LINES[gone + 1: invented_after + 1] + [encode(extra)] + LINES[invented_after + 1:]
    result = verify(rechain(tampered))
    recorded = [m.recorded for m in result.mismatches]
    expected = [m.expected for m in result.mismatches]
    assert "nothing" in recorded and any("#999" in r for r in recorded), result.to_text()
    assert any(e != "nothing" for e, r in zip(expected, recorded) if r == "nothing")


def test_a_log_decided_under_another_policy_does_not_re_derive():
    tampered = [line.replace('"policy":"hyperv"', '"policy":"squeezed"') for line in LINES]
    result = verify(rechain(tampered))
    assert result.mismatches and result.policies == {"h1": "squeezed", "h2": "squeezed"}


def test_the_twin_version_is_recorded_and_a_different_one_is_noted():
    older = rechain([line.replace(f'"twin_version":"{__version__}"', '"twin_version":"0.0.1"') for line in LINES])
    result = verify(older)
    assert result.clean and result.versions["h1"] == "0.0.1"
    assert any("decided by twin 0.0.1" in note for note in result.notes())
    unknown = verify(rechain([re.sub(r',"twin_version":"[^"]*"', "", line) for line in LINES]))
    assert any("does not record which twin version" in note for note in unknown.notes())


def test_an_unchained_log_is_still_re_derived_and_the_lack_of_a_chain_said():
    plain = [encode(decode(line).model_copy(update={"chain": None})) for line in LINES]
    result = verify(plain)
    assert result.clean and result.chained == 0 and result.unchained == len(LINES)
    assert result.status == "UNCHAINED" and result.exit_code() == 4 and result.exit_code(accept_unsigned=True) == 4
    assert result.exit_code(accept_unchained=True) == 0
    assert result.to_text().splitlines()[-1].startswith("UNCHAINED: no hash chain for hosts h1, h2")
    assert any("not hash-chained" in note for note in result.notes())


def test_a_newer_schema_is_refused_with_its_position_and_the_rest_verified():
    newer = json.dumps({"v": 2, "type": "guest.status", "at_ms": 1, "host": "h9", "vm": "a",
                        "committed_mib": 1, "available_mib": 0})
    lines = LINES[:50] + [newer] + LINES[50:]
    result = verify(lines)
    [refused] = result.rejected
    assert refused.position == 51 and "newer dmtwin" in refused.reason and "upgrade" in refused.reason
    assert result.mismatches == [] and result.events == len(lines)


def test_a_truncated_line_is_reported_and_the_rest_verified():
    lines = LINES + [LINES[-3][:60]]
    result = verify(lines)
    assert [r.position for r in result.rejected] == [len(LINES) + 1]
    assert [(p.position, p.kind) for p in result.chain] == [(len(LINES) + 1, "changed")]
    assert result.mismatches == []


def test_bytes_and_gzip_files_are_verified_alike(tmp_path):
    import gzip

    path = tmp_path / "log.jsonl.gz"
    with gzip.open(path, "wb") as out:
        out.write("".join(line + "\n" for line in LINES).encode())
    with gzip.open(path, "rb") as lines:
        assert verify(lines).clean
