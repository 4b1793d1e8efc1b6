"""Folding a round's requests at once: every check of ``twin.host``'s handlers, over all of them.

A round of a busy host asks many VMs at once; folded one by one, each request costs a few
lookups and checks in Python. ``fold_requests`` makes the same checks as array operations and,
when all pass, starts every transaction in one go: the same state as folding the requests one
after the other. When a check fails, or the round holds what it does not vectorise (a Smart
Paging decision, a VM named twice), it changes nothing and says so, and ``host.fold_round``
folds the round one decision at a time to name the first refusal exactly. The balancer's own
rounds are read from their rows (``twin.decisions``), without making an event per decision.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .decisions import KINDS, Decisions
from .state import Col, HostState, Pending

__all__ = ["fold_requests"]

_KIND = {model: (code, field) for code, (model, _, field) in KINDS.items()}
"""Each request's event type: its transaction's kind and its amount's field."""


def fold_requests(state: HostState, at_ms: int, decisions: Sequence[object]) -> bool:
    """Start the transactions of ``decisions`` (a round's, at ``at_ms``) if every one is valid
    here, and return True; else change nothing and return False."""
    if not decisions:
        return True
    index = state.vms.index
    try:
        if isinstance(decisions, Decisions) and not decisions.head:  # the balancer's rows, as they are
            kind_of, names, seqs, amounts = list(zip(*decisions.rows))[:4]
            same_time = decisions.at_ms == at_ms
        else:
            kinds = [_KIND[type(d)] for d in decisions]
            fields = [d.__dict__ for d in decisions]
            kind_of = [k for k, _ in kinds]
            names = [f["vm"] for f in fields]
            seqs = [f["seq"] for f in fields]
            amounts = [f[name] for f, (_, name) in zip(fields, kinds)]
            same_time = all(f["at_ms"] == at_ms for f in fields)
        rows = np.fromiter(map(index.__getitem__, names), dtype=np.intp, count=len(names))
    except KeyError:  # not a request, or no such VM: one at a time names it
        return False
    if len(np.unique(rows)) != len(rows):
        return False
    kind = np.array(kind_of, dtype=np.int64)
    amount = np.array(amounts, dtype=np.int64)
    seq = np.array(seqs, dtype=np.int64)
    last_seq = state.last_seq
    expected = np.fromiter((last_seq.get(name, 0) for name in names), dtype=np.int64, count=len(names)) + 1

    table = state.vms.data
    row = table[rows]
    balloon, unballoon, add = (kind == int(Pending.BALLOON)), (kind == int(Pending.UNBALLOON)), (kind == int(Pending.HOT_ADD))
    paging, assigned = row[:, Col.PAGING], row[:, Col.ASSIGNED]
    adds = np.where(balloon, 0, amount)  # what each request promises from the host's free memory
    free_before = state.free_mib() - (np.cumsum(adds) - adds)
    valid = (
        same_time
        and bool(np.all((at_ms >= row[:, Col.STARTED_AT]) & (at_ms >= row[:, Col.LAST_AT])))
        and bool(np.all(seq == expected))
        and bool(np.all((row[:, Col.PENDING] == 0) & (row[:, Col.DM_ENABLED] != 0)))
        and bool(np.all(~balloon | ((row[:, Col.CAN_BALLOON] != 0)
                                    & (assigned - np.maximum(0, amount - paging) >= row[:, Col.MINIMUM]))))
        and bool(np.all(~unballoon | (amount <= row[:, Col.VISIBLE] - assigned - paging)))
        and bool(np.all(~add | ((row[:, Col.CAN_HOT_ADD] != 0) & (row[:, Col.HOT_ADD_BLOCKED] == 0)
                                & (assigned + paging + amount <= row[:, Col.MAXIMUM]))))
        and bool(np.all(balloon | (amount <= free_before)))
    )
    if not valid:
        return False
    table[rows, Col.PENDING] = kind
    table[rows, Col.PENDING_SEQ] = seq
    table[rows, Col.PENDING_MIB] = amount
    table[rows, Col.PENDING_AT] = at_ms
    table[rows, Col.LAST_AT] = at_ms
    last_seq.update(zip(names, seq.tolist()))
    return True
