"""Verify in parallel: hosts are independent, so ``verify_parallel`` hands each host's lines to
one of several processes (``twin.audit.Verifier``) and merges their verdicts.
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


def _verify_worker(inbox: Any, results: Any, key: bytes | None = None,
                   checkpoints: list[bytes] | None = None, first: bool = True) -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it stops us
    check = None if checkpoints is None else CheckpointCheck(PublicKey(key) if key else None, checkpoints)
    verifier = Verifier(checkpoints=check)
    for message in iter(inbox.get, None):
        if isinstance(message, tuple):  # all lines are in: the log's length and this worker's heads
            verifier.chain.lines_seen = message[0]
            verifier.end = message[0] + 1
            verifier.chain.expected_heads = message[1]
            continue
        for position, line in message:
            verifier.feed(position, line)
    results.put(verifier.finish(signed_hosts=(), file_problems=first))


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
    workers = [ctx.Process(target=_verify_worker, args=(inbox, results, raw, checkpoints, index == 0), daemon=True)
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
        batches: list[list[tuple[int, bytes]]] = [[] for _ in range(jobs)]
        owner: dict[str | None, int] = {None: 0}  # lines that are not events: one verifier reports them
        end = 0
        for end, line in enumerate(lines, start=1):
            position = end  # 1-based line numbers
            head = peek(line)
            host = head[1] if head is not None else host_of(line)
            index = owner.get(host)
            if index is None:
                index = owner[host] = (len(owner) - 1) % jobs
            batch = batches[index]
            batch.append((position, line))
            if len(batch) >= 2000:
                put(index, batch)
                batches[index] = []
        for index, batch in enumerate(batches):
            if batch:
                put(index, batch)
            put(index, (end, {h: d for h, d in (heads or {}).items() if owner.get(h, 0) == index}))
            put(index, None)
        parts: list[Verification] = []
        while len(parts) < jobs:
            try:
                parts.append(results.get(timeout=1.0))
            except queue.Empty:
                for worker in workers:
                    _alive(worker)
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
        gone = set(check.watch) - set(owner)
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
