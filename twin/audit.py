"""Audit of an event log: verify it (chain and decisions), and explain a decision in plain words.

``verify`` reads a log once. It checks every host's hash chain (``twin.chain``) and re-derives
every decision from the inputs: a fresh ``Twin`` handles each recorded input in log order, under
the policy the log recorded (``host.joined``), and each recorded decision is compared with the
re-derived one by type, VM, ``seq`` and amounts. The re-derived state follows the *re-derived*
decisions, so one planted decision is reported once and does not derail what follows.

It is fast because most rounds are guessed: a round the log says decided nothing, or decided what
it recorded, is taken to have, so that a host's frames fold many at once (``twin.runs``) and the
rounds of many hosts and times are planned together (``twin.rounds``). Where a guess was wrong,
that host goes back and takes its lines again one at a time: what ``verify`` finds is what taking
every line in turn finds (``guess=False``), bit for bit (``tests/audit/test_guessing.py``).
What it finds and its verdict are ``twin.verdict``'s.

``twin.explain`` tells, for one VM at one moment, its state and the last decision taken for it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import cast

from . import __version__, frames
from .chain import ChainVerifier
from .engine import Twin
from .errors import Rejected
from .events import (
    BalancerRound,
    BalancerTicked,
    Decision,
    HostJoined,
    InputEvent,
    StatusFrame,
    VmRestarted,
    trusted,
)
from .host import check_clock, fold_round
from .log import AnyEvent, decode, encode, peek
from .rounds import plan_many
from .runs import MAX_RUN, Run, fold_runs
from .signing import CheckpointCheck
from .state import HostState
from .verdict import (
    EXIT_CODES,
    Mismatch,
    Refusal,
    Verification,
    _key,
    describe_decision,
    format_time,
    is_decision,
    merge,
    parse_time,
    read_refusals,
)

__all__ = [
    "EXIT_CODES",
    "Mismatch",
    "Refusal",
    "Verification",
    "Verifier",
    "describe_decision",
    "format_time",
    "merge",
    "parse_time",
    "read_refusals",
    "verify",
]

WAITING_ROUNDS = 4096
"""Rounds re-derived together at most (they wait for their host's next line): bounds memory."""

GUESSED_ROUNDS = 1024
"""Guessed rounds planned together at most, across hosts and time (``Verifier``)."""

HELD_LINES = 16384
"""Lines taken on guesses at most before the guesses are settled: bounds memory."""

_Guess = tuple[int, "bytes | None", "BalancerRound | None"]
"""A guessed round: its time, and as recorded, its line and entry (None, None: it decided nothing)."""


@dataclass
class _Window:
    """A host's lines taken on the guess that the rounds the log says decided nothing did: the
    state and expected decisions to go back to, the lines to take again, and what they found."""

    state: HostState
    pending: deque[Decision]
    lines: list[tuple[int, bytes]] = field(default_factory=list)
    found: Verification = field(default_factory=Verification)


class Verifier:
    """``verify`` one line at a time: ``feed`` each line with its line number, then ``finish``.

    Hosts are independent, so the lines of different hosts may go to different verifiers (each
    seeing all lines of its hosts, in order) and their results be ``merge``d. ``checkpoints``
    checks the signed checkpoints along (``twin.signing``).

    Frames and rounds wait until their host's next line (or the end) and are then re-derived for
    all waiting hosts together, as the worker does (``twin.batch``). A round the log says decided
    nothing (a ``balanced`` frame, an empty ``balancer.round``), or decided what it recorded, is
    only guessed to: its host goes on at once, its frames fold in runs (``twin.runs``), and the
    guessed rounds of many hosts and times are planned together later (``_resolve``). Where a guess was wrong, the host goes back to where its guessing began and
    takes its lines again without guessing: the findings are those of taking every line in turn."""

    def __init__(self, heads: dict[str, str] | None = None, checkpoints: CheckpointCheck | None = None,
                 guess: bool = True) -> None:
        self.result = Verification()
        self.guessing = guess
        """Guess rounds (the fast way); False takes every line in turn: the same findings."""
        self.chain = ChainVerifier(heads)
        self.signing = checkpoints
        self.twin = Twin()
        self.pending: dict[str, deque[Decision]] = {}
        self.end = 0
        self.frames: dict[str, tuple[HostState, int, frames.FrameCheck]] = {}
        self.runs: dict[str, tuple[Run, list[tuple[int, _Guess]]]] = {}
        """Each host's frames waiting to fold together, and the rounds guessed after them (by frame)."""
        self.rounds: dict[str, tuple[int, int, bytes, BalancerRound | None]] = {}
        self.guesses: list[tuple[int, HostState, bytes | None]] = []
        """Guessed rounds: their time, what each reads (``HostState.round_view``), and the round as
        recorded (None: it decided nothing)."""
        self.doubtful: set[str] = set()
        """Hosts whose state no longer follows the log: a recorded round would not fold."""
        self.windows: dict[str, _Window] = {}
        self.held = 0
        """Lines in ``windows``."""
        self.retaken = 0
        """Windows taken again because a guess was wrong."""
        self.planned = 0
        """Guessed rounds planned."""
        self.plain_until: dict[str, int] = {}
        """Up to which line a host that was wrongly guessed is taken without guessing, for longer
        each time: a log of rules other than this twin's would otherwise be taken twice over."""
        self.wrong: dict[str, int] = {}
        self._empty: dict[str, tuple[bytes, bytes]] = {}

    def feed(self, position: int, line: bytes) -> None:
        """Check line number ``position`` (1-based; blank lines are skipped)."""
        result = self.result
        self.end = position + 1
        parts = self.chain.feed(position, line)
        if parts is None:
            if not line.strip():
                return
            result.events += 1
            try:
                decode(line, position)
            except Rejected as bad:
                result.rejected.append(bad)
            return
        result.events += 1
        host, body = parts
        if self.signing is not None and self.chain.last_chain is not None:
            self.signing.feed(position, host, self.chain.last_chain, line)
        if self.guessing and host in self.twin.hosts and position > self.plain_until.get(host, 0):
            window = self.windows.get(host)
            if window is None:
                if host in self.frames or host in self.rounds or host in self.runs:
                    self.flush()  # the state to go back to is the host's as it is after its lines so far
                window = self.windows[host] = _Window(self.twin.hosts[host].copy(), deque(self.pending.get(host, ())))
            window.lines.append((position, body))
            self.held += 1
            self._line(position, host, body, window.found, guess=True)
            if len(self.guesses) >= GUESSED_ROUNDS or self.held >= HELD_LINES:
                self._resolve()
        else:
            self._line(position, host, body, result, guess=False)

    def _line(self, position: int, host: str, body: bytes, found: Verification, guess: bool) -> None:
        """A chained line of ``host``: what it shows goes to ``found``."""
        is_round = b'"type":"balancer.round"' in body
        guess = guess and host not in self.rounds
        if guess and is_round and self._guess_round(position, host, body, found):
            return
        event: AnyEvent | None = None
        if guess and not is_round and host not in self.frames and b'"type":"guest.status_frame"' in body:
            try:  # decoded once, for the guess and, if it is not guessed, for the usual way
                event = decode(body, position)
            except Rejected as bad:
                found.rejected.append(bad)
                return
            if isinstance(event, StatusFrame) and self._guess_frame(position, host, event, found):
                return
        if host in self.rounds or host in self.runs or (host in self.frames and not is_round) \
                or len(self.rounds) >= WAITING_ROUNDS:
            self.flush()  # this host's waiting work first (a round may follow its frame's waiting fold)
        if is_round:
            self._round(position, host, body, found)
            return
        if b'"type":"decision.' in body:
            found.decisions += 1
            _recorded(found, position, host, body, self.pending)
            return
        if event is None:
            try:
                event = decode(body, position)
            except Rejected as bad:
                found.rejected.append(bad)
                return
        if is_decision(event):  # a decision line not as dmtwin writes it
            found.decisions += 1
            _compare(found, position, event.host, event, self.pending)
            return
        if isinstance(event, BalancerRound):  # laid out otherwise than dmtwin writes it
            self._round(position, host, body, found, event)
            return
        event = cast(InputEvent, event)
        found.inputs += len(event.reports) if isinstance(event, StatusFrame) else 1
        waiting = self.pending.get(event.host)
        if waiting and isinstance(event, (BalancerTicked, VmRestarted)):  # a new round: the last one is over
            while waiting:
                missing = waiting.popleft()
                found.mismatches.append(Mismatch(position, missing.host, missing.vm,
                                                 describe_decision(missing), "nothing"))
        if isinstance(event, HostJoined):
            found.versions[event.host] = event.twin_version
            found.policies[event.host] = event.policy
            if event.twin_version not in (None, __version__):  # its rounds were decided by other rules
                self.plain_until[event.host] = 1 << 62
        if isinstance(event, StatusFrame):
            try:
                if not self._frame(event):
                    self.twin.handle(event)
            except Rejected as refused:
                found.rejected.append(_refused(refused, position))
                return
            self._marked_round(position, event, found)
            return
        try:
            decisions = self.twin.handle(event)
        except Rejected as refused:
            found.rejected.append(_refused(refused, position))
            return
        if decisions:
            self.pending[event.host] = deque(decisions)

    def _frame(self, frame: StatusFrame) -> bool:
        """Check a recorded frame now and let its fold wait (False: fold it now, report by report)."""
        state = self.twin.host(frame.host)
        checked = frames.check(state, frame)
        if checked is None:
            return False
        if checked.rejected:
            k, error = checked.rejected[0]
            raise Rejected(f"reports.{k}.{error.field}", error.value, error.reason)
        self.frames[frame.host] = (state, frame.at_ms, checked)
        return True

    def _guess_frame(self, position: int, host: str, frame: StatusFrame, found: Verification) -> bool:
        """A frame reporting every VM of its host once: it joins the host's run of frames to fold
        together (``twin.runs``), and a ``balanced`` frame's round is guessed (False: take the line
        the usual way)."""
        state = self.twin.hosts[host]
        if frame.host != host or len(frame.reports) != len(state.vms):
            return False
        index = state.vms.index
        rows = [index.get(report.vm, -1) for report in frame.reports]
        if -1 in rows or len(set(rows)) != len(rows) or not rows:
            return False
        pending = self.runs.get(host)
        if pending is not None and len(pending[0].at) >= MAX_RUN:
            self._fold_runs(host)
            pending = None
        if pending is None:
            pending = self.runs[host] = (Run(state), [])
        run, guesses = pending
        run.add(frame.at_ms, rows, [r.committed_mib for r in frame.reports], [r.available_mib for r in frame.reports])
        found.inputs += len(rows)
        if frame.balanced:
            found.inputs += 1
            self._over(position, host, found)
            guesses.append((len(run.at) - 1, (frame.at_ms, None, None)))
            state.last_at_ms = state.last_round_ms = frame.at_ms
        return True

    def _guess_round(self, position: int, host: str, body: bytes, found: Verification) -> bool:
        """A recorded round written as dmtwin writes it: guessed to be the round the host makes, its
        decisions folded as recorded (False: take the line the usual way)."""
        head = peek(body)
        if head is None:
            return False
        at_ms = head[0]
        recorded = None
        if body != self._empty_round(host, at_ms):
            try:
                recorded = decode(body, position)
            except Rejected:
                return False
            if not isinstance(recorded, BalancerRound) or recorded.host != host:
                return False
        state = self.twin.hosts[host]
        if at_ms < state.last_at_ms or host in self.frames:
            return False
        pending = self.runs.get(host)
        if recorded is None and pending is not None:  # the round reads the run's last frame
            pending[1].append((len(pending[0].at) - 1, (at_ms, None, None)))
            state.last_at_ms = state.last_round_ms = at_ms
        else:
            if pending is not None:
                self._fold_runs(host)
            self._guessed(state, (at_ms, body if recorded is not None else None, recorded))
        found.inputs += 1
        found.decisions += len(recorded.decisions) if recorded is not None else 0
        self._over(position, host, found)
        return True

    def _guessed(self, state: HostState, guess: _Guess) -> None:
        """A guessed round's tick; what its plan will read; then the decisions it recorded."""
        at_ms, body, recorded = guess
        state.last_at_ms = state.last_round_ms = at_ms
        self.guesses.append((at_ms, state.round_view(), body))
        if recorded is not None and recorded.decisions:
            try:
                fold_round(state, at_ms, recorded.decisions)
            except Rejected:
                self.doubtful.add(state.name)

    def _empty_round(self, host: str, at_ms: int) -> bytes:
        """A round of ``host`` that decided nothing, as dmtwin writes it."""
        parts = self._empty.get(host)
        if parts is None:
            text = trusted(BalancerRound, at_ms=0, host=host, decisions=[]).model_dump_json().encode()
            before, _, after = text.partition(b'"at_ms":0,')
            parts = self._empty[host] = (before + b'"at_ms":', b"," + after)
        return parts[0] + str(at_ms).encode() + parts[1]

    def _fold_waiting(self) -> None:
        """Fold the waiting frames and runs, all hosts together."""
        self._fold_runs()
        if not self.frames:
            return
        frames.fold_many(list(self.frames.values()))
        self.frames.clear()

    def _fold_runs(self, host: str | None = None) -> None:
        """Fold every host's run of frames (or only ``host``'s: one run costs less than many, and
        the others can grow), and keep what each guessed round after them reads. A run its host
        refuses is left unfolded: the host takes its lines again without guessing."""
        if host is not None:
            runs = {host: self.runs.pop(host)}
        elif not self.runs:
            return
        else:
            runs, self.runs = self.runs, {}
        for (host, (run, guesses)), after in zip(runs.items(), fold_runs([run for run, _ in runs.values()])):
            if after is None:
                self.doubtful.add(host)
                continue
            for j, (at_ms, body, _) in guesses:
                self.guesses.append((at_ms, run.state.round_view(after[:, j]), body))

    def _resolve(self) -> None:
        """Plan every guessed round at once, then settle each host's window: kept if all its guesses
        hold, else taken again from its start, line by line, without guessing."""
        self.flush()
        guesses, windows, wrong = self.guesses, self.windows, self.doubtful
        self.guesses, self.windows, self.held, self.doubtful = [], {}, 0, set()
        self.planned += len(guesses)
        plans = plan_many([(view, at_ms) for at_ms, view, _ in guesses])
        for (at_ms, view, body), plan in zip(guesses, plans):
            if body is None:
                if len(plan):
                    wrong.add(view.name)
            elif trusted(BalancerRound, at_ms=at_ms, host=view.name, decisions=plan).model_dump_json().encode() != body:
                wrong.add(view.name)
        result = self.result
        for host, window in windows.items():
            if host not in wrong:
                result.take(window.found)
                continue
            self.retaken += 1
            self.twin.hosts[host] = window.state
            self.pending[host] = window.pending
            for position, body in window.lines:
                self._line(position, host, body, result, guess=False)
            wrong_before = self.wrong.get(host, 0)
            self.wrong[host] = wrong_before + 1
            self.plain_until[host] = window.lines[-1][0] + (HELD_LINES << min(wrong_before, 6))
        self.flush()

    def _marked_round(self, position: int, frame: StatusFrame, found: Verification) -> None:
        """A ``balanced`` frame's round (none for other frames): re-run at the next ``flush`` like a
        recorded round that decided nothing."""
        if not frame.balanced:
            return
        found.inputs += 1
        self._over(position, frame.host, found)
        self.rounds[frame.host] = (position, frame.at_ms, self._empty_round(frame.host, frame.at_ms), None)

    def _round(self, position: int, host: str, body: bytes, found: Verification,
               recorded: BalancerRound | None = None) -> None:
        """A recorded round: re-run on the re-derived state at the next ``flush``."""
        found.inputs += 1
        self._over(position, host, found)
        head = peek(body)
        if recorded is None and head is None:
            try:
                recorded = cast(BalancerRound, decode(body, position))
            except Rejected as bad:
                found.rejected.append(bad)
                return
        at_ms = recorded.at_ms if recorded is not None else head[0]  # type: ignore[index]
        self.rounds[host] = (position, at_ms, body, recorded)

    def _found(self, host: str) -> Verification:
        """Where what ``host``'s lines show goes now: its window's findings, or the result."""
        window = self.windows.get(host)
        return window.found if window is not None else self.result

    def flush(self) -> None:
        """Fold the waiting frames and re-run the waiting rounds, all hosts together."""
        self._fold_waiting()
        if not self.rounds:
            return
        waiting, runnable = list(self.rounds.items()), []
        self.rounds.clear()
        for host, (position, at_ms, body, recorded) in waiting:
            try:
                check_clock(self.twin.host(host), at_ms)
            except Rejected as refused:
                self._found(host).rejected.append(_refused(refused, position))
                continue
            runnable.append((host, position, at_ms, body, recorded))
        expected = self.twin.rounds([(host, at_ms) for host, _, at_ms, _, _ in runnable])
        for (host, position, _, body, recorded), entry in zip(runnable, expected):
            self._compare_round(position, host, body, recorded, entry)

    def _compare_round(self, position: int, host: str, body: bytes, recorded: BalancerRound | None,
                       expected: BalancerRound) -> None:
        """The recorded round against the re-derived one; the same bytes is the common case."""
        found = self._found(host)
        if recorded is None and expected.model_dump_json().encode() == body:
            found.decisions += len(expected.decisions)
            return
        if recorded is None:
            try:
                recorded = cast(BalancerRound, decode(body, position))
            except Rejected as bad:
                found.rejected.append(bad)
                return
        found.decisions += len(recorded.decisions)
        self.pending[host] = deque(expected.decisions)
        for decision in recorded.decisions:
            _compare(found, position, host, decision, self.pending)
        self._over(position, host, found)

    def _over(self, position: int, host: str, found: Verification) -> None:
        """A new round: decisions of the last one still expected were never recorded."""
        waiting = self.pending.get(host)
        while waiting:
            missing = waiting.popleft()
            found.mismatches.append(Mismatch(position, missing.host, missing.vm,
                                             describe_decision(missing), "nothing"))

    def finish(self, signed_hosts: Iterable[str] | None = None, file_problems: bool = True) -> Verification:
        """Decisions re-derived but never recorded, the chain's verdict and the checkpoints' (for the
        hosts this verifier saw and ``signed_hosts``, default every host with a checkpoint;
        ``file_problems``: report the checkpoints file's unreadable lines)."""
        self._resolve()
        result = self.result
        for waiting in self.pending.values():
            for missing in waiting:
                result.mismatches.append(Mismatch(self.end, missing.host, missing.vm,
                                                  describe_decision(missing), "nothing"))
        self.pending = {}
        result.mismatches.sort(key=lambda m: m.position)  # rounds are re-derived a little later
        result.rejected.sort(key=lambda r: r.position if r.position is not None else -1)
        result.chain = self.chain.finish()
        result.chained, result.unchained, result.heads = self.chain.chained, self.chain.unchained, self.chain.heads
        result.hosts = {name: host.chained for name, host in self.chain.hosts.items()}
        if self.signing is not None:
            hosts = (self.signing.hosts() if signed_hosts is None else set(signed_hosts)) | set(result.hosts)
            result.signature, result.coverage = self.signing.finish(hosts, file_problems)
            result.key = self.signing.key.fingerprint if self.signing.key is not None else None
            result.checkpoints = self.signing.checkpoints
            result.duplicate_checkpoints = self.signing.duplicates
        return result


def _refused(refused: Rejected, position: int) -> Rejected:
    return Rejected(refused.field, refused.value, f"refused by the re-derived state: {refused.reason}", position)


def verify(lines: Iterable[str | bytes], heads: dict[str, str] | None = None,
           checkpoints: CheckpointCheck | None = None, guess: bool = True) -> Verification:
    """Check the chain (and the signed ``checkpoints``) and re-derive every decision (see the module
    docstring; ``guess``: see ``Verifier``)."""
    verifier = Verifier(heads, checkpoints, guess)
    for position, line in enumerate(lines, start=1):
        verifier.feed(position, line.encode() if isinstance(line, str) else line)
    return verifier.finish()


def _recorded(result: Verification, position: int, host: str, body: bytes,
              pending: dict[str, deque[Decision]]) -> None:
    """A recorded decision: equal bytes to the next re-derived one is the fast, common case."""
    waiting = pending.get(host)
    if waiting and encode(waiting[0]).encode() == body:
        waiting.popleft()
        return
    try:
        decision = decode(body, position)
    except Rejected as bad:
        result.rejected.append(bad)
        return
    if is_decision(decision):
        _compare(result, position, host, decision, pending)


def _compare(result: Verification, position: int, host: str, decision: Decision,
             pending: dict[str, deque[Decision]]) -> None:
    waiting = pending.setdefault(host, deque())
    match = next((i for i, d in enumerate(waiting) if d.vm == decision.vm), None)
    if match is None:
        result.mismatches.append(Mismatch(position, host, decision.vm, "nothing", describe_decision(decision)))
        return
    for _ in range(match):
        missing = waiting.popleft()
        result.mismatches.append(Mismatch(position, host, missing.vm, describe_decision(missing), "nothing"))
    expected = waiting.popleft()
    if _key(expected) != _key(decision):
        result.mismatches.append(Mismatch(position, host, decision.vm, describe_decision(expected),
                                          describe_decision(decision)))
