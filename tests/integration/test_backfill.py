"""A replayed log's history in a real Prometheus: ``dmtwin replay LOG --openmetrics FILE``, backfilled
with the real ``promtool tsdb create-blocks-from openmetrics``, then queried at a past instant.

No broker: the log comes from ``dmtwin simulate``; the expected values from replaying the log's
lines up to that instant with ``twin.log.replay``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from streams.cli import main
from twin.log import peek, replay

from .prometheus_fixture import free_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
HOST = "hv-01"


def _query(url: str, expr: str, at_s: float) -> list[dict[str, Any]]:
    query = urllib.parse.urlencode({"query": expr, "time": f"{at_s:.3f}"})
    with urllib.request.urlopen(f"{url}/api/v1/query?{query}", timeout=10) as response:
        body = json.loads(response.read().decode())
    assert body["status"] == "success", body
    return list(body["data"]["result"])


@pytest.fixture(scope="module")
def backfilled(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    promtool, prometheus = shutil.which("promtool"), shutil.which("prometheus")
    if promtool is None or prometheus is None:
        pytest.skip("promtool and prometheus are not installed (Debian package 'prometheus')")
    work = tmp_path_factory.mktemp("backfill")
    scenario = work / "short.toml"
    text = (ROOT / "examples" / "dozen.toml").read_text(encoding="utf-8")
    scenario.write_text(text.replace("duration_s = 900", "duration_s = 600", 1), encoding="utf-8")
    log, history = work / "run.jsonl", work / "run.om"
    assert main(["simulate", str(scenario), "-o", str(log)]) == 0
    assert main(["replay", str(log), "--openmetrics", str(history), "--step", "30", "--no-decisions"]) == 0
    assert history.read_text(encoding="utf-8").endswith("\n# EOF\n")
    blocks = work / "data"
    done = subprocess.run([promtool, "tsdb", "create-blocks-from", "openmetrics", str(history), str(blocks)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    port = free_port()
    with open(work / "prometheus.log", "wb") as out:
        config = work / "prometheus.yml"
        config.write_text("global: {}\n", encoding="utf-8")
        process = subprocess.Popen(
            [prometheus, f"--config.file={config}", f"--storage.tsdb.path={blocks}",
             "--storage.tsdb.retention.time=100y", f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, (work / "prometheus.log").read_text()
            try:
                with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as response:
                    if response.status == 200:
                        break
            except (OSError, urllib.error.URLError):
                pass
            assert time.monotonic() < deadline, "prometheus never became ready"
            time.sleep(0.25)
        yield url, log.read_bytes().splitlines()
    finally:
        process.terminate()
        process.wait(timeout=15)


def test_prometheus_answers_a_past_instant_with_the_value_the_replay_had_then(backfilled) -> None:  # type: ignore[no-untyped-def]
    url, lines = backfilled
    first_ms = peek(lines[0])[0]  # type: ignore[index]
    final = replay(lines).twin.hosts[HOST]
    at_ms = first_ms - first_ms % 30_000 + 300_000  # an instant of the history, 5 minutes in
    then = replay([line for line in lines if peek(line)[0] <= at_ms]).twin.hosts[HOST]  # type: ignore[index]
    # a VM whose memory was different then from at the end, so the query cannot see only the last sample
    vm = next(r.name for r in then.records() if r.assigned_mib != final.vm(r.name).assigned_mib)
    result = _query(url, f'dmtwin_dynamic_memory_vm_physical_bytes{{host="{HOST}", vm="{vm}"}}', at_ms / 1000)
    assert [float(r["value"][1]) for r in result] == [then.vm(vm).assigned_mib * 2**20]
    assert result[0]["value"][0] == at_ms / 1000

    count = _query(url, "count(dmtwin_dynamic_memory_vm_physical_bytes)", at_ms / 1000)
    assert int(count[0]["value"][1]) == len(then.records())
    balancer = _query(url, f'dmtwin_dynamic_memory_balancer_available_memory_bytes{{host="{HOST}"}}', at_ms / 1000)
    assert float(balancer[0]["value"][1]) == then.free_mib() * 2**20


def test_counters_keep_their_total_suffix_and_rate_works(backfilled) -> None:  # type: ignore[no-untyped-def]
    url, lines = backfilled
    last_ms = max(peek(line)[0] for line in lines)  # type: ignore[index]
    added = _query(url, f'sum(dmtwin_dynamic_memory_vm_added_bytes_total{{host="{HOST}"}})', last_ms / 1000)
    final = replay(lines).twin.hosts[HOST]
    assert float(added[0]["value"][1]) == sum(r.added_mib for r in final.records()) * 2**20
    assert _query(url, "sum(rate(dmtwin_dynamic_memory_vm_add_operations_total[2m]))", last_ms / 1000)
