"""The ``Sink`` protocol and ``JsonlSink``: where sources send their events.

Its own module so that the agent, ``ingest`` and ``sink`` (Kafka) all depend on it and none of
them on another (``agent`` used to hold these, and ``sink`` imported ``agent`` while ``agent``
imported ``sink``).
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Callable, Self

from twin.events import Decision, InputEvent
from twin.log import encode, open_log

__all__ = ["Sink", "JsonlSink"]

Sink = Callable[[InputEvent | Decision], None]
"""Where events go: called once per event, in order."""


class JsonlSink:
    """Appends each event as a JSON line to a file (``-``: stdout; ``.gz``: compressed), flushed
    line by line so that a reader can follow it."""

    def __init__(self, path: str | Path, mode: str = "a") -> None:
        self.path = str(path)
        self._out: IO[Any] = sys.stdout if self.path == "-" else open_log(path, mode)
        self.count = 0

    def __call__(self, event: InputEvent | Decision) -> None:
        self._out.write(encode(event) + "\n")
        self._out.flush()
        self.count += 1

    def close(self) -> None:
        if self._out is not sys.stdout:
            self._out.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()
