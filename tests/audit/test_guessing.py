"""``verify`` guesses that a round the log says decided nothing (or decided what it recorded)
did, and folds runs of frames at once (``twin.runs``); where a guess is wrong it takes the host's
lines again one by one. Whatever the log, honest or tampered, it finds exactly what taking every
line in turn finds."""

import json
import random

import pytest

from twin.audit import Verifier, verify
from twin.chain import Chainer
from twin.log import decode

from .test_rounds import FRAMED, worker_log

WORKER = worker_log()


def rechain(lines: list[str]) -> list[str]:
    chainer = Chainer(version=None)
    return [chainer.line(decode(line)) for line in lines]


def edit(data: dict, rng: random.Random) -> dict | None:
    """One change a forger (or a bug) could make to an entry; None: this entry does not take it."""
    kind = data["type"]
    if kind == "guest.status_frame" and data["reports"]:
        report = rng.choice(data["reports"])
        change = rng.choice(["committed", "ghost", "twice", "earlier", "unmark", "mark"])
        if change == "committed":
            report["committed_mib"] = max(0, report["committed_mib"] + rng.choice([-1500, -300, 300, 2500]))
        elif change == "ghost":
            report["vm"] = "ghost"
        elif change == "twice":
            data["reports"].append(dict(report))
        elif change == "earlier":
            data["at_ms"] -= 5000
        elif change == "unmark":
            data.pop("balanced", None)
        else:
            data["balanced"] = True
        return data
    if kind == "balancer.round":
        if data["decisions"] and rng.random() < 0.5:
            data["decisions"] = data["decisions"][1:]
        elif data["decisions"]:
            decision = data["decisions"][0]
            field = next(f for f in ("add_mib", "remove_mib", "return_mib", "backed_mib") if f in decision)
            decision[field] += 128
        else:
            return None
        return data
    return None


def tampered(lines: list[str], seed: int) -> list[str]:
    rng = random.Random(seed)
    out = list(lines)
    for _ in range(rng.randint(1, 3)):
        for _ in range(50):
            i = rng.randrange(len(out))
            data = json.loads(out[i])
            data.pop("chain", None)
            changed = edit(data, rng)
            if changed is not None:
                out[i] = json.dumps(changed)
                break
        if rng.random() < 0.3:  # lines out of order, or one gone
            i = rng.randrange(len(out) - 1)
            if rng.random() < 0.5:
                out[i], out[i + 1] = out[i + 1], out[i]
            else:
                del out[i]
    return rechain(out)


def same_findings(lines: list[str]) -> dict:
    """Verify both ways; the findings and the re-derived state are the same, bit for bit."""
    verifiers = []
    for guess in (True, False):
        verifier = Verifier(guess=guess)
        for position, line in enumerate(lines, start=1):
            verifier.feed(position, line.encode())
        verifiers.append((verifier.finish().to_dict(), verifier))
    (guessed, fast), (plain, slow) = verifiers
    assert guessed == plain
    assert {h: s.to_bytes() for h, s in fast.twin.hosts.items()} == {h: s.to_bytes() for h, s in slow.twin.hosts.items()}
    assert fast.retaken or not guessed["mismatches"]  # a wrong guess was taken again
    assert fast.planned > 0
    return guessed


@pytest.mark.parametrize("log", [FRAMED, WORKER], ids=["simulated", "worker"])
def test_an_honest_log_verifies_clean_either_way(log: list[str]) -> None:
    found = same_findings(log)
    assert found["problems"] == 0 and found["decisions"] > 0


@pytest.mark.parametrize("seed", range(40))
@pytest.mark.parametrize("log", [FRAMED, WORKER], ids=["simulated", "worker"])
def test_a_tampered_log_shows_what_it_shows_without_guessing(log: list[str], seed: int) -> None:
    same_findings(tampered(log, seed))


def test_the_tampering_makes_hosts_go_back_often_enough_to_test_it() -> None:
    retaken = 0
    for log in (FRAMED, WORKER):
        for seed in range(40):
            verifier = Verifier()
            for position, line in enumerate(tampered(log, seed), start=1):
                verifier.feed(position, line.encode())
            verifier.finish()
            retaken += bool(verifier.retaken)
    assert retaken >= 30


def test_a_host_decided_by_another_twin_version_is_taken_without_guessing() -> None:
    """Its rounds were decided by other rules: guessing them would only mean going back."""
    older = rechain([line.replace('"twin_version":"0.1.0"', '"twin_version":"0.0.9"') for line in FRAMED])
    assert older != FRAMED
    verifier = Verifier()
    for position, line in enumerate(older, start=1):
        verifier.feed(position, line.encode())
    found = verifier.finish().to_dict()
    assert verifier.retaken == verifier.planned == 0
    assert found == verify(older, guess=False).to_dict()
    assert any("decided by twin 0.0.9" in note for note in found["notes"])
