"""Signed checkpoints: what makes a hash-chained log impossible to rewrite without the private key.

A hash chain (``twin.chain``) shows where a log was edited, but anyone can recompute it: append a
line with a fresh digest, or rewrite a line and re-chain everything after it, and the chain is
whole again. A **checkpoint** pins a host's chain at a point with an Ed25519 signature:

    {"v":1,"at_ms":…,"host":"h1","type":"log.checkpoint","position":4711,
     "head":"<64 hex>","key":"<64 hex>","sig":"<128 hex>"}

- ``position``: how many chained log lines of the host there are up to and including the one it
  pins, so the 1-based count of the host's chained lines so far;
- ``head``: that line's ``chain`` digest;
- ``key``: the signer's key fingerprint, sha256 of the raw 32-byte Ed25519 public key, in hex
  (shown as ``SHA256:`` and its first 16 hex digits, ``short_fingerprint``);
- ``at_ms``: the event time of the last line it covers (no clock: the writer's event time);
- ``sig``: Ed25519 over ``SIGNED_PREFIX`` + the line without ``sig`` (``Checkpoint.signed_bytes``).

Ed25519 is deterministic: the same key and checkpoint always give the same bytes, so the core stays
pure and a re-sent checkpoint is byte-identical to the first. Loading key files is ``streams.keys``'s
job; here are only bytes.

``CheckpointCheck`` is what ``twin.audit.Verifier`` uses: fed every chained line of the log, it
compares each checkpoint with the line at its position and reports, by 1-based line number, a
re-chained rewrite before a checkpoint, a cut before one, a checkpoint of another log or key, and
how much of each host's log comes after its last checkpoint (the unprotected tail).

``Trail`` is what offline writers use (``dmtwin simulate -o``, ``ingest --to FILE``): it chains
the events, signs a checkpoint per host every ``every_ms`` of event time and at the end, and turns
the inputs the twin refused into rejects-file lines.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .chain import Chainer
from .errors import Rejected
from .events import Decision, Digest, InputEvent, Name

__all__ = [
    "CHECKPOINT_TYPE",
    "SIGNED_PREFIX",
    "Checkpoint",
    "CheckpointCheck",
    "Coverage",
    "PublicKey",
    "SignatureProblem",
    "Signer",
    "Trail",
    "fingerprint",
    "short_fingerprint",
]

CHECKPOINT_TYPE = "log.checkpoint"
SIGNED_PREFIX = b"dmtwin log.checkpoint v1\n"
"""Domain separation: a dmtwin checkpoint signature can never be mistaken for another message's."""

Signature = Annotated[str, Field(pattern=r"^[0-9a-f]{128}$")]


def fingerprint(public_key: bytes) -> str:
    """sha256 of the raw 32-byte Ed25519 public key, 64 hex digits."""
    return hashlib.sha256(public_key).hexdigest()


def short_fingerprint(digest: str) -> str:
    """How a key is named wherever dmtwin prints one: ``SHA256:`` and 16 hex digits."""
    return f"SHA256:{digest[:16]}"


class Checkpoint(BaseModel):
    """One signed checkpoint (a line of the checkpoints topic or file)."""

    model_config = ConfigDict(strict=True, frozen=True, extra="forbid")

    v: Literal[1] = 1
    at_ms: Annotated[int, Field(ge=0)]
    """Event time of the last log line it covers."""
    host: Name
    type: Literal["log.checkpoint"] = "log.checkpoint"
    position: Annotated[int, Field(ge=1)]
    """The host's chained log lines so far (1-based count): the checkpoint pins the last of them."""
    head: Digest
    """The ``chain`` of the host's ``position``-th chained line."""
    key: Digest
    """Fingerprint of the signing key (sha256 of the raw Ed25519 public key)."""
    sig: Signature
    """Ed25519 signature of ``signed_bytes()``, hex."""

    def signed_bytes(self) -> bytes:
        """What the signature covers: ``SIGNED_PREFIX`` + the canonical JSON without ``sig``."""
        return SIGNED_PREFIX + self.model_dump_json(exclude={"sig"}).encode()

    def line(self) -> bytes:
        """The checkpoint as one JSON line (no newline)."""
        return self.model_dump_json().encode()


class Signer:
    """Signs checkpoints with an Ed25519 private key (the 32 raw bytes; ``streams.keys`` reads files).

    The worker's API: after each transaction (or batch) that wrote log lines for ``host``, with the
    host's chained-line count and last digest::

        value = signer.checkpoint(host, position, head, at_ms)   # bytes, one JSON line
    """

    def __init__(self, private_key: bytes) -> None:
        if len(private_key) != 32:
            raise ValueError(f"an Ed25519 private key is 32 bytes, not {len(private_key)}")
        self._key = Ed25519PrivateKey.from_private_bytes(private_key)
        self.public_key = PublicKey(self._key.public_key().public_bytes_raw())
        self.fingerprint = self.public_key.fingerprint

    def sign(self, host: str, position: int, head: str, at_ms: int) -> Checkpoint:
        unsigned = Checkpoint(at_ms=at_ms, host=host, position=position, head=head, key=self.fingerprint,
                              sig="0" * 128)
        return unsigned.model_copy(update={"sig": self._key.sign(unsigned.signed_bytes()).hex()})

    def checkpoint(self, host: str, position: int, head: str, at_ms: int) -> bytes:
        """The signed checkpoint as one JSON line (no newline): the value to publish, keyed by host."""
        return self.sign(host, position, head, at_ms).line()


class PublicKey:
    """An Ed25519 public key (32 raw bytes) that checks checkpoints."""

    def __init__(self, raw: bytes) -> None:
        if len(raw) != 32:
            raise ValueError(f"an Ed25519 public key is 32 bytes, not {len(raw)}")
        self.raw = raw
        self._key = Ed25519PublicKey.from_public_bytes(raw)
        self.fingerprint = fingerprint(raw)
        self.short = short_fingerprint(self.fingerprint)

    def verifies(self, checkpoint: Checkpoint) -> bool:
        try:
            self._key.verify(bytes.fromhex(checkpoint.sig), checkpoint.signed_bytes())
        except InvalidSignature:
            return False
        return True


# --- verification --------------------------------------------------------------------------------

SignatureKind = Literal["invalid", "other-key", "bad-signature", "mismatch", "cut"]


@dataclass(frozen=True)
class SignatureProblem:
    """A checkpoint that does not vouch for the log: why, and where in both files."""

    position: int
    """1-based line number in the log (for a cut: the line after the host's last)."""
    host: str
    kind: SignatureKind
    detail: str
    checkpoint_line: int
    """1-based line number in the checkpoints file."""


@dataclass
class Coverage:
    """How much of a host's log the checkpoints vouch for."""

    lines: int = 0
    """The host's chained lines."""
    signed: int = 0
    """Position of its last checkpoint that matches the log (0: none)."""
    signed_line: int = 0
    """Log line number of that position."""
    signed_at_ms: int | None = None
    tail_lines: int = 0
    """Chained lines after the last matching checkpoint: what a forger could append to or change."""
    tail_first_line: int = 0
    tail_from_ms: int | None = None
    tail_to_ms: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class _Watch:
    """A host's checkpoints as the log is read."""

    by_position: dict[int, list[tuple[int, Checkpoint]]] = field(default_factory=dict)
    heads: dict[str, list[int]] = field(default_factory=dict)
    """Signed head → positions signed: to tell lines removed or added before a checkpoint."""
    seen: dict[int, tuple[int, str, bytes]] = field(default_factory=dict)
    """Position → (log line number, recorded chain, line) for each checkpointed position reached."""
    head_at: dict[str, tuple[int, int]] = field(default_factory=dict)
    """Signed head → (position, log line) where the log has it."""
    next_line: dict[int, int] = field(default_factory=dict)
    """Checkpointed position → log line of the host's line after it."""
    first_line: int = 0


def _at_ms(line: bytes) -> int | None:
    try:
        value = json.loads(line).get("at_ms")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, int) else None


class CheckpointCheck:
    """Checks the checkpoints against a log read once (``feed`` every chained line, then
    ``finish``), with ``key`` (None: no key given, so nothing is vouched for).

    Hosts are independent: ``finish(hosts)`` judges only those hosts' checkpoints, so the lines of
    different hosts can go to different checks (``streams.logtool.verify_parallel``)."""

    def __init__(self, key: PublicKey | None, checkpoints: Iterable[bytes | str]) -> None:
        self.key = key
        self.file_problems: list[SignatureProblem] = []
        self.watch: dict[str, _Watch] = {}
        self.count: dict[str, int] = {}
        self.last: dict[str, tuple[int, bytes]] = {}
        self.checkpoints = 0
        self.duplicates = 0
        seen_lines: set[bytes] = set()
        for number, raw in enumerate(checkpoints, start=1):
            line = (raw.encode() if isinstance(raw, str) else raw).strip()
            if not line:
                continue
            try:
                cp = Checkpoint.model_validate_json(line)
            except ValidationError as error:
                first = error.errors(include_url=False)[0]
                where = ".".join(str(p) for p in first["loc"]) or "line"
                self.file_problems.append(SignatureProblem(0, "?", "invalid", f"not a checkpoint: {where}: "
                                                           f"{first['msg']}", number))
                continue
            self.checkpoints += 1
            if line in seen_lines:  # a redelivered copy (at-least-once): it vouches for nothing new
                self.duplicates += 1
                continue
            seen_lines.add(line)
            watch = self.watch.setdefault(cp.host, _Watch())
            watch.by_position.setdefault(cp.position, []).append((number, cp))
            watch.heads.setdefault(cp.head, []).append(cp.position)

    def feed(self, position: int, host: str, chain: str, line: bytes) -> None:
        """A chained line of ``host`` at log line ``position``, with its recorded ``chain``."""
        n = self.count[host] = self.count.get(host, 0) + 1
        self.last[host] = (position, line)
        watch = self.watch.get(host)
        if watch is None:
            return
        if n == 1:
            watch.first_line = position
        if n - 1 in watch.by_position:
            watch.next_line[n - 1] = position
        if n in watch.by_position:
            watch.seen[n] = (position, chain, line)
        if chain in watch.heads and chain not in watch.head_at:
            watch.head_at[chain] = (n, position)

    def hosts(self) -> set[str]:
        return set(self.watch) | set(self.count)

    def finish(self, hosts: Iterable[str] | None = None, file_problems: bool = True
               ) -> tuple[list[SignatureProblem], dict[str, Coverage]]:
        """The problems (by log line) and each host's coverage, for ``hosts`` (default: all)."""
        problems = list(self.file_problems) if file_problems else []
        coverage: dict[str, Coverage] = {}
        for host in sorted(self.hosts() if hosts is None else hosts):
            cover = coverage[host] = Coverage(lines=self.count.get(host, 0))
            watch = self.watch.get(host)
            if watch is not None:
                problems += self._judge(host, watch, cover)
            self._tail(host, cover, watch)
        problems.sort(key=lambda p: (p.position, p.host, p.checkpoint_line))
        return problems, coverage

    def _judge(self, host: str, watch: _Watch, cover: Coverage) -> list[SignatureProblem]:
        """Each valid checkpoint of the host, in position order, against the log: its head where it
        should be (vouches), elsewhere (lines removed or added before it), nowhere (rewritten, or
        from another log), or past the log's end (cut)."""
        out: list[SignatureProblem] = []
        count, (last_line, _) = self.count.get(host, 0), self.last.get(host, (0, b""))
        key = self.key
        if key is None:
            return out
        shift = 0
        """Lines of the host missing (> 0) or added (< 0) before the checkpoints seen so far."""
        rewritten: SignatureProblem | None = None
        later = 0
        cut: tuple[int, Checkpoint] | None = None
        for position in sorted(watch.by_position):
            for number, cp in watch.by_position[position]:
                where = watch.seen.get(position, (last_line + 1,))[0]
                if cp.key != key.fingerprint:
                    out.append(SignatureProblem(where, host, "other-key", f"signed with key "
                                                f"{short_fingerprint(cp.key)}, not {key.short}", number))
                    continue
                if not key.verifies(cp):
                    out.append(SignatureProblem(where, host, "bad-signature", "its signature does not verify "
                                                f"with {key.short}: the checkpoint was forged or altered", number))
                    continue
                found = watch.head_at.get(cp.head)
                if found is not None:
                    n, line = found
                    if rewritten is not None:  # a later checkpoint vouches for it all: that one was foreign
                        out.append(SignatureProblem(
                            rewritten.position, host, "mismatch",
                            f"line {rewritten.position} is not the head this checkpoint signed, but a later "
                            f"checkpoint (checkpoints line {number}) vouches for the lines up to line {line}: "
                            "the checkpoint comes from another log (replayed)", rewritten.checkpoint_line))
                        rewritten, later = None, 0
                    if position - n != shift:
                        out.append(SignatureProblem(line, host, "mismatch",
                                                    self._shifted(cp, n, line, shift, cover), number))
                        shift = position - n
                    cover.signed, cover.signed_line = n, line
                    cover.signed_at_ms = _at_ms(watch.seen[n][2]) if n in watch.seen else cp.at_ms
                    continue
                if position - shift > count:
                    if cut is None or position > cut[1].position:
                        cut = (number, cp)
                    continue
                if rewritten is None:
                    rewritten = SignatureProblem(where, host, "mismatch", self._rewritten(cp, where, cover), number)
                else:
                    later += 1
        if rewritten is not None:
            if later:
                rewritten = SignatureProblem(rewritten.position, host, "mismatch", rewritten.detail +
                                             f"; {later} later checkpoints of the host do not match either",
                                             rewritten.checkpoint_line)
            out.append(rewritten)
        elif cut is not None:
            number, cp = cut
            where_text = f"ends after line {last_line}, its {count}th line" if count else "has no line at all"
            out.append(SignatureProblem(
                last_line + 1, host, "cut",
                f"the log of host {host} {where_text}, but a checkpoint signs {cp.position} lines "
                f"(up to {_time(cp.at_ms)}): {cp.position - shift - count} lines of the host were cut off", number))
        return out

    @staticmethod
    def _since(cover: Coverage) -> str:
        return (f"after line {cover.signed_line} (the last line a checkpoint vouches for)" if cover.signed
                else "from its first line")

    def _shifted(self, cp: Checkpoint, n: int, line: int, shift: int, cover: Coverage) -> str:
        moved = cp.position - n - shift
        return (f"the checkpoint signs position {cp.position}, but its head is line {line}, the host's {n}th "
                f"line: {abs(moved)} lines of the host were {'removed' if moved > 0 else 'added'} "
                f"{self._since(cover)} up to line {line}")

    def _rewritten(self, cp: Checkpoint, at: int, cover: Coverage) -> str:
        return (f"line {at}, the host's {cp.position}th chained line, is not the head this checkpoint signed "
                f"({cp.head[:12]}…, at {_time(cp.at_ms)}): the host's lines {self._since(cover)} up to line {at} "
                "were rewritten and re-chained, or the checkpoint comes from another log (replayed)")

    def _tail(self, host: str, cover: Coverage, watch: _Watch | None) -> None:
        if self.key is None or cover.lines <= cover.signed:
            return
        cover.tail_lines = cover.lines - cover.signed
        if watch is not None:
            cover.tail_first_line = watch.next_line.get(cover.signed, 0) if cover.signed else watch.first_line
        last_line, line = self.last.get(host, (0, b""))
        cover.tail_to_ms = _at_ms(line) if line else None
        cover.tail_from_ms = cover.signed_at_ms


def _time(at_ms: int) -> str:
    from .audit import format_time  # local: twin.audit imports this module

    return format_time(at_ms)


# --- offline writers -----------------------------------------------------------------------------

AnyEvent = InputEvent | Decision


class Trail:
    """Chains events into log lines and, with a ``signer``, signs a checkpoint for a host each time
    its event time has moved ``every_ms`` past its last checkpoint, and at the end (``finish``).

    ``line(event)`` returns the checkpoints due *before* the line (they cover the lines so far) and
    the line; ``refused(event, error)`` the rejects-file line of an input the twin refused, placed
    after the lines written so far."""

    def __init__(self, signer: Signer | None = None, every_ms: int = 10_000, source: str = "simulate") -> None:
        self.chainer = Chainer()
        self.signer = signer
        self.every_ms = every_ms
        self.source = source
        self.lines = 0
        self.counts: dict[str, int] = {}
        self.last_at: dict[str, int] = {}
        self.signed_at: dict[str, int] = {}
        self.signed_count: dict[str, int] = {}

    def line(self, event: AnyEvent) -> tuple[list[bytes], str]:
        checkpoints: list[bytes] = []
        host = event.host
        if host not in self.counts:
            self.signed_at[host] = event.at_ms
        elif self.signer is not None and event.at_ms - self.signed_at[host] >= self.every_ms:
            checkpoints.append(self._sign(host))
        text = self.chainer.line(event)
        self.lines += 1
        self.counts[host] = self.counts.get(host, 0) + 1
        self.last_at[host] = event.at_ms
        return checkpoints, text

    def _sign(self, host: str) -> bytes:
        assert self.signer is not None
        self.signed_at[host] = self.last_at[host]
        self.signed_count[host] = self.counts[host]
        return self.signer.checkpoint(host, self.counts[host], self.chainer.heads[host], self.last_at[host])

    def finish(self) -> list[bytes]:
        """A checkpoint for every host with lines not yet signed: nothing is left unprotected."""
        if self.signer is None:
            return []
        return [self._sign(host) for host in self.counts if self.signed_count.get(host) != self.counts[host]]

    def refused(self, event: AnyEvent | None, error: Rejected) -> str:
        """A rejects-file line: like a dead letter, with ``after_line`` (the log lines written before
        the input was refused) where the live record has its topic, partition and offset."""
        record = {"reason": error.reason, "field": error.field, "value": _plain(error.value), "index": None,
                  "host": event.host if event is not None else None,
                  "at_ms": event.at_ms if event is not None else None,
                  "source": self.source, "after_line": self.lines,
                  "original": event.model_dump_json() if event is not None else "",
                  "original_encoding": "utf-8"}
        return json.dumps(record, sort_keys=True, ensure_ascii=False)


def _plain(value: Any) -> Any:
    return value if value is None or isinstance(value, (bool, int, float, str)) else repr(value)
