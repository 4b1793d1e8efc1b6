"""``twin.sources.ingest`` dispatch and ``dmtwin ingest`` (``streams.telemetry.ingest.ingest_main``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from streams.telemetry.ingest import ingest_main
from twin.chain import Chainer
from twin.events import Decision, InputEvent
from twin.log import open_log, read_log
from twin.scenario import load_scenario, simulate
from twin.sources import SOURCES, ingest, options, parse_fleet

from .helpers import DATA, replays

FILES = {
    "perfmon": (DATA / "perfmon_hv01.csv", {}),
    "meminfo": (DATA / "meminfo_hyperv.log", {"vm": "web"}),
    "virsh": (DATA / "virsh_domstats.log", {}),
    "bitbrains": (DATA / "bitbrains_small.csv", {"vms": 2, "time_scale": 300}),
    "synthetic": ("1x3 mix=idle:1,steady:2 duration_s=30", {}),
}


@pytest.mark.parametrize("source", SOURCES)
def test_every_source_gives_input_events_that_replay(source: str):
    path, opts = FILES[source]
    events = list(ingest(source, path, problems=[], **opts))
    assert events[0].type == "host.joined" and events[1].type == "vm.started"
    assert any(e.type == "guest.status" for e in events)
    replays(events)


def test_unknown_sources_and_options_are_refused():
    with pytest.raises(ValueError, match="unknown source 'csv'"):
        ingest("csv", "x")
    with pytest.raises(ValueError, match="takes no option vms"):
        ingest("perfmon", DATA / "perfmon_hv01.csv", vms=3)
    assert "host_mib" in options("perfmon") and "overcommit" in options("bitbrains")


def lines(path: Path) -> list[str]:
    with open_log(path) as log:
        return [line.rstrip("\n") for line in log]


def test_ingest_main_writes_a_log_and_reports_problems(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    out = tmp_path / "hv.jsonl.gz"
    assert ingest_main(["perfmon", str(DATA / "perfmon_bad.csv"), "--to", str(out), "--reserve-mib", "1024"]) == 0
    err = capsys.readouterr().err
    assert f"{DATA / 'perfmon_bad.csv'}:5: 6 cells where the header has 8: row skipped" in err
    assert "10 events from perfmon" in err and "7 problem(s)" in err
    written = lines(out)
    assert len(written) == 10 and all(not isinstance(e, Exception) for _, e in read_log(written))
    assert all('"chain":"' in line for line in written)
    rejects = [json.loads(line) for line in lines(Path(f"{out}.rejects.jsonl"))]
    assert len(rejects) == 7 and rejects[0]["field"] == "source" and rejects[0]["source"] == "ingest perfmon"
    assert {r["value"].rsplit(":", 1)[0] for r in rejects} == {str(DATA / "perfmon_bad.csv")}
    assert '"reserve_mib":1024' in written[0]
    assert ingest_main(["perfmon", str(DATA / "perfmon_bad.csv"), "--to", str(out), "--strict"]) == 1
    assert ingest_main(["virsh", str(DATA / "virsh_loop.log"), "--to", str(out), "--vms", "3"]) == 2
    assert "takes no option --vms" in capsys.readouterr().err
    assert ingest_main(["virsh", str(DATA / "virsh_loop.log"), "--to", "kafka://localhost:9092/in"]) == 2
    assert "only files" in capsys.readouterr().err


def test_closed_loop_is_the_simulated_log_and_the_scenario_can_be_saved(tmp_path: Path):
    spec = "2x3 mix=bursty:1,batch:1,leak:1 seed=5 duration_s=60"
    log, saved = tmp_path / "fleet.jsonl", tmp_path / "fleet.json"
    assert ingest_main(["synthetic", spec, "--closed-loop", "--scenario", str(saved), "--to", str(log)]) == 0
    chainer = Chainer()  # a file target is chained like `dmtwin simulate -o`
    expected = [chainer.line(e) for e in simulate(parse_fleet(spec))]
    assert lines(log) == expected
    assert (tmp_path / "fleet.jsonl.rejects.jsonl").read_text() == "", "nothing refused, and it says so"
    assert load_scenario(saved) == parse_fleet(spec)
    assert ingest_main(["perfmon", str(DATA / "perfmon_hv01.csv"), "--closed-loop", "--to", str(log)]) == 2


def test_a_caller_can_plug_its_own_sink():
    got: list[InputEvent | Decision] = []
    assert ingest_main(["meminfo", str(DATA / "meminfo_hyperv.log"), "--to", "memory://", "--no-floor"],
                       sink_factory=lambda target: got.append) == 0
    assert [e.type for e in got][:2] == ["host.joined", "vm.started"]
    assert got == list(ingest("meminfo", DATA / "meminfo_hyperv.log", floor=False))
