"""Audit of an event log: verify it (chain and decisions), and explain a decision in plain words.

``verify`` reads a log once. It checks every host's hash chain (``twin.chain``) and re-derives
every decision from the inputs: a fresh ``Twin`` handles each recorded input in log order, under
the policy the log recorded (``host.joined``), and each recorded decision is compared with the
re-derived one by type, VM, ``seq`` and amounts. The re-derived state follows the *re-derived*
decisions, so one planted decision is reported once and does not derail what follows.

``twin.explain`` tells, for one VM at one moment, its state and the last decision taken for it.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeGuard, cast

from . import __version__
from .chain import ChainProblem, ChainVerifier
from . import frames
from .engine import Twin
from .host import check_clock
from .state import HostState
from .errors import Rejected
from .events import (
    DECISION_TYPES,
    BalancerRound,
    BalancerTicked,
    Decision,
    HostJoined,
    InputEvent,
    StatusFrame,
    VmRestarted,
    trusted,
)
from .log import decode, encode, peek
from .signing import CheckpointCheck, Coverage, SignatureProblem, short_fingerprint

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

EXIT_CODES = {"OK": 0, "FAILED": 1, "UNSIGNED": 3, "UNCHAINED": 4}
"""``dmtwin audit verify``'s exit code by verdict (2: it could not run, e.g. a file is missing)."""

_AMOUNTS = ("remove_mib", "return_mib", "add_mib", "paging_mib", "backed_mib", "target_mib")


def parse_time(text: str) -> int:
    """``at_ms`` from milliseconds since the epoch or an ISO-8601 time (UTC when no zone given)."""
    text = text.strip()
    if text.isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError(f"time {text!r}: expected milliseconds since the epoch or ISO-8601, "
                         "e.g. 2026-01-01T00:05:00Z") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return round(moment.timestamp() * 1000)


def format_time(at_ms: int) -> str:
    """ISO-8601 UTC with milliseconds."""
    moment = datetime.fromtimestamp(at_ms / 1000, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at_ms % 1000:03d}Z"


def is_decision(event: object) -> TypeGuard[Decision]:
    """True for a decision (``isinstance`` over the union, which type checkers cannot narrow)."""
    return isinstance(event, DECISION_TYPES)


def describe_decision(decision: Decision | None) -> str:
    """``decision.hot_add #3 add 512 MiB → 2560 MiB`` (or ``nothing``)."""
    if decision is None:
        return "nothing"
    amounts = [f"{name[:-4]} {getattr(decision, name)} MiB" for name in _AMOUNTS[:-1]
               if hasattr(decision, name)]
    target = f" → {decision.target_mib} MiB" if hasattr(decision, "target_mib") else ""
    return f"{decision.type} #{decision.seq} {', '.join(amounts)}{target}"


def _key(decision: Decision) -> tuple[Any, ...]:
    return (decision.type, decision.vm, decision.seq, *(getattr(decision, n, None) for n in _AMOUNTS))


# --- verify ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Mismatch:
    """A recorded decision that differs from the re-derived one (or one of them is absent)."""

    position: int
    """1-based line number (the line after the last: the log ends before the decision)."""
    host: str
    vm: str
    expected: str
    recorded: str


def _n(count: int, word: str) -> str:
    return f"{count:,} {word}{'' if count == 1 else 's'}"


@dataclass(frozen=True)
class Refusal:
    """An input the twin refused when the log was written, as recorded next to the log: a line of
    an offline rejects file (``LOG.rejects.jsonl``) or a dead letter exported from the live topic."""

    line: int
    """1-based line number in the rejects file."""
    host: str | None
    reason: str
    field: str
    value: Any
    where: str
    """``after log line N`` (offline) or ``topic:partition@offset`` (a live dead letter)."""

    def describe(self) -> str:
        what = f"{self.field}={self.value!r}: " if self.field else ""
        return f"rejects line {self.line}: host {self.host or '?'}, {self.where}: {what}{self.reason}"


def read_refusals(lines: Iterable[str | bytes]) -> list[Refusal]:
    """The recorded refusals of a rejects file (offline records or exported dead letters)."""
    out = []
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
            if not isinstance(record, dict):
                raise ValueError
        except ValueError:
            out.append(Refusal(number, None, "not a rejects record (unreadable line)", "", None, "?"))
            continue
        host = record.get("host")
        if host is None and isinstance(record.get("original"), str):
            try:
                host = json.loads(record["original"]).get("host")
            except (ValueError, AttributeError):
                host = None
        if "after_line" in record:
            where = f"after log line {record['after_line']}"
        else:
            where = f"{record.get('topic', '?')}:{record.get('partition', '?')}@{record.get('offset', '?')}"
        if record.get("index") is not None:
            where += f", report {int(record['index']) + 1} of its frame"
        out.append(Refusal(number, host if isinstance(host, str) else None, str(record.get("reason", "")),
                           str(record.get("field", "")), record.get("value"), where))
    return out


@dataclass
class Verification:
    """Everything ``verify`` found, and the verdict (``status``): OK only when the log is chained,
    every host's chain is vouched for by a checkpoint signed with the key given, and nothing is
    wrong. ``clean``: no problem found (which an unchained or unsigned log can be, too)."""

    events: int = 0
    inputs: int = 0
    decisions: int = 0
    chained: int = 0
    unchained: int = 0
    chain: list[ChainProblem] = field(default_factory=list)
    mismatches: list[Mismatch] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    """Lines that are not valid events, and inputs the re-derived state refuses, with line numbers."""
    versions: dict[str, str | None] = field(default_factory=dict)
    """Twin version recorded for each host (``host.joined``), None when the log does not say."""
    policies: dict[str, str] = field(default_factory=dict)
    heads: dict[str, str] = field(default_factory=dict)
    hosts: dict[str, bool] = field(default_factory=dict)
    """Every host of the log: True if it has chained lines."""
    signature: list[SignatureProblem] = field(default_factory=list)
    """Checkpoints that do not vouch for the log."""
    coverage: dict[str, Coverage] = field(default_factory=dict)
    """Per host, how much of its log the checkpoints vouch for (empty: no checkpoints checked)."""
    key: str | None = None
    """Fingerprint of the key the checkpoints were checked with (None: none given)."""
    checkpoints: int | None = None
    """Checkpoints read (None: no checkpoints file)."""
    duplicate_checkpoints: int = 0
    refused: list[Refusal] | None = None
    """Inputs refused when the log was written, from the rejects file (None: no rejects file)."""

    @property
    def problems(self) -> int:
        return len(self.chain) + len(self.mismatches) + len(self.rejected) + len(self.signature)

    @property
    def clean(self) -> bool:
        return self.problems == 0

    @property
    def unchained_hosts(self) -> list[str]:
        return sorted(h for h, chained in self.hosts.items() if not chained)

    @property
    def unsigned_hosts(self) -> list[str]:
        """Chained hosts that no valid checkpoint of the key vouches for."""
        return sorted(h for h, chained in self.hosts.items()
                      if chained and (self.key is None or h not in self.coverage or not self.coverage[h].signed))

    @property
    def status(self) -> str:
        """FAILED (problems), UNCHAINED (a host without chain), UNSIGNED (a host no checkpoint
        vouches for) or OK, the first that applies."""
        if self.problems:
            return "FAILED"
        if not self.hosts or self.unchained_hosts:
            return "UNCHAINED"
        if self.unsigned_hosts:
            return "UNSIGNED"
        return "OK"

    @property
    def ok(self) -> bool:
        """The strict verdict: chained, signed and no problem."""
        return self.status == "OK"

    @property
    def rederived(self) -> int:
        """Recorded decisions that re-derived equal."""
        wrong = sum(1 for m in self.mismatches if m.recorded != "nothing")
        return max(self.decisions - wrong, 0)

    def tail_lines(self) -> int:
        return sum(c.tail_lines for c in self.coverage.values())

    def accepted(self, accept_unsigned: bool = False, accept_unchained: bool = False) -> bool:
        """Whether the verdict passes with these allowances (unchained implies unsigned)."""
        status = self.status
        return status == "OK" or (status == "UNSIGNED" and (accept_unsigned or accept_unchained)) or (
            status == "UNCHAINED" and accept_unchained)

    def exit_code(self, accept_unsigned: bool = False, accept_unchained: bool = False) -> int:
        return 0 if self.accepted(accept_unsigned, accept_unchained) else EXIT_CODES[self.status]

    def verdict(self, accept_unsigned: bool = False, accept_unchained: bool = False) -> str:
        """One line: the status, what it means, and the counts."""
        status = self.status
        counts = (f"{_n(self.events, 'line')}, {_n(len(self.hosts), 'host')}, "
                  f"{_n(self.rederived, 'decision')} re-derived, {_n(self.problems, 'problem')}")
        key = short_fingerprint(self.key) if self.key else None
        if status == "FAILED":
            what = (f"{len(self.chain)} chain, {len(self.signature)} signature, {len(self.mismatches)} decision, "
                    f"{len(self.rejected)} rejected-line problems")
        elif status == "UNCHAINED":
            what = ("the log is empty" if not self.hosts else
                    f"no hash chain for host{'s' if len(self.unchained_hosts) > 1 else ''} "
                    f"{', '.join(self.unchained_hosts)}: tampering cannot be detected, only wrong decisions")
        elif status == "UNSIGNED":
            why = ("no key given: --key" if self.key is None else
                   "no checkpoints file: --checkpoints" if self.checkpoints is None else
                   f"no checkpoint signed by {key} vouches for host{'s' if len(self.unsigned_hosts) > 1 else ''} "
                   f"{', '.join(self.unsigned_hosts)}")
            what = f"chain intact but not signed ({why}): anyone can rewrite and re-chain it"
        else:
            tail = self.tail_lines()
            what = (f"chain intact, signed by {key}, every decision re-derived"
                    + (f"; {tail:,} lines after the last checkpoints are not signed" if tail else ""))
        accepted = ""
        if status in ("UNSIGNED", "UNCHAINED") and self.accepted(accept_unsigned, accept_unchained):
            accepted = f" (accepted: --accept-{status.lower()})" if status == "UNCHAINED" or accept_unsigned \
                else " (accepted: --accept-unchained)"
        return f"{status}{accepted}: {what}: {counts}"

    def notes(self) -> list[str]:
        """What a reader should know besides the problems (versions, unchained lines, the tail)."""
        out = []
        for host, version in sorted(self.versions.items()):
            if version is None:
                out.append(f"host {host}: the log does not record which twin version decided; "
                           f"re-derived with {__version__}")
            elif version != __version__:
                out.append(f"host {host}: decided by twin {version}, re-derived with {__version__}: "
                           "decisions differ where the rules changed between them")
        if self.unchained and not self.chained:
            out.append("the log is not hash-chained: tampering cannot be detected, only wrong decisions")
        elif self.unchained:
            out.append(f"{self.unchained} lines carry no chain (written before chaining began, unless "
                       "reported above)")
        if self.checkpoints is not None and self.key is None:
            out.append(f"{self.checkpoints} checkpoints not checked: no public key given (--key)")
        elif self.key is not None and self.checkpoints is None:
            out.append("a key but no checkpoints file was given (--checkpoints): nothing is signed")
        if self.duplicate_checkpoints:
            out.append(f"{self.duplicate_checkpoints} checkpoints are copies of earlier ones (redelivered): ignored")
        for host, c in sorted(self.coverage.items()):
            if c.signed and c.tail_lines:
                span = (f", {(c.tail_to_ms - c.tail_from_ms) / 1000:,.1f} s of event time up to "
                        f"{format_time(c.tail_to_ms)}" if c.tail_to_ms is not None and c.tail_from_ms is not None
                        else "")
                out.append(f"host {host}: signed through line {c.signed_line} (its {c.signed}th line, "
                           f"{format_time(c.signed_at_ms) if c.signed_at_ms is not None else '?'}); the "
                           f"{c.tail_lines} lines after it{span} are unprotected: lines appended or changed "
                           "there cannot be told from the real ones")
            elif c.signed:
                out.append(f"host {host}: signed through its last line, line {c.signed_line} ({c.signed} lines)")
        if self.refused is not None:
            out.append(f"{len(self.refused)} inputs were refused when the log was written (rejects file)"
                       if self.refused else "no input was refused when the log was written (rejects file empty)")
        return out

    def to_text(self, accept_unsigned: bool = False, accept_unchained: bool = False) -> str:
        lines = [(f"{self.events} events: {self.inputs} inputs, {self.decisions} decisions; "
                 f"{self.chained} chained, {self.unchained} unchained")]
        for host, policy in sorted(self.policies.items()):
            lines.append(f"host {host}: policy {policy}, twin {self.versions.get(host) or 'unknown'}")
        if self.key is not None:
            lines.append(f"key: {short_fingerprint(self.key)}"
                         + (f", {self.checkpoints} checkpoints" if self.checkpoints is not None else ""))
        lines += [f"note: {note}" for note in self.notes()]
        for p in self.chain:
            lines.append(f"chain: line {p.position} host {p.host}: {p.kind}: {p.detail}")
        for s in self.signature:
            lines.append(f"signature: line {s.position} host {s.host}: {s.kind}: checkpoints line "
                         f"{s.checkpoint_line}: {s.detail}")
        for m in self.mismatches:
            lines.append(f"decision: line {m.position} host {m.host} VM {m.vm}: expected {m.expected}, "
                         f"recorded {m.recorded}")
        for r in self.rejected:
            lines.append(f"rejected: {r.describe()}")
        for refusal in self.refused or []:
            lines.append(f"refused when written: {refusal.describe()}")
        lines.append(self.verdict(accept_unsigned, accept_unchained))
        return "\n".join(lines) + "\n"

    def to_dict(self, accept_unsigned: bool = False, accept_unchained: bool = False) -> dict[str, Any]:
        return {
            "status": self.status, "accepted": self.accepted(accept_unsigned, accept_unchained),
            "verdict": self.verdict(accept_unsigned, accept_unchained),
            "ok": self.ok, "problems": self.problems, "events": self.events, "hosts": sorted(self.hosts),
            "inputs": self.inputs, "decisions": self.decisions, "rederived": self.rederived,
            "chained": self.chained, "unchained": self.unchained, "versions": self.versions,
            "policies": self.policies, "heads": self.heads, "notes": self.notes(),
            "key": self.key, "checkpoints": self.checkpoints,
            "coverage": {h: c.as_dict() for h, c in sorted(self.coverage.items())},
            "chain": [p.__dict__ for p in self.chain],
            "signature": [s.__dict__ for s in self.signature],
            "mismatches": [m.__dict__ for m in self.mismatches],
            "rejected": [r.as_dict() for r in self.rejected],
            "refused": None if self.refused is None else [r.__dict__ for r in self.refused],
        }


class Verifier:
    """``verify`` one line at a time: ``feed`` each line with its line number, then ``finish``.

    Hosts are independent, so the lines of different hosts may go to different verifiers (each
    seeing all lines of its hosts, in order) and their results be ``merge``d. ``checkpoints``
    checks the signed checkpoints along (``twin.signing``)."""

    def __init__(self, heads: dict[str, str] | None = None, checkpoints: CheckpointCheck | None = None) -> None:
        self.result = Verification()
        self.chain = ChainVerifier(heads)
        self.signing = checkpoints
        self.twin = Twin()
        self.pending: dict[str, deque[Decision]] = {}
        self.end = 0
        # Frames and rounds wait until their host's next line (or the end) and are then re-derived
        # for all waiting hosts together, as the worker does (twin.batch): the same results.
        self.frames: dict[str, tuple[HostState, int, frames.FrameCheck]] = {}
        self.rounds: dict[str, tuple[int, int, bytes, BalancerRound | None]] = {}

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
        is_round = b'"type":"balancer.round"' in body
        if host in self.rounds or (host in self.frames and not is_round) or len(self.rounds) >= WAITING_ROUNDS:
            self.flush()  # this host's waiting work first (a round may follow its frame's waiting fold)
        if is_round:
            self._round(position, host, body)
            return
        if b'"type":"decision.' in body:
            result.decisions += 1
            _recorded(result, position, host, body, self.pending)
            return
        try:
            event = decode(body, position)
        except Rejected as bad:
            result.rejected.append(bad)
            return
        if is_decision(event):  # a decision line not as dmtwin writes it
            result.decisions += 1
            _compare(result, position, event.host, event, self.pending)
            return
        if isinstance(event, BalancerRound):  # laid out otherwise than dmtwin writes it
            self._round(position, host, body, event)
            return
        event = cast(InputEvent, event)
        result.inputs += len(event.reports) if isinstance(event, StatusFrame) else 1
        waiting = self.pending.get(event.host)
        if waiting and isinstance(event, (BalancerTicked, VmRestarted)):  # a new round: the last one is over
            while waiting:
                missing = waiting.popleft()
                result.mismatches.append(Mismatch(position, missing.host, missing.vm,
                                                  describe_decision(missing), "nothing"))
        if isinstance(event, HostJoined):
            result.versions[event.host] = event.twin_version
            result.policies[event.host] = event.policy
        try:
            if isinstance(event, StatusFrame) and self._frame(event):
                self._marked_round(position, event)
                return
            decisions = self.twin.handle(event)
        except Rejected as refused:
            result.rejected.append(Rejected(refused.field, refused.value,
                                            f"refused by the re-derived state: {refused.reason}", position))
            return
        if isinstance(event, StatusFrame):
            self._marked_round(position, event)
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

    def _marked_round(self, position: int, frame: StatusFrame) -> None:
        """A ``balanced`` frame's round (none for other frames): re-run at the next ``flush`` like a
        recorded round that decided nothing."""
        if not frame.balanced:
            return
        self.result.inputs += 1
        self._over(position, frame.host)
        empty = trusted(BalancerRound, at_ms=frame.at_ms, host=frame.host, decisions=[])
        self.rounds[frame.host] = (position, frame.at_ms, empty.model_dump_json().encode(), None)

    def _round(self, position: int, host: str, body: bytes, recorded: BalancerRound | None = None) -> None:
        """A recorded round: re-run on the re-derived state at the next ``flush``."""
        self.result.inputs += 1
        self._over(position, host)
        head = peek(body)
        if recorded is None and head is None:
            try:
                recorded = cast(BalancerRound, decode(body, position))
            except Rejected as bad:
                self.result.rejected.append(bad)
                return
        at_ms = recorded.at_ms if recorded is not None else head[0]  # type: ignore[index]
        self.rounds[host] = (position, at_ms, body, recorded)

    def flush(self) -> None:
        """Fold the waiting frames and re-run the waiting rounds, all hosts together."""
        frames.fold_many(list(self.frames.values()))
        self.frames.clear()
        if not self.rounds:
            return
        waiting, runnable = list(self.rounds.items()), []
        self.rounds.clear()
        for host, (position, at_ms, body, recorded) in waiting:
            try:
                check_clock(self.twin.host(host), at_ms)
            except Rejected as refused:
                self.result.rejected.append(Rejected(refused.field, refused.value,
                                                     f"refused by the re-derived state: {refused.reason}", position))
                continue
            runnable.append((host, position, at_ms, body, recorded))
        expected = self.twin.rounds([(host, at_ms) for host, _, at_ms, _, _ in runnable])
        for (host, position, _, body, recorded), entry in zip(runnable, expected):
            self._compare_round(position, host, body, recorded, entry)

    def _compare_round(self, position: int, host: str, body: bytes, recorded: BalancerRound | None,
                       expected: BalancerRound) -> None:
        """The recorded round against the re-derived one; the same bytes is the common case."""
        result = self.result
        if recorded is None and expected.model_dump_json().encode() == body:
            result.decisions += len(expected.decisions)
            return
        if recorded is None:
            try:
                recorded = cast(BalancerRound, decode(body, position))
            except Rejected as bad:
                result.rejected.append(bad)
                return
        result.decisions += len(recorded.decisions)
        self.pending[host] = deque(expected.decisions)
        for decision in recorded.decisions:
            _compare(result, position, host, decision, self.pending)
        self._over(position, host)

    def _over(self, position: int, host: str) -> None:
        """A new round: decisions of the last one still expected were never recorded."""
        waiting = self.pending.get(host)
        while waiting:
            missing = waiting.popleft()
            self.result.mismatches.append(Mismatch(position, missing.host, missing.vm,
                                                   describe_decision(missing), "nothing"))

    def finish(self, signed_hosts: Iterable[str] | None = None, file_problems: bool = True) -> Verification:
        """Decisions re-derived but never recorded, the chain's verdict and the checkpoints' (for the
        hosts this verifier saw and ``signed_hosts``, default every host with a checkpoint;
        ``file_problems``: report the checkpoints file's unreadable lines)."""
        self.flush()
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


def verify(lines: Iterable[str | bytes], heads: dict[str, str] | None = None,
           checkpoints: CheckpointCheck | None = None) -> Verification:
    """Check the chain (and the signed ``checkpoints``) and re-derive every decision (see the module
    docstring)."""
    verifier = Verifier(heads, checkpoints)
    for position, line in enumerate(lines, start=1):
        verifier.feed(position, line.encode() if isinstance(line, str) else line)
    return verifier.finish()


def merge(parts: Iterable[Verification]) -> Verification:
    """One verification from those of disjoint sets of hosts (lines seen by several, such as
    unreadable ones, are reported once)."""
    out = Verification()
    chain: dict[tuple[int, str, str], ChainProblem] = {}
    rejected: dict[tuple[int | None, str], Rejected] = {}
    signature: dict[tuple[int, str, str, int], SignatureProblem] = {}
    for part in parts:
        out.events += part.events
        out.inputs += part.inputs
        out.decisions += part.decisions
        out.chained += part.chained
        out.unchained += part.unchained
        out.mismatches += part.mismatches
        out.versions.update(part.versions)
        out.policies.update(part.policies)
        out.heads.update(part.heads)
        chain.update({(p.position, p.host, p.kind): p for p in part.chain})
        rejected.update({(r.position, r.describe()): r for r in part.rejected})
        for name, chained in part.hosts.items():
            out.hosts[name] = out.hosts.get(name, False) or chained
        signature.update({(s.position, s.host, s.kind, s.checkpoint_line): s for s in part.signature})
        out.coverage.update(part.coverage)
        if part.checkpoints is not None:
            out.key, out.checkpoints, out.duplicate_checkpoints = part.key, part.checkpoints, part.duplicate_checkpoints
        if part.refused is not None:
            out.refused = part.refused
    out.signature = sorted(signature.values(), key=lambda s: (s.position, s.host, s.checkpoint_line))
    out.chain = sorted(chain.values(), key=lambda p: (p.position, p.host))
    out.mismatches.sort(key=lambda m: m.position)
    out.rejected = sorted(rejected.values(), key=lambda r: r.position if r.position is not None else -1)
    return out


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
