"""The history of a replayed log as OpenMetrics text (``dmtwin replay LOG --openmetrics FILE``).

While ``twin.log.replay`` folds the log, the twin's counters are sampled every ``step_s`` seconds of
event time by the same ``TwinCollector`` that serves them to Prometheus, so the file holds exactly
the series and values a scrape of the replay would have shown at each of those instants. The text
is ready for ``promtool tsdb create-blocks-from openmetrics FILE DIR``: timestamps in seconds, each
family once (sorted by name) with its ``# TYPE`` and ``# HELP``, each series' samples together and
in time order, ``# EOF`` at the end.

A sample at instant T shows the state after every event before T (in log order) was folded. The
samples are spooled to one temporary file per family, so a week-long log needs little memory.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from prometheus_client.core import Metric

from twin.log import Replay, peek, replay

from .collectors import TwinCollector

__all__ = ["History", "replay_history", "write_history"]


@dataclass
class History:
    """What ``replay_history`` wrote: the instants sampled and the samples and series written."""

    instants: int = 0
    samples: int = 0
    series: int = 0
    first_s: float | None = None
    last_s: float | None = None


def _at_ms(line: str | bytes) -> int | None:
    """The event time of a line, fast for canonical lines; None when it has none (a bad line)."""
    raw = line if isinstance(line, bytes) else line.encode("utf-8", "replace")
    head = peek(raw)
    if head is not None:
        return head[0]
    try:
        value = json.loads(raw).get("at_ms")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(names: Iterable[str], values: Iterable[str]) -> str:
    pairs = ",".join(f'{name}="{_escape(value)}"' for name, value in zip(names, values))
    return "{" + pairs + "}" if pairs else ""


def _number(value: float) -> str:
    return repr(float(value)) if value == value and value not in (float("inf"), float("-inf")) else (
        "NaN" if value != value else ("+Inf" if value > 0 else "-Inf"))


class _Spool:
    """One temporary file per family; each line "series-key<TAB>sample line"."""

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self.files: dict[str, IO[str]] = {}
        self.headers: dict[str, tuple[str, str]] = {}

    def add(self, family: Metric, seconds: float) -> int:
        if family.name not in self.files:
            self.files[family.name] = open(os.path.join(self.folder, f"{len(self.files)}.txt"), "w+",
                                           encoding="utf-8")
            self.headers[family.name] = (family.type, family.documentation)
        out = self.files[family.name]
        stamp = f"{seconds:.3f}"
        for sample in family.samples:
            labels = _labels(sample.labels.keys(), sample.labels.values())
            out.write(f"{sample.name}{labels}\t{sample.name}{labels} {_number(sample.value)} {stamp}\n")
        return len(family.samples)

    def write(self, out: IO[str]) -> int:
        """Every family, sorted by name, its series together; return the number of series."""
        series = 0
        for name in sorted(self.files):
            kind, documentation = self.headers[name]
            spool = self.files[name]
            spool.seek(0)
            # Stable sort: each series' samples stay in time order.
            lines = sorted((line.split("\t", 1) for line in spool), key=lambda pair: pair[0])
            out.write(f"# TYPE {name} {kind}\n# HELP {name} {_escape(documentation)}\n")
            last = None
            for key, sample in lines:
                series += key != last
                last = key
                out.write(sample)
            spool.close()
        out.write("# EOF\n")
        return series


def replay_history(lines: Iterable[str | bytes], out: IO[str], step_s: float = 60.0,
                   into: Replay | None = None) -> tuple[Replay, History]:
    """Replay ``lines`` and write the twin's counters every ``step_s`` seconds of event time to
    ``out`` as OpenMetrics text; return the replay (as ``twin.log.replay`` does) and a summary.

    The instants are the multiples of ``step_s`` (Unix time) from the first event's, and one last
    sample at the newest event time, so the final state is in the history too.
    """
    if not step_s > 0:
        raise ValueError(f"--step={step_s}: must be more than 0 seconds")
    step_ms = round(step_s * 1000)
    result = into or Replay()
    collector = TwinCollector(lambda: list(result.twin.hosts.values()))
    history = History()
    with tempfile.TemporaryDirectory(prefix="dmtwin-openmetrics-") as folder:
        spool = _Spool(folder)

        def sample(at_ms: int) -> None:
            seconds = at_ms / 1000
            for family in collector.collect():
                history.samples += spool.add(family, seconds)
            history.instants += 1
            history.first_s = seconds if history.first_s is None else history.first_s
            history.last_s = seconds

        newest = _watch(lines, step_ms, sample)
        replay(newest, into=result)
        if newest.latest is not None and newest.latest != newest.sampled:
            sample(newest.latest)
        history.series = spool.write(out)
    return result, history


class _watch(Iterator[str | bytes]):
    """The lines, unchanged; before handing on a line whose event time reaches the next instant,
    sample the state (all the lines before it are folded by then)."""

    def __init__(self, lines: Iterable[str | bytes], step_ms: int, sample: Callable[[int], None]) -> None:
        self._lines = iter(lines)
        self._step = step_ms
        self._sample = sample
        self.next_ms: int | None = None
        self.latest: int | None = None
        self.sampled: int | None = None

    def __iter__(self) -> _watch:
        return self

    def __next__(self) -> str | bytes:
        line = next(self._lines)
        at_ms = _at_ms(line) if line.strip() else None
        if at_ms is None:
            return line
        if self.next_ms is None:
            self.next_ms = -(-at_ms // self._step) * self._step  # the first instant at or after it
        while at_ms > self.next_ms:  # events at the instant itself are folded before its sample
            if self.latest is not None:
                self._sample(self.next_ms)
                self.sampled = self.next_ms
            self.next_ms += self._step
        self.latest = at_ms if self.latest is None else max(self.latest, at_ms)
        return line


def write_history(lines: Iterable[str | bytes], path: str | Path, step_s: float) -> tuple[Replay, History]:
    """``replay_history`` into the file ``path``, written whole or not at all."""
    path = Path(path)
    partial = path.with_name(path.name + ".partial")
    with open(partial, "w", encoding="utf-8") as out:
        done = replay_history(lines, out, step_s)
    partial.replace(path)
    return done
