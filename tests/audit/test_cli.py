"""The audit commands as users run them: dmtwin simulate -o, audit verify|explain|report, whatif."""

import gzip
import hashlib
import json

from streams.cli import main

from .logs import fleet


def test_simulate_writes_a_chained_log_that_the_audit_commands_read(tmp_path, capsys):
    scenario = tmp_path / "fleet.json"
    scenario.write_text(fleet(duration_s=90).model_dump_json())
    log = tmp_path / "fleet.jsonl.gz"
    key = tmp_path / "signer.key"
    assert main(["keys", "new", str(key)]) == 0
    fingerprint = capsys.readouterr().out.strip()
    assert fingerprint.startswith("SHA256:") and len(fingerprint) == 7 + 16
    assert (key.stat().st_mode & 0o777) == 0o600
    assert main(["simulate", str(scenario), "-o", str(log), "--key", str(key)]) == 0
    assert f"checkpoints signed by {fingerprint}" in capsys.readouterr().err
    with gzip.open(log, "rt") as lines:
        first = json.loads(lines.readline())
    assert len(first["chain"]) == 64 and first["twin_version"]
    assert (tmp_path / "fleet.jsonl.gz.checkpoints.jsonl").stat().st_size > 0
    assert (tmp_path / "fleet.jsonl.gz.rejects.jsonl").exists()

    assert main(["audit", "verify", str(log)]) == 3, "without the key the signatures are not checked"
    assert capsys.readouterr().out.splitlines()[-1].startswith("UNSIGNED: ")
    assert main(["audit", "verify", str(log), "--key", f"{key}.pub"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[-1].startswith(f"OK: chain intact, signed by {fingerprint}, every decision re-derived: ")
    assert out.splitlines()[-1].endswith(" 2 hosts, 40 decisions re-derived, 0 problems")
    assert main(["audit", "verify", str(log), "--json", "--jobs", "2", "--key", f"{key}.pub"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] is True and data["status"] == "OK" and data["coverage"]["h1"]["tail_lines"] == 0
    assert main(["keys", "show", f"{key}.pub"]) == 0 and capsys.readouterr().out.startswith(fingerprint)
    assert main(["audit", "verify", str(log), "--key", str(key)]) == 2, "the private key is refused"
    assert "is a private key" in capsys.readouterr().err

    assert main(["audit", "explain", str(log), "--vm", "a", "--host", "h2", "--at", "2026-01-01T00:00:45Z"]) == 0
    out = capsys.readouterr().out
    assert "VM a on host h2" in out and "Last decision:" in out and "Ideal = demand × (1 + 20% buffer)" in out

    assert main(["whatif", str(log), "--policy", "mom", "--set", "*.buffer_percent=10", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["changes"] == "policy mom, *.buffer_percent=10" and len(data["vms"]) == 4
    assert "SimulatedGuest" in data["notes"][0]

    report = tmp_path / "report.html"
    assert main(["audit", "report", str(log), "-o", str(report), "--whatif-policy", "esx",
                 "--key", f"{key}.pub"]) == 0
    page = report.read_text()
    assert page.count('class="chart"') == 2 * (1 + 2 * 2)
    digest = hashlib.sha256(gzip.decompress(log.read_bytes())).hexdigest()
    assert digest in page and fingerprint in page and "OK: chain intact, signed by" in page
    assert "2026-01-01T00:00:00.000Z to 2026-01-01T00:01:" in page and " UTC</text>" in page


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
    out = capsys.readouterr().out
    assert "chain: line 41" in out and out.splitlines()[-1].startswith("FAILED: ")


def test_a_refused_setting_change_is_in_the_trail_not_only_on_stderr(tmp_path, capsys):
    """Offline, as live: the worker dead-letters what the twin refuses; simulate -o writes it to
    LOG.rejects.jsonl, where it would have been, and verify reports it."""
    spec = json.loads(fleet(duration_s=30).model_dump_json())
    spec["hosts"][0]["vms"][0]["settings_changes"] = [{"at_s": 10, "maximum_mib": 2048}]  # may only rise
    scenario = tmp_path / "refused.json"
    scenario.write_text(json.dumps(spec))
    log, key = tmp_path / "refused.jsonl", tmp_path / "k"
    main(["keys", "new", str(key)])
    assert main(["simulate", str(scenario), "-o", str(log), "--key", str(key)]) == 0
    assert "1 refused inputs in" in capsys.readouterr().err
    [record] = [json.loads(line) for line in (tmp_path / "refused.jsonl.rejects.jsonl").read_text().splitlines()]
    assert record["field"] == "maximum_mib" and record["host"] == "h1" and record["source"] == "simulate"
    assert json.loads(record["original"])["type"] == "vm.settings_changed"
    lines = log.read_text().splitlines()
    assert json.loads(lines[record["after_line"] - 1])["at_ms"] <= record["at_ms"] <= \
        json.loads(lines[record["after_line"]])["at_ms"], "placed where it came in"
    assert main(["audit", "verify", str(log), "--key", f"{key}.pub"]) == 0, "a refusal recorded is no problem"
    out = capsys.readouterr().out
    assert f"refused when written: rejects line 1: host h1, after log line {record['after_line']}: maximum_mib=2048" in out
    assert "1 inputs were refused when the log was written" in out


def test_verify_exit_codes_say_what_was_proven(tmp_path, capsys):
    scenario = tmp_path / "fleet.json"
    scenario.write_text(fleet(duration_s=30).model_dump_json())
    log, key, other = tmp_path / "fleet.jsonl", tmp_path / "k", tmp_path / "other"
    main(["keys", "new", str(key)])
    main(["keys", "new", str(other)])
    main(["simulate", str(scenario), "-o", str(log), "--key", str(key)])
    pub = f"{key}.pub"
    capsys.readouterr()
    assert main(["audit", "verify", str(log), "--key", pub]) == 0
    assert main(["audit", "verify", str(log), "--key", f"{other}.pub"]) == 1, "checkpoints of another key"
    assert "other-key" in capsys.readouterr().out
    assert main(["audit", "verify", str(log), "--key", pub, "--checkpoints", str(tmp_path / "none")]) == 2
    lines = log.read_text().splitlines()
    log.write_text("\n".join(lines[: len(lines) // 2]) + "\n")  # cut at a line boundary
    capsys.readouterr()
    assert main(["audit", "verify", str(log), "--key", pub]) == 1
    out = capsys.readouterr().out
    assert f"signature: line {len(lines) // 2 + 1} host h" in out and ": cut: " in out
    unchained = tmp_path / "plain.jsonl"
    unchained.write_text("".join(json.dumps({k: v for k, v in json.loads(line).items() if k != "chain"}) + "\n"
                                 for line in lines))
    assert main(["audit", "verify", str(unchained)]) == 4
    assert main(["audit", "verify", str(unchained), "--accept-unsigned"]) == 4
    assert main(["audit", "verify", str(unchained), "--accept-unchained"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("UNCHAINED (accepted: --accept-unchained): ")
