"""The audit commands as users run them: dmtwin simulate -o, audit verify|explain|report, whatif."""

import gzip
import json

from streams.cli import main

from .logs import fleet


def test_simulate_writes_a_chained_log_that_the_audit_commands_read(tmp_path, capsys):
    scenario = tmp_path / "fleet.json"
    scenario.write_text(fleet(duration_s=90).model_dump_json())
    log = tmp_path / "fleet.jsonl.gz"
    assert main(["simulate", str(scenario), "-o", str(log)]) == 0
    with gzip.open(log, "rt") as lines:
        first = json.loads(lines.readline())
    assert len(first["chain"]) == 64 and first["twin_version"]
    capsys.readouterr()

    assert main(["audit", "verify", str(log)]) == 0
    assert "OK: chain intact, every decision re-derived" in capsys.readouterr().out
    assert main(["audit", "verify", str(log), "--json", "--jobs", "2"]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True

    assert main(["audit", "explain", str(log), "--vm", "a", "--host", "h2", "--at", "2026-01-01T00:00:45Z"]) == 0
    out = capsys.readouterr().out
    assert "VM a on host h2" in out and "Last decision:" in out and "Ideal = demand × (1 + 20% buffer)" in out

    assert main(["whatif", str(log), "--policy", "mom", "--set", "*.buffer_percent=10", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["changes"] == "policy mom, *.buffer_percent=10" and len(data["vms"]) == 4
    assert "SimulatedGuest" in data["notes"][0]

    report = tmp_path / "report.html"
    assert main(["audit", "report", str(log), "-o", str(report), "--whatif-policy", "esx"]) == 0
    assert report.read_text().count('class="chart"') == 2 * (1 + 2 * 2)


def test_verify_fails_on_a_tampered_log(tmp_path, capsys):
    scenario = tmp_path / "fleet.json"
    scenario.write_text(fleet(duration_s=30).model_dump_json())
    log = tmp_path / "fleet.jsonl"
    main(["simulate", str(scenario), "-o", str(log)])
    lines = log.read_text().splitlines()
    lines[40] = lines[40].replace('"at_ms":', '"at_ms":1', 1)
    log.write_text("\n".join(lines) + "\n")
    capsys.readouterr()
    assert main(["audit", "verify", str(log)]) == 1
    assert "chain: line 41" in capsys.readouterr().out
