"""The books of a fault run: what went into the input topics, what the event log and the dead
letters hold, and whether the log verifies and replays to the live state.

Shared by the fault tests (tests/integration/test_faults.py) and ``benchmarks/bench_faults.py``.
An input is identified by what it says (type, host, VM, event time, seq), a report of a frame as
one input of its own, so the books do not depend on how a message was framed or delivered.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from streams.kafka.feed import FeedStats, feed
from streams.kafka.topics import Topics
from twin.audit import verify
from twin.log import replay
from twin.report import summary
from twin.scenario import Scenario

from .pipeline import read_records

Identity = tuple[Any, ...]


def identities(value: bytes) -> list[Identity]:
    """The inputs one message carries (none if it is not a JSON input event)."""
    try:
        event = json.loads(value)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return []
    if not isinstance(event, dict):
        return []
    if event.get("type") == "guest.status_frame":
        return [("guest.status", event.get("host"), r.get("vm"), event.get("at_ms"), None)
                for r in event.get("reports", []) if isinstance(r, dict)]
    return [(event.get("type"), event.get("host"), event.get("vm"), event.get("at_ms"), event.get("seq"))]


@dataclass
class Books:
    """Counts of one run, as the benchmark prints them."""

    sent: int = 0
    """Inputs in the input topics (what the broker accepted)."""
    logged: int = 0
    dead_lettered: int = 0
    valid_dead_lettered: int = 0
    """Inputs a producer of ours sent that were dead-lettered anyway (should be 0)."""
    lost: int = 0
    duplicated: int = 0
    chain_problems: int = 0
    decision_mismatches: int = 0
    live_equals_replay: bool = False
    lost_examples: list[Identity] = field(default_factory=list)
    late: int = 0

    def clean(self) -> bool:
        return not (self.lost or self.duplicated or self.chain_problems or self.decision_mismatches
                    or self.valid_dead_lettered) and self.live_equals_replay

    def line(self) -> str:
        return (f"sent {self.sent}, logged {self.logged}, dead-lettered {self.dead_lettered} "
                f"(valid {self.valid_dead_lettered}, late {self.late}), lost {self.lost}, "
                f"duplicated {self.duplicated}, chain problems {self.chain_problems}, decision "
                f"mismatches {self.decision_mismatches}, live == replay {self.live_equals_replay}")


def audit(bootstrap: str, topics: Topics, live: Callable[[], dict[str, Any]] | None,
          ours: Callable[[Identity], bool] | None = None, load_s: float = 30) -> Books:
    """Read the run's topics and balance the books. ``live`` reads the worker's /hosts/ by host
    (asked again for up to ``load_s`` while a restarted worker is still loading its partitions);
    ``ours`` tells the identities our own (valid) producers sent, to find valid inputs dead-lettered."""
    books = Books()
    sent: set[Identity] = set()
    for topic in topics.inputs:
        for record in read_records(bootstrap, topic, timeout_s=60):
            sent.update(identities(record.value))
    books.sent = len(sent)
    log = [r.value for r in read_records(bootstrap, topics.event_log, timeout_s=120)]
    logged = Counter(i for line in log for i in identities(line)
                     if not str(i[0]).startswith("decision.") and i[0] not in ("balancer.tick", "balancer.round"))
    books.logged = sum(logged.values())
    books.duplicated = sum(n - 1 for n in logged.values() if n > 1)
    dead: Counter[Identity] = Counter()
    letters: Counter[tuple[Any, ...]] = Counter()  # by where the input was: identical messages are not copies
    for record in read_records(bootstrap, topics.dead_letters, timeout_s=60):
        letter, original = _letter(record)
        books.dead_lettered += 1
        books.late += str(letter.get("reason", "")).startswith("late")
        found = identities(original)
        index = letter.get("index")
        picked = [found[index]] if index is not None and index < len(found) else found
        dead.update(picked)
        letters[(letter.get("topic"), letter.get("partition"), letter.get("offset"), index)] += 1
        if ours is not None:
            books.valid_dead_lettered += sum(1 for i in picked if ours(i))
    books.duplicated += sum(n - 1 for n in letters.values() if n > 1)
    missing = sent - set(logged) - set(dead)
    books.lost = len(missing)
    books.lost_examples = sorted(missing, key=repr)[:5]
    result = verify(log)
    books.chain_problems = len(result.chain)
    books.decision_mismatches = len(result.mismatches)
    if live is not None:
        replayed = {h["host"]: h for h in summary(replay(log), decisions=False)["hosts"]}
        deadline = time.monotonic() + load_s
        while True:
            books.live_equals_replay = replayed == live()
            if books.live_equals_replay or time.monotonic() >= deadline:
                break
            time.sleep(0.5)
    return books


def _letter(record: Any) -> tuple[dict[str, Any], bytes]:
    """A dead letter's description and its original bytes (the value itself when kept raw)."""
    for name, value in record.headers or []:
        if name == "dmtwin-dead-letter":
            return dict(json.loads(value)), record.value
    letter = dict(json.loads(record.value))
    original = (letter.get("original") or "").encode() if letter.get("original_encoding") == "utf-8" else b""
    return letter, original


class FeedThread(threading.Thread):
    """``dmtwin simulate --to`` in a thread, so a test can inflict faults while it runs."""

    def __init__(self, scenario: Scenario, bootstrap: str, topics: Topics, **options: Any) -> None:
        super().__init__(daemon=True)
        self.args = (scenario, bootstrap, topics)
        self.options = options
        self.stats: FeedStats | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.stats = asyncio.run(feed(*self.args, **self.options))
        except BaseException as error:  # reported by the test
            self.error = error
