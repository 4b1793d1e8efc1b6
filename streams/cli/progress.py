"""Progress bars on long work, on a terminal only: reading a big log (``audit verify``, ``replay``,
``whatif``, ``audit explain``, ``audit report``). Drawn by tqdm on stderr; nothing at all when
stderr is not a terminal, so scripts, pipes and tests see the same output as before.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

__all__ = ["with_progress", "finish"]

_lingering: list = []  # type: ignore[type-arg]


def finish() -> None:
    """Take down the bars left up by ``with_progress(..., linger=True)``, before the output."""
    while _lingering:
        _lingering.pop().close()

Line = TypeVar("Line", str, bytes)


def with_progress(lines: Iterable[Line], source: str, what: str, linger: bool = False) -> Iterator[Line]:
    """``lines``, unchanged; on a terminal, with a bar of the bytes read of the file ``source``
    (of the lines read, for stdin, a topic or a .gz file). With ``linger``, once every line is
    read the bar stays up, saying the work is finishing, until ``finish()`` (parallel verifiers
    are still at work then)."""
    if not sys.stderr.isatty() or os.environ.get("DMTWIN_NO_PROGRESS"):
        yield from lines
        return
    from tqdm import tqdm

    size = None
    if source not in ("-", "") and "://" not in source and not source.endswith(".gz"):
        try:
            size = os.path.getsize(source)
        except OSError:
            size = None
    if size is None:
        bar = tqdm(desc=what, unit=" lines", unit_scale=True, leave=False, file=sys.stderr, mininterval=0.25)
        try:
            for line in lines:
                bar.update(1)
                yield line
        finally:
            bar.close()
        return
    bar = tqdm(desc=what, total=size, unit="B", unit_scale=True, unit_divisor=1024, leave=False, file=sys.stderr,
               mininterval=0.25)
    pending = 0
    done = False
    try:
        for line in lines:
            pending += len(line)
            if pending >= 1 << 16:
                bar.update(pending)
                pending = 0
            yield line
        done = True
    finally:
        if done and linger:
            bar.update(pending)
            bar.set_description(f"{what}: all read, finishing")
            _lingering.append(bar)
        else:
            bar.close()
