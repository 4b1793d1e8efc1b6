"""Every scenario in examples/ loads, runs, and replays to the same state."""

from pathlib import Path

import pytest

from twin.engine import Twin
from twin.invariants import violations
from twin.log import encode, replay
from twin.scenario import load_scenario, simulate

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.[tj][os][mo]*"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_runs_and_replays(path):
    scenario = load_scenario(path)
    twin = Twin()
    lines = []
    for event in simulate(scenario, twin=twin):
        lines.append(encode(event))
        for state in twin.hosts.values():
            assert violations(state) == []
    result = replay(lines)
    assert result.rejected == []
    assert {h: s.to_dict() for h, s in result.twin.hosts.items()} == {h: s.to_dict() for h, s in twin.hosts.items()}


def test_smart_paging_example_pages_and_recovers():
    lines = [encode(e) for e in simulate(load_scenario(EXAMPLES[0].parent / "smart-paging.json"))]
    kinds = [line.split('"type":"')[1].split('"')[0] for line in lines if "smart_paging" in line]
    assert kinds == ["decision.smart_paging_started", "decision.smart_paging_ended"]
