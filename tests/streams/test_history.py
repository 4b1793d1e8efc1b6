"""``dmtwin replay LOG --openmetrics FILE``: the replayed counters over event time, as OpenMetrics text
that the strict parser of prometheus_client reads back (promtool's backfill is tested with the real
promtool in tests/integration/test_backfill.py)."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from streams.cli import main
from streams.ops.history import replay_history
from streams.ops.serving import twin_registry
from twin.log import encode, peek, replay
from twin.scenario import load_scenario, simulate

ROOT = Path(__file__).resolve().parents[2]


def _seconds(sample) -> float:  # type: ignore[no-untyped-def]
    stamp = sample.timestamp
    return float(stamp) if isinstance(stamp, (int, float)) else stamp.sec + stamp.nsec / 1e9


@pytest.fixture(scope="module")
def lines() -> list[bytes]:
    scenario = load_scenario(ROOT / "examples" / "dozen.toml").model_copy(update={"duration_s": 180})
    return [encode(event).encode() for event in simulate(scenario, framed=True)]


def test_the_text_is_valid_openmetrics_with_one_sample_per_series_and_step(lines: list[bytes]) -> None:
    out = io.StringIO()
    result, history = replay_history(lines, out, step_s=30)
    text = out.getvalue()
    assert text.endswith("\n# EOF\n")
    families = list(text_string_to_metric_families(text))  # raises on anything out of order
    names = [f.name for f in families]
    assert names == sorted(names) and len(set(names)) == len(names)
    first_ms = peek(lines[0])[0]  # type: ignore[index]
    last_ms = max(peek(line)[0] for line in lines)  # type: ignore[index]
    instants = sorted({_seconds(s) for f in families for s in f.samples})
    assert instants[0] == first_ms / 1000 and instants[-1] == last_ms / 1000
    assert all(b - a == 30 for a, b in zip(instants[:-2], instants[1:-1]))
    assert history.instants == len(instants)
    series: dict[tuple[str, tuple[tuple[str, str], ...]], list[float]] = {}
    for family in families:
        for sample in family.samples:
            series.setdefault((sample.name, tuple(sorted(sample.labels.items()))), []).append(_seconds(sample))
    assert all(stamps == sorted(stamps) for stamps in series.values())
    assert history.series == len(series)
    # the last instant is the final state, exactly as a scrape of the replay shows it
    final = {(s.name, tuple(sorted(s.labels.items()))): s.value
             for f in twin_registry(lambda: list(result.twin.hosts.values()), clock=None).collect()
             if f.name.startswith("dmtwin_dynamic_memory") or f.name.startswith("dmtwin_host")
             for s in f.samples}
    last = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families for s in f.samples
            if _seconds(s) == last_ms / 1000}
    assert last == final


def test_a_sample_is_the_state_after_the_lines_before_its_instant(lines: list[bytes]) -> None:
    out = io.StringIO()
    replay_history(lines, out, step_s=60)
    at_ms = peek(lines[0])[0] + 60_000  # type: ignore[index]
    then = replay([line for line in lines if peek(line)[0] <= at_ms]).twin.hosts["hv-01"]  # type: ignore[index]
    for vm in then.records():
        pattern = (rf'^dmtwin_dynamic_memory_vm_physical_bytes\{{host="hv-01",vm="{vm.name}"\}} (\S+) '
                   rf'{at_ms / 1000:.3f}$')
        assert float(re.search(pattern, out.getvalue(), flags=re.M)[1]) == vm.assigned_mib * 2**20  # type: ignore[index]


def test_the_command_writes_the_file_and_says_so(tmp_path: Path, lines: list[bytes],
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "run.jsonl"
    log.write_bytes(b"\n".join(lines) + b"\n")
    assert main(["replay", str(log), "--openmetrics", str(tmp_path / "run.om"), "--step", "60"]) == 0
    err = capsys.readouterr().err
    assert re.fullmatch(rf"dmtwin replay: \d+ series, \d+ samples at 4 instants in {tmp_path}/run.om\n", err), err
    assert not (tmp_path / "run.om.partial").exists()
    assert main(["replay", str(log), "--openmetrics", str(tmp_path / "x.om"), "--step", "0"]) == 2
    assert capsys.readouterr().err == "dmtwin replay: --step=0.0: must be more than 0 seconds\n"
