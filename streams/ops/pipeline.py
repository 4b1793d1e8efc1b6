"""The worker's own health: the ``pipeline`` metrics of ``METRICS`` (``streams.ops.metrics``) and
the ``reason`` label of its dead letters.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterable
from typing import Any, Literal

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from twin.errors import Rejected
from twin.events import DECISION_TYPES, INPUT_TYPES

from .metrics import (
    DEAD_LETTER_REASONS,
    PREFIX,
    REPORT_TYPE,
    ROUND_DURATION_BUCKETS,
    TRANSACTION_DURATION_BUCKETS,
    MetricDef,
    metric,
)

__all__ = ["PipelineMetrics", "rejection_reason"]


def rejection_reason(rejected: Rejected, *, stage: Literal["decode", "apply"]) -> str:
    """The ``reason`` label for a dead letter: ``json`` (not JSON), ``type`` (no such event type,
    or a decision sent as input), ``schema`` (a field fails validation) or ``state`` (valid, but
    illegal in the twin's current state); the worker adds ``late`` (beyond the allowed lateness).
    Bounded, so the label's cardinality stays at five."""
    if rejected.field in ("json", "type"):
        return rejected.field
    return "schema" if stage == "decode" else "state"


class PipelineMetrics:
    """The worker's own health, on the same registry as the twin's counters.

    Every known event type, decision type and dead-letter reason starts at 0, so that rates and
    sums have a series to read before the first such record arrives.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        def d(name: str) -> MetricDef:
            return metric(PREFIX + name)

        reports, events = d("reports_processed_total"), d("events_total")
        dead, decisions = d("dead_letters_total"), d("decisions_total")
        rounds, lag = d("balancer_round_duration_seconds"), d("consumer_lag_messages")
        self.reports = Counter(reports.name, reports.help, reports.labels, registry=registry)
        self.events = Counter(events.name, events.help, events.labels, registry=registry)
        self.dead_letters = Counter(dead.name, dead.help, dead.labels, registry=registry)
        self.decisions = Counter(decisions.name, decisions.help, decisions.labels, registry=registry)
        self.round_duration = Histogram(rounds.name, rounds.help, rounds.labels, registry=registry,
                                        buckets=ROUND_DURATION_BUCKETS)
        self.consumer_lag = Gauge(lag.name, lag.help, lag.labels, registry=registry)
        txn, produced = d("transaction_duration_seconds"), d("transaction_records_total")
        self.transactions = Histogram(txn.name, txn.help, txn.labels, registry=registry,
                                      buckets=TRANSACTION_DURATION_BUCKETS)
        self.produced = Counter(produced.name, produced.help, produced.labels, registry=registry)
        self._children: dict[tuple[int, str], Any] = {}  # a labelled series by metric and label
        for cls in INPUT_TYPES:
            self.events.labels(_type_tag(cls))
        for cls in DECISION_TYPES:
            self.decisions.labels(_type_tag(cls))
        for reason in DEAD_LETTER_REASONS:
            self.dead_letters.labels(reason)

    def count(self, inputs: Iterable[str], decisions: Iterable[str] = (), dead_letters: Iterable[str] = (),
              round_seconds: float | Iterable[float] | None = None) -> None:
        """Count what the worker did with a message or a batch: the type of each input it folded,
        each decision type, each dead letter's reason, and how long each fold that ran a round
        took. Tallied by kind first: a labelled series is looked up once per kind, not per input
        (a frame of 50 reports is 50 inputs)."""
        for kind, n in Tally(inputs).items():
            self._series(self.events, kind).inc(n)
            if kind == REPORT_TYPE:
                self.reports.inc(n)
        for kind, n in Tally(decisions).items():
            self._series(self.decisions, kind).inc(n)
        for reason, n in Tally(dead_letters).items():
            self.dead_letter(reason, n)
        for seconds in [round_seconds] if isinstance(round_seconds, (int, float)) else round_seconds or ():
            self.round_duration.observe(seconds)

    def dead_letter(self, reason: str, n: int = 1) -> None:
        """Count ``n`` records sent to the dead-letter topic; ``reason`` is one of
        ``DEAD_LETTER_REASONS`` (see ``rejection_reason``)."""
        if reason not in DEAD_LETTER_REASONS:
            raise ValueError(f"dead-letter reason {reason!r} is not one of {DEAD_LETTER_REASONS}")
        self._series(self.dead_letters, reason).inc(n)

    def _series(self, family: Counter, label: str) -> Any:
        key = (id(family), label)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = family.labels(label)
        return child

    def transaction(self, seconds: float, records: int) -> None:
        """Record one committed transaction: how long it took and how many records it carried."""
        self.transactions.observe(seconds)
        self.produced.inc(records)

    def set_consumer_lag(self, topic: str, partition: int, lag: int) -> None:
        """Set the lag, in messages, of one partition of a consumed topic."""
        self.consumer_lag.labels(topic, str(partition)).set(lag)


def _type_tag(cls: type) -> str:
    return str(cls.model_fields["type"].default)  # type: ignore[attr-defined]
