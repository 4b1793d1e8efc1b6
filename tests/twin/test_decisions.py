"""A round's decisions as rows (``twin.decisions``) stand for the events they would be: made
events equal validated ones, and the round's text, the commands and the fold are the same whether
they come from the rows or from the events."""

from __future__ import annotations

import pickle

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from twin.balancer import plan
from twin.decisions import BALLOON, HOT_ADD, UNBALLOON, Decisions
from twin.engine import Twin
from twin.events import (BalancerRound, GuestStatusReported, HostJoined, MemorySettings, SmartPagingEnded,
                         VmStarted, trusted)
from twin.host import fold_round
from twin.requests import fold_requests

_names = st.from_regex(r"\A[^\s][^\n\r]{0,11}\Z")
_mib = st.integers(0, 10**6)
_row = st.tuples(st.sampled_from([BALLOON, UNBALLOON, HOT_ADD]), _names, st.integers(1, 10**6),
                 st.integers(1, 10**6), _mib, _mib, _mib, st.integers(0, 300), _mib, st.text(max_size=20))


@settings(max_examples=200, deadline=None)
@given(_names, _names, st.lists(_row, max_size=6), st.booleans())
def test_rows_write_and_make_what_the_events_would(host, policy, rows, paging_ends) -> None:
    decisions = Decisions(host, 5, policy)
    if paging_ends:
        decisions.head.append(SmartPagingEnded(at_ms=5, host=host, vm="p", seq=3, backed_mib=7))
    decisions.rows += rows
    events = list(decisions)
    assert len(events) == len(decisions) == len(rows) + paging_ends
    for made in events:
        validated = type(made)(**made.model_dump(exclude_unset=True))
        assert made == validated and made.model_fields_set == validated.model_fields_set
        assert list(made.__dict__) == list(validated.__dict__)

    validated_round = BalancerRound(at_ms=5, host=host, decisions=events)
    entry = trusted(BalancerRound, at_ms=5, host=host, decisions=decisions)
    assert entry == validated_round and decisions == events
    assert entry.model_dump_json() == BaseModel.model_dump_json(validated_round)
    assert list(decisions.commands()) == [(d.type, d.model_dump_json()) for d in events]
    assert pickle.loads(pickle.dumps(decisions)) == events
    columnar = trusted(BalancerRound, at_ms=5, host=host, decisions=decisions)
    assert columnar.model_dump() == validated_round.model_dump()  # pydantic's own serializer: as events


def busy_host(vms: int = 40) -> Twin:
    twin = Twin()
    twin.apply(HostJoined(at_ms=0, host="h", total_mib=vms * 3000, reserve_mib=1024))
    rng = np.random.default_rng(3)
    for k in range(vms):
        twin.apply(VmStarted(at_ms=0, host="h", vm=f"vm{k}", settings=MemorySettings(
            startup_mib=2048, minimum_mib=512, maximum_mib=8192)))
        twin.apply(GuestStatusReported(at_ms=1000, host="h", vm=f"vm{k}",
                                       committed_mib=int(rng.integers(200, 4000)), available_mib=0))
    return twin


def test_a_round_folds_the_same_from_its_rows_as_from_its_events() -> None:
    twin = busy_host()
    decisions = plan(twin.hosts["h"], 61_500)
    assert {d.type for d in decisions} == {"decision.hot_add", "decision.balloon"} and len(decisions) >= 16
    from_rows, from_events = twin.copy().hosts["h"], twin.copy().hosts["h"]
    assert fold_requests(twin.copy().hosts["h"], 61_500, decisions)  # read from the rows, all at once
    fold_round(from_rows, 61_500, decisions)
    fold_round(from_events, 61_500, list(decisions))
    assert np.array_equal(from_rows.vms.data, from_events.vms.data)
    assert from_rows.last_seq == from_events.last_seq and from_rows.last_round_ms == from_events.last_round_ms
