"""Event-time order across the two input topics of one partition.

A host's inputs travel on two topics (telemetry, host-events). Kafka orders each partition of each
topic, not the two together: after an outage or in a backlog, the small host-events topic is read
far ahead of the telemetry queued before it. Like Kafka Streams' task (KIP-353, KIP-695), the
worker keeps one queue per topic-partition and releases the head with the lowest event time. When a
queue is empty it waits only if that topic-partition still has records on the broker (its lag is
above zero), and never longer than ``max_wait_s``; a topic that is caught up does not hold the other.

Records leave their queue in offset order, so a host's inputs from one topic are never reordered.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from .processor import Decoded

__all__ = ["EventTimeMerge", "more_to_come"]


@dataclass
class _Queue:
    items: deque[tuple[Decoded, float]] = field(default_factory=deque)
    """Decoded messages with the monotonic time they arrived."""
    delivered: int = -1
    """Offset of the last message delivered to this queue."""


class EventTimeMerge:
    """Queues of one partition's input topics, released in event-time order."""

    def __init__(self, topics: tuple[str, ...], max_wait_s: float = 2.0, max_held: int = 20_000) -> None:
        self.queues = {topic: _Queue() for topic in topics}
        self.max_wait_s = max_wait_s
        self.max_held = max_held
        self._held = 0  # the worker asks after every message it queues

    def push(self, item: Decoded, now: float | None = None) -> None:
        queue = self.queues[item.source.topic]
        queue.items.append((item, time.monotonic() if now is None else now))
        queue.delivered = item.source.offset
        self._held += 1

    def __len__(self) -> int:
        return self._held

    def first_held(self, topic: str) -> int | None:
        """Offset of the oldest message of ``topic`` still queued."""
        items = self.queues[topic].items
        return items[0][0].source.offset if items else None

    def release(self, has_more: Callable[[str, int], bool], now: float | None = None) -> list[Decoded]:
        """Pop messages in event-time order while the order is known. ``has_more(topic, offset)``
        says whether the broker holds records of ``topic`` after ``offset`` not yet delivered."""
        now = time.monotonic() if now is None else now
        out: list[Decoded] = []
        held = len(self)
        while held:
            heads = {t: q.items[0] for t, q in self.queues.items() if q.items}
            if len(heads) < len(self.queues):
                waiting = [t for t, q in self.queues.items() if not q.items and has_more(t, q.delivered)]
                oldest = min(arrived for _, arrived in heads.values())
                if waiting and now - oldest < self.max_wait_s and held <= self.max_held:
                    break
            topic = min(heads, key=lambda t: (heads[t][0].at_ms, t != _first(self.queues)))
            out.append(self.queues[topic].items.popleft()[0])
            held -= 1
        self._held = held
        return out

    def clear(self) -> None:
        for queue in self.queues.values():
            queue.items.clear()
            queue.delivered = -1
        self._held = 0


def more_to_come(highwater: int | None, delivered: int, committed: int) -> bool:
    """Whether a topic-partition holds records on the broker that are still to be delivered here:
    its end (``highwater``, None before the first fetch: perhaps) is beyond both the last offset
    delivered to this worker and the next offset to process as committed. A restarted worker is
    delivered nothing of what it committed before, so its last delivered offset alone would keep
    saying "more" of a caught-up topic, and hold the other topic's messages for ``max_wait_s``."""
    return highwater is None or highwater > max(delivered + 1, committed)


def _first(queues: dict[str, _Queue]) -> str:
    """Ties go to the first topic given (host events: a VM's start before its first report)."""
    return next(iter(queues))
