"""How ``dmtwin`` behaves when things go wrong, as a person sees it: one line on stderr naming what
failed and what to do (exact text), the documented exit code, no traceback unless ``--debug``;
help on every option; the same option names in every command.
"""

from __future__ import annotations

import argparse
import http.server
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.cli import build_parser, main
from streams.cli.failure import EXIT_CODES
from streams.kafka.command import build_parser as kafka_parser
from streams.ops.top import build_parser as top_parser
from streams.ops.top import render
from streams.telemetry.agent import build_parser as agent_parser
from streams.telemetry.ingest import build_parser as ingest_parser

ROOT = Path(__file__).resolve().parents[2]
HINT = "start one with 'dmtwin kafka up', or give its address with --kafka HOST:PORT"


def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def dmtwin(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "streams.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env={"PATH": "/usr/bin:/bin", "HOME": str(ROOT)})


# --- every parser ------------------------------------------------------------------------------

def _parsers() -> Iterator[tuple[str, argparse.ArgumentParser]]:
    def walk(name: str, parser: argparse.ArgumentParser) -> Iterator[tuple[str, argparse.ArgumentParser]]:
        yield name, parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub, child in action.choices.items():
                    yield from walk(f"{name} {sub}", child)

    yield from walk("dmtwin", build_parser())
    for name, build in (("kafka", kafka_parser), ("ingest", ingest_parser), ("agent", agent_parser),
                        ("top", top_parser)):
        yield from walk(f"dmtwin {name}", build())


PASSTHROUGH = {"dmtwin kafka", "dmtwin ingest", "dmtwin agent", "dmtwin top"}


def test_every_option_and_argument_has_help() -> None:
    missing = []
    for name, parser in _parsers():
        if name in PASSTHROUGH and parser.prog == "dmtwin " + name.split()[-1] and not parser._actions[1:]:
            continue
        shown = {a.dest for a in parser._actions if a.help is not argparse.SUPPRESS and a.option_strings}
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            if action.help is argparse.SUPPRESS:  # only an old spelling of a shown option may hide
                if action.dest not in shown and action.dest != "to":
                    missing.append(f"{name} {'/'.join(action.option_strings)} (hidden, and no shown option)")
                continue
            if not action.help:
                missing.append(f"{name} {'/'.join(action.option_strings) or action.dest}")
    assert missing == []


def test_the_broker_and_the_output_are_named_the_same_everywhere() -> None:
    broker_users = {"dmtwin worker", "dmtwin simulate", "dmtwin log export", "dmtwin log import",
                    "dmtwin ingest", "dmtwin agent"}
    seen = set()
    for name, parser in _parsers():
        shown = {o for a in parser._actions if a.help is not argparse.SUPPRESS for o in a.option_strings}
        assert not shown & {"--broker", "--from", "--to", "--out", "--bootstrap"}, name
        if "--kafka" in shown:
            seen.add(name)
            kafka = next(a for a in parser._actions if "--kafka" in a.option_strings)
            assert kafka.metavar == "HOST:PORT", name
    assert broker_users <= seen


def test_every_command_that_reads_state_has_json() -> None:
    parsers = dict(_parsers())
    for name in ("dmtwin replay", "dmtwin audit verify", "dmtwin audit explain", "dmtwin whatif",
                 "dmtwin keys show", "dmtwin kafka status", "dmtwin top"):
        assert any("--json" in a.option_strings for a in parsers[name]._actions), name


def test_the_exit_codes_are_documented_in_docs_cli_md() -> None:
    text = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    rows = dict(re.findall(r"^\| (\d+) \| (.+) \|$", text, flags=re.M))
    assert sorted(int(code) for code in rows) == sorted(EXIT_CODES)
    for code, meaning in EXIT_CODES.items():
        assert rows[str(code)].replace("`", "") == meaning, code


# --- the broker --------------------------------------------------------------------------------

def test_an_unreachable_broker_is_one_line_and_exit_5_at_once() -> None:
    port = closed_port()
    started = time.monotonic()
    done = dmtwin("log", "export", "out.jsonl", "--kafka", f"127.0.0.1:{port}")
    assert time.monotonic() - started < 20  # the kafka client alone would wait 30 s
    assert (done.returncode, done.stdout) == (5, "")
    assert done.stderr == (f"dmtwin log export: cannot reach the Kafka broker at 127.0.0.1:{port} "
                           f"(connection refused): {HINT}\n")


@pytest.mark.parametrize("argv, command", [
    (["worker", "--broker", "127.0.0.1:{port}", "--web-port", "0", "--metrics-port", "0"], "worker"),
    (["simulate", "examples/dozen.toml", "--to", "kafka://127.0.0.1:{port}"], "simulate"),
    (["log", "import", "x.jsonl", "--to", "kafka://127.0.0.1:{port}"], "log import"),
    (["log", "export", "x.jsonl", "--from", "kafka://127.0.0.1:{port}"], "log export"),
    (["ingest", "synthetic", "1x2", "--kafka", "127.0.0.1:{port}"], "ingest"),
    (["agent", "--count", "1", "--kafka", "127.0.0.1:{port}"], "agent"),
])
def test_every_broker_command_and_old_spelling_fails_the_same_way(argv: list[str], command: str,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    port = closed_port()
    assert main([arg.format(port=port) for arg in argv]) == 5
    err = capsys.readouterr().err
    assert err == (f"dmtwin {command}: cannot reach the Kafka broker at 127.0.0.1:{port} (connection refused): "
                   f"{HINT}\n")


def test_a_topic_log_on_an_unreachable_broker(capsys: pytest.CaptureFixture[str]) -> None:
    port = closed_port()
    assert main(["audit", "verify", f"kafka://127.0.0.1:{port}"]) == 5
    assert capsys.readouterr().err == (
        f"dmtwin audit verify: cannot reach the Kafka broker at 127.0.0.1:{port} (connection refused): "
        "start one with 'dmtwin kafka up', or give its address as kafka://HOST:PORT\n")


def test_a_malformed_broker_address_names_the_flag(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["log", "export", "x.jsonl", "--kafka", "localhost"]) == 2
    assert capsys.readouterr().err == ("dmtwin log export: --kafka='localhost': expected HOST:PORT "
                                       "(or kafka://HOST:PORT), e.g. localhost:9092\n")


@pytest.mark.parametrize("policy, error", [
    ("foresight:bogus=1", "foresight parameter 'bogus': expected one of window, price_mib, hold, rhythm, context, "
                          "context_min, sacrifice, margin_percent, shrink_deadband_percent, sample_ms"),
    ("foresight:price_mib=abc", "foresight parameter price_mib='abc': expected a whole number")])
def test_a_bad_parameter_of_dmtwins_own_policy_names_it_before_any_work(policy: str, error: str,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["study", "bitbrains", "--vms", "2", "--steps", "2", "--policy", policy]) == 2
    assert capsys.readouterr().err == f"dmtwin study: --policy {policy}: {error}\n"


# --- files, scenarios, settings ----------------------------------------------------------------

def test_a_missing_file_is_one_line_without_traceback(tmp_path: Path) -> None:
    missing = tmp_path / "missing.jsonl"
    done = dmtwin("replay", str(missing))
    assert (done.returncode, done.stdout, done.stderr) == (2, "", f"dmtwin replay: {missing}: no such file: "
                                                                  "check the path\n")
    done = dmtwin("audit", "verify", str(missing))
    assert (done.returncode, done.stderr) == (2, f"dmtwin audit verify: {missing}: no such file: give a log "
                                                 "file, - for stdin, or kafka://HOST:PORT\n")


def test_debug_shows_the_traceback_above_the_line(tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"
    done = dmtwin("--debug", "simulate", str(missing))
    assert done.returncode == 2
    assert done.stderr.startswith("Traceback (most recent call last):")
    assert done.stderr.endswith(f"dmtwin simulate: {missing}: no such file: check the path\n")


SCENARIO = """\
duration_s = 60
[[hosts]]
name = "h1"
total_mib = 16384
[[hosts.vms]]
name = "web"
startup_mib = 4096
minimum_mib = 512
maximum_mib = 8192
workload = { kind = "steady", mib = 2000 }
"""


@pytest.mark.parametrize("change, message", [
    (("minimum_mib = 512", "minimum_mib = 5000"), "host h1, VM web: minimum_mib=5000: must not exceed startup_mib=4096"),
    (("minimum_mib = 512", "minimum_mib = 512\nweigth = 3"), "host h1, VM web: weigth=3: not a known field (a typo?)"),
    (("mib = 2000", "mib = -5"), "host h1, VM web: workload.mib=-5: input should be greater than or equal to 0"),
    (("steady", "stedy"), "host h1, VM web: workload.kind='stedy': expected one of 'steady', 'idle', 'diurnal', "
                          "'bursty', 'leak', 'boot_storm', 'batch', 'trace', 'steps'"),
    (("minimum_mib = 512", "minimum_mib = 512\nguest = { hot_add_alignment_mib = 100 }"),
     "host h1, VM web: guest.hot_add_alignment_mib=100: must be a power of two (2^n MB)"),
    (("total_mib = 16384", "total_mib = 1024"), "host h1: reserve_mib=2048: must be below total_mib=1024"),
    (('name = "web"\n', ""), "host h1, VM #1: name: missing"),
    (("minimum_mib = 512", 'minimum_mib = "lots"'),
     "host h1, VM web: minimum_mib='lots': input should be a valid integer, unable to parse string as an integer"),
    (("minimum_mib = 512", "minimum_mib 512"),
     "not valid TOML: Expected '=' after a key in a key/value pair (at line 8, column 13)"),
    (("duration_s = 60", "duration_s = 0\nseed = 'x'"),
     "seed='x': input should be a valid integer, unable to parse string as an integer (and 1 more problem)"),
])
def test_a_malformed_scenario_names_file_host_vm_field_and_value(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                                 change: tuple[str, str], message: str) -> None:
    scenario = tmp_path / "x.toml"
    scenario.write_text(SCENARIO.replace(*change, 1), encoding="utf-8")
    assert main(["simulate", str(scenario), "-o", str(tmp_path / "x.jsonl")]) == 2
    assert capsys.readouterr().err == f"dmtwin simulate: {scenario}: {message}\n"


def test_the_example_scenarios_still_load() -> None:
    from twin.scenario import load_scenario

    assert load_scenario(ROOT / "examples" / "dozen.toml").hosts


def test_a_bad_setting_names_the_variable(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("DMTWIN_WEB_PORT", "abc")
    assert main(["worker"]) == 2
    assert capsys.readouterr().err == "dmtwin worker: DMTWIN_WEB_PORT='abc': expected a whole number\n"


def test_a_bug_is_exit_70_with_a_hint(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import twin.log

    def boom(*_: object, **__: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(twin.log, "replay", boom)
    assert main(["replay", str(ROOT / "examples" / "dozen.toml")]) == 70
    assert capsys.readouterr().err == ("dmtwin replay: unexpected RuntimeError: boom; this is a bug in dmtwin: "
                                       "run again with --debug and report the traceback\n")


# --- ports and pages ---------------------------------------------------------------------------

def test_a_taken_port_stops_the_worker_with_its_option(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["worker", "--web-port", str(port), "--metrics-port", "0"]) == 5
    assert capsys.readouterr().err == (
        f"dmtwin worker: port {port} on 127.0.0.1 (--web-port) is taken (address already in use): stop the "
        "program that holds it, or choose another with --web-port PORT\n")


@pytest.fixture
def other_program() -> Iterator[int]:
    """Something else on a port: every page is a 404."""
    server = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    server.RequestHandlerClass.log_message = lambda *_: None  # type: ignore[method-assign]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_top_stops_at_once_on_a_page_that_is_not_a_worker(other_program: int,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{other_program}/hosts/"
    assert main(["top", "--url", url, "--interval", "0.1"]) == 5
    assert capsys.readouterr().err == (
        f"dmtwin top: {url} answered HTTP 501 Unsupported method ('GET'): it is not a dmtwin worker's /hosts/ page "
        "(another program on that port?); give the worker's page with --url, or start the worker with "
        "--web-port PORT\n")


def test_top_once_without_a_worker(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{closed_port()}/hosts/"
    assert main(["top", "--url", url, "--once"]) == 5
    assert capsys.readouterr().err == (f"dmtwin top: cannot read {url} ([Errno 111] Connection refused): is the "
                                       "worker running? (dmtwin worker, or scripts/run)\n")


def _host(*vms: tuple[str, int, str]) -> dict[str, object]:
    return {"host": "h1", "policy": "hyperv", "total_mib": 16384, "reserve_mib": 2048,
            "balancer": {"available_memory": 1, "available_memory_for_balancing": 2, "average_pressure": 80.0,
                         "system_current_pressure": 90},
            "vms": [{"name": name, "assigned_mib": 1024, "demand_mib": demand, "status": status,
                     "pressure_current": 90, "pressure_average": 80.0, "balloon_mib": 0, "visible_mib": 1024,
                     "smart_paging_mib": 0, "minimum_mib": 512, "maximum_mib": 4096, "weight": 5000}
                    for name, demand, status in vms]}


def test_top_sorts_and_colours_the_memory_status() -> None:
    hosts = [_host(("a", 100, "OK"), ("b", 300, "Warning"), ("c", 200, "Low"))]
    def order(text: str) -> list[str]:
        return [line.split()[0] for line in text.splitlines()[2:] if line.strip()]
    assert order(render(hosts)) == ["a", "b", "c"]
    assert order(render(hosts, "demand")) == ["b", "c", "a"]
    assert order(render(hosts, "demand", reverse=True)) == ["a", "c", "b"]
    assert order(render(hosts, "status")) == ["b", "c", "a"]
    plain, coloured = render(hosts), render(hosts, colour=True)
    assert "\x1b[" not in plain
    assert "\x1b[1;31mWarning\x1b[0m" in coloured and "\x1b[32mOK\x1b[0m" in coloured
    assert re.sub(r"\x1b\[[\d;]*m", "", coloured) == plain  # the columns stay aligned


def test_top_json(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    import streams.ops.top as top

    monkeypatch.setattr(top, "fetch", lambda urls: [_host(("a", 100, "OK"))])
    assert main(["top", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["hosts"][0]["vms"][0]["name"] == "a"


def test_a_taken_serve_port_names_its_option(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "empty.jsonl"
    log.write_text("")
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["replay", str(log), "--serve", str(port)]) == 5
    assert capsys.readouterr().err == (f"dmtwin replay: port {port} (--serve) is taken (address already in use): "
                                       "stop the program that holds it, or choose another with --serve PORT\n")


def test_a_lab_failure_names_the_lab_subcommand(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = tmp_path / "nolab"
    assert main(["lab", "status", "--run-dir", str(run_dir)]) == 2
    assert capsys.readouterr().err == f"dmtwin lab status: run_dir='{run_dir}': no lab running here (no lab.json)\n"
