"""Event-time order across a partition's two input topics, and the mark that skips redelivery."""

from streams.worker.ordering import EventTimeMerge, more_to_come
from streams.worker.processor import Decoded, Source
from streams.worker.snapshots import PartitionMark
from twin.events import BalancerTicked

EVENTS, TELEMETRY = "host-events", "telemetry"


def item(topic: str, offset: int, at_ms: int) -> Decoded:
    return Decoded(Source(topic, 0, offset), b"h", b"", BalancerTicked(at_ms=at_ms, host="h"))


def released(merge: EventTimeMerge, more: dict[str, bool], now: float = 0.0) -> list[tuple[str, int]]:
    return [(d.source.topic, d.source.offset) for d in merge.release(lambda t, _: more[t], now=now)]


def test_heads_leave_in_event_time_order_and_each_topic_in_offset_order():
    merge = EventTimeMerge((EVENTS, TELEMETRY))
    for offset, at in enumerate((10, 30, 20)):
        merge.push(item(TELEMETRY, offset, at), now=0)
    merge.push(item(EVENTS, 0, 25), now=0)
    got = released(merge, {EVENTS: False, TELEMETRY: False})
    # 20 comes after 30: one topic is never reordered, only the two are merged
    assert got == [(TELEMETRY, 0), (EVENTS, 0), (TELEMETRY, 1), (TELEMETRY, 2)]


def test_a_topic_with_records_still_on_the_broker_holds_the_other_for_a_while():
    merge = EventTimeMerge((EVENTS, TELEMETRY), max_wait_s=2.0)
    merge.push(item(EVENTS, 0, 50), now=0)
    assert released(merge, {EVENTS: False, TELEMETRY: True}, now=1.0) == []  # telemetry lags: wait
    merge.push(item(TELEMETRY, 0, 40), now=1.0)
    assert released(merge, {EVENTS: False, TELEMETRY: True}, now=1.0) == [(TELEMETRY, 0)]
    assert len(merge) == 1  # counted, not summed over the queues: the worker asks after every push
    assert released(merge, {EVENTS: False, TELEMETRY: True}, now=2.5) == [(EVENTS, 0)]  # waited enough
    assert len(merge) == 0
    merge.push(item(EVENTS, 1, 60), now=3.0)
    merge.push(item(TELEMETRY, 1, 70), now=3.0)
    assert len(merge) == 2
    merge.clear()
    assert len(merge) == 0 and released(merge, {EVENTS: False, TELEMETRY: False}) == []


def test_a_caught_up_topic_holds_nothing():
    merge = EventTimeMerge((EVENTS, TELEMETRY))
    merge.push(item(TELEMETRY, 0, 40), now=0)
    assert released(merge, {EVENTS: False, TELEMETRY: False}) == [(TELEMETRY, 0)]


def test_ties_go_to_host_events_so_a_vm_starts_before_its_first_report():
    merge = EventTimeMerge((EVENTS, TELEMETRY))
    merge.push(item(TELEMETRY, 0, 40), now=0)
    merge.push(item(EVENTS, 0, 40), now=0)
    assert released(merge, {EVENTS: False, TELEMETRY: False}) == [(EVENTS, 0), (TELEMETRY, 0)]


def test_the_mark_skips_what_was_processed_and_reads_back_from_its_bytes():
    mark = PartitionMark()
    for offset in (0, 1, 2):
        mark.advance(Source(TELEMETRY, 0, offset))
    again = PartitionMark.from_bytes(mark.to_bytes())
    assert again.seen(Source(TELEMETRY, 0, 2)) and not again.seen(Source(TELEMETRY, 0, 3))
    assert not again.seen(Source(EVENTS, 0, 0))


def test_a_topic_caught_up_before_a_restart_has_nothing_more_to_come():
    # host events 0..9 were processed and committed before the restart: nothing is delivered again
    assert not more_to_come(highwater=10, delivered=-1, committed=10)
    assert more_to_come(highwater=11, delivered=-1, committed=10)  # one more was written since
    assert not more_to_come(highwater=11, delivered=10, committed=10)  # and has been delivered
    assert more_to_come(highwater=None, delivered=-1, committed=10)  # not fetched yet: perhaps
