"""What ``twin.audit.verify`` finds in a log, and its verdict: ``Verification`` (with the exit code
of ``dmtwin audit verify``), the ``Mismatch`` of a decision, the ``Refusal`` recorded next to a
log, ``merge`` of the verdicts of disjoint sets of hosts, and how times and decisions are written.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeGuard

from . import __version__
from .chain import ChainProblem
from .errors import Rejected
from .events import DECISION_TYPES, Decision
from .signing import Coverage, SignatureProblem, short_fingerprint

__all__ = [
    "EXIT_CODES",
    "Mismatch",
    "Refusal",
    "Verification",
    "describe_decision",
    "format_time",
    "is_decision",
    "merge",
    "parse_time",
    "read_refusals",
]


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

    def take(self, found: Verification) -> None:
        """Add what ``found`` found in other lines: counts, mismatches, rejections, versions, policies."""
        self.inputs += found.inputs
        self.decisions += found.decisions
        self.mismatches += found.mismatches
        self.rejected += found.rejected
        self.versions.update(found.versions)
        self.policies.update(found.policies)

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


def merge(parts: Iterable[Verification]) -> Verification:
    """One verification from those of disjoint sets of hosts (lines seen by several, such as
    unreadable ones, are reported once)."""
    out = Verification()
    chain: dict[tuple[int, str, str], ChainProblem] = {}
    rejected: dict[tuple[int | None, str], Rejected] = {}
    signature: dict[tuple[int, str, str, int], SignatureProblem] = {}
    for part in parts:
        out.take(part)
        out.events += part.events
        out.chained += part.chained
        out.unchained += part.unchained
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
