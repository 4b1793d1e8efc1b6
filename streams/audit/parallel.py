"""Verify in parallel: hosts are independent, so ``verify_parallel`` has each host's lines verified
by one of several processes (``twin.audit.Verifier``) and merges their verdicts.

Every process is sent every line, in batches, and picks its own hosts' lines: dealing the lines
out one by one would cost the parent about as much as a verifier's work, and the parent shares
the cores with the verifiers.
"""

from __future__ import annotations

import queue
from collections.abc import Iterable
from typing import Any

from twin.audit import Verification, Verifier, merge
from twin.log import peek
from twin.signing import CheckpointCheck, PublicKey

from .logtool import host_of

__all__ = ["verify_parallel"]


# --- parallel verify ----------------------------------------------------------------------------


def _verify_worker(inbox: Any, results: Any, index: int, jobs: int, key: bytes | None = None,
                   checkpoints: list[bytes] | None = None) -> None:
    """Verify the lines of the hosts dealt to process ``index`` of ``jobs``: hosts are dealt out in
    the order they first appear, so that each process gets as many; lines that are not events go
    to the first."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it stops us
    check = None if checkpoints is None else CheckpointCheck(PublicKey(key) if key else None, checkpoints)
    verifier = Verifier(checkpoints=check)
    owner: dict[str | None, int] = {None: 0}
    position = 0
    for message in iter(inbox.get, None):
        if isinstance(message, dict):  # all lines are in: the heads expected
            verifier.chain.lines_seen = position
            verifier.end = position + 1
            verifier.chain.expected_heads = {h: d for h, d in message.items() if owner.get(h, 0) == index}
            continue
        for line in message:
            position += 1
            head = peek(line)
            host = head[1] if head is not None else host_of(line)
            mine = owner.get(host)
            if mine is None:
                mine = owner[host] = (len(owner) - 1) % jobs
            if mine == index:
                verifier.feed(position, line)
    results.put((verifier.finish(signed_hosts=(), file_problems=index == 0), list(owner)))


def verify_parallel(lines: Iterable[bytes], jobs: int, heads: dict[str, str] | None = None,
                    key: PublicKey | None = None, checkpoints: list[bytes] | None = None) -> Verification:
    """``twin.audit.verify`` with each host's lines in one of ``jobs`` processes (hosts are dealt
    out in the order they first appear, so that each process gets as many); each process checks
    its hosts' ``checkpoints`` (signatures too) with ``key``."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    inboxes = [ctx.Queue(maxsize=32) for _ in range(jobs)]
    results = ctx.Queue()
    raw = key.raw if key is not None else None
    workers = [ctx.Process(target=_verify_worker, args=(inbox, results, index, jobs, raw, checkpoints), daemon=True)
               for index, inbox in enumerate(inboxes)]
    for worker in workers:
        worker.start()

    def put(index: int, message: object) -> None:
        while True:  # never wait forever on a verifier that died
            try:
                inboxes[index].put(message, timeout=1.0)
                return
            except queue.Full:
                _alive(workers[index])

    try:
        batch: list[bytes] = []
        for line in lines:
            batch.append(line)
            if len(batch) >= 4000:
                for index in range(jobs):
                    put(index, batch)
                batch = []
        for index in range(jobs):
            if batch:
                put(index, batch)
            put(index, dict(heads or {}))
            put(index, None)
        parts: list[Verification] = []
        seen: set[str | None] = set()
        while len(parts) < jobs:
            try:
                part, hosts = results.get(timeout=1.0)
            except queue.Empty:
                for worker in workers:
                    _alive(worker)
                continue
            parts.append(part)
            seen.update(hosts)
        for worker in workers:
            worker.join()
    except BaseException:  # Ctrl-C or a failure: stop the verifiers, leave their queues behind
        for inbox in inboxes:
            inbox.cancel_join_thread()
        for worker in workers:
            worker.terminate()
        raise
    merged = merge(parts)
    if checkpoints is not None:  # hosts with checkpoints and no line at all: cut off entirely
        check = CheckpointCheck(key, checkpoints)
        gone = set(check.watch) - seen
        if gone:
            problems, coverage = check.finish(gone, file_problems=False)
            merged.signature = sorted(merged.signature + problems, key=lambda s: (s.position, s.host))
            merged.coverage.update(coverage)
        merged.key = key.fingerprint if key is not None else None
        merged.checkpoints, merged.duplicate_checkpoints = check.checkpoints, check.duplicates
    return merged


def _alive(worker: Any) -> None:
    if not worker.is_alive() and worker.exitcode:
        raise RuntimeError(f"a verifier process failed (exit code {worker.exitcode})")
