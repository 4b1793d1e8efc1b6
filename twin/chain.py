"""Tamper evidence: each host's log is a hash chain, and ``verify_chain`` says where it breaks.

The chain of an event is ``sha256(previous + canonical)`` in hex, where ``previous`` is the chain
of the host's previous event (64 zeros for its first) as ASCII hex, and ``canonical`` the event's
JSON without its chain (``event.model_dump_json()``). ``twin.log.encode`` writes it as the line's
last field, so a verifier takes a line's bytes, cuts the ``,"chain":"…"`` suffix off and hashes
the rest: no parsing, and any change of a byte breaks the link.

Changing, inserting, removing or moving a line leaves a pattern of broken links that
``ChainVerifier`` tells apart where the hashes allow it:

- **changed**: the line's chain no longer follows from its predecessor, but the next line follows
  from it (its content, or only its chain value, was edited). A hash chain cannot tell this from
  the removal of the line *before* it; ``removed`` is reported instead when the event itself shows
  a gap (a decision or an answer whose predecessor request is missing).
- **inserted**: a line after which the chain continues from the line before it, or a copy of an
  earlier line.
- **reordered**: a line whose predecessor comes later in the log.
- **removed**: a gap, shown by sequence numbers, or a log that ends before the last digest known
  for the host (``heads``).
- **missing**: a line without a chain among chained ones (its chain was stripped, or it was added
  without one). Lines before a host's first chained line were written before chaining began.

After a break the verifier re-anchors on the recorded digest and keeps checking.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from . import __version__
from .events import EVENT_ADAPTER, Decision, HostJoined, InputEvent

__all__ = [
    "GENESIS",
    "ChainProblem",
    "ChainVerifier",
    "Chainer",
    "link_digest",
    "split_line",
    "unchained",
    "verify_chain",
]

GENESIS = "0" * 64
"""The 'previous digest' of a host's first event."""

_SUFFIX = b',"chain":"'
_TAIL = len(_SUFFIX) + 64 + 2  # ,"chain":"<64 hex>"}
_HEX = re.compile(rb"[0-9a-f]{64}")
_HOST = re.compile(rb'\{"v":\d+,"at_ms":\d+,"host":"([^"\\]*)"')
_DECISION = re.compile(rb'"vm":"([^"\\]*)","seq":(\d+),"type":"decision\.')
_STARTED = re.compile(rb'"vm":"([^"\\]*)","type":"vm\.started"')
_ANSWER = re.compile(rb'"vm":"([^"\\]*)","type":"guest\.[a-z_]+_response","seq":(\d+)')

Kind = Literal["changed", "removed", "inserted", "reordered", "missing"]
AnyEvent = InputEvent | Decision


def link_digest(previous: str, canonical: bytes) -> str:
    """The chain of an event whose canonical JSON is ``canonical``, after ``previous``."""
    return hashlib.sha256(previous.encode("ascii") + canonical).hexdigest()


def unchained(event: AnyEvent) -> AnyEvent:
    """The event without its chain (events compare equal only if their chains do too)."""
    return event if event.chain is None else event.model_copy(update={"chain": None})


class Chainer:
    """Links events into per-host chains, remembering each host's last digest (``heads``).

    Stamps ``HostJoined`` with this twin's version (if it has none), so that a verifier knows which
    rules decided.
    """

    def __init__(self, heads: dict[str, str] | None = None, version: str | None = __version__) -> None:
        self.heads: dict[str, str] = dict(heads or {})
        self.version = version

    def link(self, event: AnyEvent) -> AnyEvent:
        """The event with its chain set (and its twin version, for ``host.joined``)."""
        if isinstance(event, HostJoined) and event.twin_version is None and self.version:
            event = event.model_copy(update={"twin_version": self.version})
        chain = link_digest(self.heads.get(event.host, GENESIS), event.model_dump_json().encode())
        self.heads[event.host] = chain
        return event.model_copy(update={"chain": chain})

    def line(self, event: AnyEvent) -> str:
        """The chained event as a log line (``twin.log.encode`` of ``link(event)``), hashed once."""
        if isinstance(event, HostJoined) and event.twin_version is None and self.version:
            event = event.model_copy(update={"twin_version": self.version})
        body = event.model_dump_json()
        chain = link_digest(self.heads.get(event.host, GENESIS), body.encode())
        self.heads[event.host] = chain
        return f'{body[:-1]},"chain":"{chain}"}}'

    def link_all(self, events: Iterable[AnyEvent]) -> Iterable[AnyEvent]:
        """``link`` each event in turn."""
        return (self.link(event) for event in events)


def split_line(line: bytes) -> tuple[str, bytes, str | None] | None:
    """(host, canonical bytes, chain or None) of a log line; None if it is not an event at all.

    Lines as ``encode`` writes them are split without parsing; anything else is parsed, and a
    line laid out otherwise (fields reordered, spaces) is hashed in its canonical form, the model's
    JSON, so that reformatting a log does not count as tampering with it."""
    line = line.rstrip(b"\r\n")
    host_match = _HOST.match(line)
    if host_match is not None:
        host = host_match[1].decode("utf-8", "replace")
        if len(line) > _TAIL and line.endswith(b'"}') and line[-_TAIL:-_TAIL + len(_SUFFIX)] == _SUFFIX:
            chain = line[-66:-2]
            if _HEX.fullmatch(chain):
                return host, line[:-_TAIL] + b"}", chain.decode("ascii")
        if b'"chain"' not in line and line.endswith(b"}"):
            try:  # unchained lines are rare in a chained log: make sure this one is whole
                json.loads(line)
            except ValueError:
                return None
            return host, line, None
    try:
        data = json.loads(line)
    except ValueError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("host"), str):
        return None
    chain_value = data.pop("chain", None)
    if chain_value is not None and not isinstance(chain_value, str):
        chain_value = str(chain_value)
    try:  # the canonical form is the model's JSON, whatever the layout of the line
        canonical = EVENT_ADAPTER.validate_python(data).model_dump_json().encode()
    except ValueError:  # not a valid event (a later stage says why): hash it as it stands
        canonical = json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()
    return data["host"], canonical, chain_value


@dataclass(frozen=True)
class ChainProblem:
    """Where a host's chain breaks, and the most likely reason."""

    position: int
    """1-based line number in the log as read (the line after the last: something is missing at the end)."""
    host: str
    kind: Kind
    detail: str


@dataclass
class _Break:
    """A chained line that does not follow from its predecessor, waiting for its forward window."""

    position: int
    host: str
    body: bytes
    chain: str
    previous: int
    """Line number of the host's previous chained line (0: none)."""
    back: list[tuple[int, str]]
    complete_back: bool
    """``back`` reaches the host's first line."""
    hint: tuple[Kind, str] | None
    forward: list[tuple[int, str]] = field(default_factory=list)
    settled: tuple[Kind, str] | None = None


@dataclass
class _Host:
    name: str
    back: deque[tuple[int, str]]
    anchor: str = GENESIS
    anchor_position: int = 0
    lines: int = 0
    chained: bool = False
    computed: str | None = None
    """Digest through the unchained lines since the anchor (their chains, if they were stripped)."""
    pending: list[int] = field(default_factory=list)
    """Unchained lines since the anchor."""
    expected_last: str | None = None
    """If the last chained line broke: what its chain would be had only its chain value changed."""
    last_break: _Break | None = None
    open: list[_Break] = field(default_factory=list)
    last_seq: dict[str, int] = field(default_factory=dict)
    unexplained: list[tuple[int, str]] = field(default_factory=list)
    """Resolved breaks that could be a change or a removal, latest last."""


class ChainVerifier:
    """Checks lines one at a time (``feed``), then reports the problems (``finish``).

    ``window`` bounds how far back and ahead a broken line's true predecessor is searched: a line
    moved further than that is reported as changed rather than reordered.
    """

    def __init__(self, heads: dict[str, str] | None = None, window: int = 64) -> None:
        self.expected_heads = dict(heads or {})
        self.window = window
        self.hosts: dict[str, _Host] = {}
        self._fast: dict[bytes, _Host] = {}
        """Hosts by the bytes of their name as lines spell it."""
        self.chained = 0
        self.unchained = 0
        self.unreadable = 0
        self._problems: dict[tuple[int, str], ChainProblem] = {}
        self._reordered: set[int] = set()
        self.lines_seen = 0
        """Lines fed so far (the line number of the last one)."""
        self.last_chain: str | None = None
        """The chain recorded on the line just fed (None: it has none, or is no event)."""

    @property
    def heads(self) -> dict[str, str]:
        """Each host's last recorded digest."""
        return {name: host.anchor for name, host in self.hosts.items() if host.chained}

    def feed(self, position: int, line: bytes) -> tuple[str, bytes] | None:
        """Check line number ``position`` (1-based); return its host and canonical bytes (None: blank
        or unreadable)."""
        if position > self.lines_seen:
            self.lines_seen = position
        self.last_chain = None
        # Fast path, nearly every line of an intact log: a chained line that follows its predecessor.
        end = len(line) - 1 if line[-1:] == b"\n" else len(line)
        if line[end - _TAIL:end - _TAIL + len(_SUFFIX)] == _SUFFIX and line[end - 2:end] == b'"}':
            match = _HOST.match(line)
            host = self._fast.get(match[1]) if match is not None else None
            if host is not None and not host.pending and not host.open and host.expected_last is None:
                body = line[:end - _TAIL] + b"}"
                digest = hashlib.sha256(host.anchor.encode("ascii") + body).hexdigest()
                if line[end - 66:end - 2] == digest.encode("ascii"):
                    self.last_chain = digest
                    self.chained += 1
                    host.lines += 1
                    host.back.append((position, digest))
                    host.anchor, host.anchor_position = digest, position
                    if b'"type":"guest.status"' not in body and (
                            b'"decision.' in body or b'_response"' in body or b'"vm.started"' in body):
                        self._track_seq(host, body)
                    return host.name, body
        if end < len(line):
            line = line[:end]
        if not line.strip():
            return None
        parts = split_line(line)
        if parts is None:
            self.unreadable += 1
            self._report(position, "?", "changed", "unreadable line (truncated or corrupt): its host and "
                                                   "chain are lost, and the host's next line cannot link to it")
            return None
        name, body, chain = parts
        found = self.hosts.get(name)
        host = found if found is not None else self.hosts.setdefault(name, _Host(name, deque(maxlen=self.window)))
        match = _HOST.match(line)
        if match is not None:
            self._fast[match[1]] = host
        host.lines += 1
        if chain is None:
            self.unchained += 1
            host.computed = link_digest(host.computed or host.anchor, body)
            host.pending.append(position)
            self._track_seq(host, body)
            return name, body
        self.chained += 1
        self.last_chain = chain
        self._chained(position, name, host, body, chain)
        if host.last_break is None or host.last_break.position != position:
            self._track_seq(host, body)  # a broken line's own gap is in its hint
        return name, body

    def _chained(self, position: int, name: str, host: _Host, body: bytes, chain: str) -> None:
        if link_digest(host.anchor, body) == chain:
            if host.pending and host.chained:
                for p in host.pending:
                    self._report(p, name, "inserted", "a line without a chain, inserted: the chain runs past it")
        elif host.pending and host.computed is not None and link_digest(host.computed, body) == chain:
            for p in host.pending:
                self._report(p, name, "missing", "its chain was removed (the content is intact)")
        elif host.expected_last is not None and link_digest(host.expected_last, body) == chain:
            assert host.last_break is not None
            host.last_break.settled = ("changed", "its chain value was altered (its content is intact)")
        else:
            self._break(position, name, host, body, chain)
            return
        host.expected_last = host.last_break = None
        self._forward(host, position, chain)
        self._advance(host, position, chain)

    def _break(self, position: int, name: str, host: _Host, body: bytes, chain: str) -> None:
        """A chained line that does not follow: remember it until its forward window is full."""
        if host.chained:
            for p in host.pending:
                self._report(p, name, "missing", "a line without a chain among chained ones")
        brk = _Break(position, name, body, chain, host.anchor_position, list(host.back),
                     host.lines - len(host.pending) - 1 <= len(host.back), self._hint(host, body))
        self._forward(host, position, chain)
        host.open.append(brk)
        host.expected_last = link_digest(host.anchor, body)
        host.last_break = brk
        self._advance(host, position, chain)

    def _forward(self, host: _Host, position: int, chain: str) -> None:
        still_open = []
        for brk in host.open:
            brk.forward.append((position, chain))
            if len(brk.forward) >= self.window:
                self._resolve(brk)
            else:
                still_open.append(brk)
        host.open = still_open

    def _advance(self, host: _Host, position: int, chain: str) -> None:
        host.back.append((position, chain))
        host.anchor, host.anchor_position = chain, position
        host.pending, host.computed, host.chained = [], None, True

    def _track_seq(self, host: _Host, body: bytes) -> None:
        """Follow each VM's decision numbers; a gap names the removal behind an unexplained break."""
        gap = self._gap(host, body)
        if gap is None:
            return
        if host.open and host.open[-1].hint is None and host.open[-1].settled is None:
            host.open[-1].hint = ("removed", gap)
        elif host.unexplained:
            where, name = host.unexplained.pop()
            self._report(where, name, "removed", gap)

    def _gap(self, host: _Host, body: bytes) -> str | None:
        """If this line shows a line missing before it (a decision or answer whose predecessor
        request is absent), say which; update the VM's last decision number."""
        if b'"decision.' in body:  # one decision, or a round's
            gap = None
            for match in _DECISION.finditer(body):
                vm, seq = match[1].decode("utf-8", "replace"), int(match[2])
                last = host.last_seq.get(vm)
                host.last_seq[vm] = seq
                if gap is None and last is not None and seq > last + 1:
                    gap = f"decision #{last + 1} of VM {vm!r} is missing before it"
            return gap
        elif b'"type":"vm.started"' in body:
            match = _STARTED.search(body)
            if match is not None:  # its first decision is #1 (or the one after its last, if it ran before)
                host.last_seq.setdefault(match[1].decode("utf-8", "replace"), 0)
        elif b'_response"' in body:
            match = _ANSWER.search(body)
            if match is None:
                return None
            vm, seq = match[1].decode("utf-8", "replace"), int(match[2])
            last = host.last_seq.get(vm)
            if last is not None and seq > last:
                return f"request #{seq} of VM {vm!r}, which a later line answers, is missing"
        return None

    def _hint(self, host: _Host, body: bytes) -> tuple[Kind, str] | None:
        """What a broken line itself says: bytes dmtwin would not write, or a gap in ``seq``."""
        from .log import decode, encode  # local: twin.log imports the engine

        try:
            event = decode(body)
        except Exception:  # noqa: BLE001 - any failure means the bytes were edited
            return "changed", "its content is not a valid event"
        if encode(unchained(event)).encode() != body:
            return "changed", "its bytes are not as dmtwin writes this event"
        gap = self._gap(host, body)
        return ("removed", gap) if gap is not None else None

    def _report(self, position: int, host: str, kind: Kind, detail: str) -> None:
        known = self._problems.get((position, host))
        if known is None or known.kind != kind:  # the first explanation of a kind is the precise one
            self._problems[(position, host)] = ChainProblem(position, host, kind, detail)

    def _resolve(self, brk: _Break) -> None:
        if brk.settled is not None:
            self._report(brk.position, brk.host, *brk.settled)
            return
        for p, c in brk.back:
            if c == brk.chain:
                self._report(brk.position, brk.host, "inserted", f"a copy of line {p}")
                return
        candidates = list(reversed(brk.back[:-1]))
        if brk.complete_back:
            candidates.append((0, GENESIS))
        for p, c in candidates:
            if link_digest(c, brk.body) == brk.chain:
                between = [q for q, _ in brk.back if p < q < brk.position]
                if p in self._reordered or any(q in self._reordered for q in between):
                    self._reordered.add(brk.position)  # the other side of a reordering: reported there
                    return
                for q in between:
                    self._report(q, brk.host, "inserted", f"the chain runs from line {p} to line "
                                                          f"{brk.position} without it")
                return
        for p, c in brk.forward:
            if link_digest(c, brk.body) == brk.chain:
                self._reordered.add(brk.position)
                self._report(brk.position, brk.host, "reordered", f"it belongs after line {p}")
                return
        if any(p.host == "?" and brk.previous < p.position < brk.position for p in self._problems.values()):
            return  # it follows an unreadable line, already reported
        if brk.hint is not None:
            self._report(brk.position, brk.host, *brk.hint)
            return
        self._report(brk.position, brk.host, "changed",
                     f"it does not follow from line {brk.previous}: it was changed, or a line before it "
                     "was removed (the chain alone cannot tell which)")
        self.hosts[brk.host].unexplained.append((brk.position, brk.host))

    def finish(self) -> list[ChainProblem]:
        """Resolve what is still open, check the expected heads; the problems by position."""
        for name, host in self.hosts.items():
            for brk in host.open:
                self._resolve(brk)
            host.open = []
            if host.chained:
                for p in host.pending:
                    self._report(p, name, "missing", "a line without a chain after the host's chained lines")
        for name, head in self.expected_heads.items():
            last = self.hosts.get(name)
            if last is None:
                self._report(self.lines_seen + 1, name, "removed", "the host's whole log is missing")
            elif last.anchor != head:
                seen = any(c == head for _, c in last.back)
                self._report(self.lines_seen + 1, name, "inserted" if seen else "removed",
                             f"the log of host {name!r} ends at digest {last.anchor[:12]}…, not at the "
                             f"expected head {head[:12]}…" + (": lines were added after it" if seen else
                                                             ": its last lines are missing"))
        return sorted(self._problems.values(), key=lambda p: (p.position, p.host))


def verify_chain(lines: Iterable[str | bytes], heads: dict[str, str] | None = None) -> list[ChainProblem]:
    """Every break of every host's chain in ``lines``, by 1-based line number (see the module
    docstring)."""
    verifier = ChainVerifier(heads)
    for position, line in enumerate(lines, start=1):
        verifier.feed(position, line.encode() if isinstance(line, str) else line)
    return verifier.finish()
