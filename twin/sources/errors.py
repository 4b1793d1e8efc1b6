"""What a source could not read: a ``SourceProblem`` per bad row, counted and skipped.

Every source keeps going past a bad number, a missing column, an unknown counter or time going
backwards, and reports each as a ``SourceProblem(file, line, reason)``. A caller that passes a list
gets every problem appended to it; a caller that passes none gets the first one raised as
``SourceError`` (like ``twin.scenario.simulate`` and its ``rejected`` list).
"""

from __future__ import annotations

import gzip
import math
from dataclasses import dataclass
from pathlib import Path

from ..errors import TwinError

__all__ = ["SourceProblem", "SourceError", "Problems", "read_text", "parse_number"]


@dataclass(frozen=True)
class SourceProblem:
    """One thing a source skipped: where (``line`` is 1-based, None for the whole file) and why."""

    file: str
    line: int | None
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.reason}" if self.line else f"{self.file}: {self.reason}"


class SourceError(TwinError, ValueError):
    """A source problem raised because the caller collects none."""

    def __init__(self, problem: SourceProblem) -> None:
        self.problem = problem
        super().__init__(str(problem))


class Problems:
    """The problems of one file: appended to ``into``, or raised when ``into`` is None."""

    def __init__(self, file: str, into: list[SourceProblem] | None) -> None:
        self.file = file
        self.into = into

    def add(self, line: int | None, reason: str) -> None:
        problem = SourceProblem(self.file, line, reason)
        if self.into is None:
            raise SourceError(problem)
        self.into.append(problem)


def read_text(path: str | Path) -> str:
    """A text file as str: gzip when named .gz, UTF-16 when it starts with a UTF-16 byte-order
    mark (PowerShell's default), otherwise UTF-8 with or without a BOM."""
    path = Path(path)
    data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return data.decode("utf-16")
    return data.decode("utf-8-sig")


def parse_number(text: str) -> float | None:
    """A non-negative finite number, or None when ``text`` is not one."""
    try:
        value = float(text)
    except ValueError:
        return None
    if not math.isfinite(value) or value < 0:
        return None
    return value
