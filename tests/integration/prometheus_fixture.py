"""Fixtures that run a real Prometheus against a real metrics server of ours.

``twin_metrics_server``: a real worker process fed a simulated run of ``examples/dozen.toml`` through
the real broker (plus one bad message), serving the twin's counters and its own pipeline metrics.

``prometheus_server``: the ``prometheus`` binary (Debian package ``prometheus``) on a free
loopback port with a temporary config that scrapes ``twin_metrics_server`` every second; ready
once the target is up and has been scraped a few times (enough for ``rate()``).

Import both into a test module: ``from .prometheus_fixture import prometheus_server,
twin_metrics_server``.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from twin.engine import Twin
from twin.log import replay
from twin.scenario import load_scenario

from .pipeline import (
    WorkerProcess,
    read_topic,
    run_feed,
    send_raw,
    unique_topics,
    wait_until_quiet,
)

__all__ = ["TwinMetricsServer", "PrometheusServer", "twin_metrics_server", "prometheus_server"]

ROOT = Path(__file__).resolve().parents[2]
SCENARIO = ROOT / "examples" / "dozen.toml"
ALERT_RULES = ROOT / "deploy" / "alerts.yml"
SCENARIO_SECONDS = 120
READY_TIMEOUT_S = 60.0
MIN_SCRAPES = 3


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get_json(url: str, timeout: float = 10.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read().decode())


@dataclass(frozen=True)
class TwinMetricsServer:
    """Where the replayed twin is served, and what it holds."""

    port: int
    hosts: tuple[str, ...]
    vms: dict[str, tuple[str, ...]]
    replay_state: Twin

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"


@dataclass(frozen=True)
class PrometheusServer:
    """A running Prometheus and a client for its HTTP API."""

    url: str
    job: str

    def instant(self, expr: str) -> list[dict[str, Any]]:
        """Result of an instant query; raises ``OSError`` if Prometheus does not answer it."""
        body = _get_json(f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
        assert body["status"] == "success", body
        return list(body["data"]["result"])

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Result of an instant query; fails the test on an API error (e.g. a PromQL syntax error)."""
        try:
            return self.instant(expr)
        except urllib.error.HTTPError as error:
            pytest.fail(f"Prometheus refused {expr!r}: {error.read().decode()}")

    def rules(self) -> list[dict[str, Any]]:
        """Every rule Prometheus loaded, with its health and last error (``/api/v1/rules``)."""
        body = _get_json(f"{self.url}/api/v1/rules")
        assert body["status"] == "success", body
        return [rule for group in body["data"]["groups"] for rule in group["rules"]]

    def label_values(self, label: str, match: str) -> list[str]:
        """What Grafana's ``label_values(match, label)`` would list."""
        url = f"{self.url}/api/v1/label/{label}/values?" + urllib.parse.urlencode({"match[]": match})
        body = _get_json(url)
        assert body["status"] == "success", body
        return list(body["data"])


@pytest.fixture(scope="session")
def twin_metrics_server(kafka_bootstrap: str,
                        tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwinMetricsServer]:
    """A real `dmtwin worker` fed a simulated run of examples/dozen.toml (and one bad message, so
    the dead-letter series has data), serving its metrics on a free loopback port."""
    app_id, topics = unique_topics()
    worker = WorkerProcess(kafka_bootstrap, tmp_path_factory.mktemp("worker") / "w", app_id, topics).start()
    try:
        scenario = load_scenario(SCENARIO).model_copy(update={"duration_s": SCENARIO_SECONDS})
        run_feed(scenario, kafka_bootstrap, topics, speed=30, drain_s=2)
        send_raw(kafka_bootstrap, topics.telemetry, [(b"hv-01", b'{"type": "guest.status", "at_ms": "soon"}')])
        wait_until_quiet(kafka_bootstrap, topics.event_log)
        result = replay([value for _, value in read_topic(kafka_bootstrap, topics.event_log)])
        assert result.rejected == []
        hosts = result.twin.hosts
        yield TwinMetricsServer(
            port=worker.metrics_port, hosts=tuple(hosts),
            vms={name: tuple(state.vms.names) for name, state in hosts.items()},
            replay_state=result.twin)
    finally:
        worker.stop()


def _wait_until_scraped(prom: PrometheusServer, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    last: object = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"prometheus exited with {process.returncode}:\n{log.read_text()[-4000:]}")
        try:
            result = prom.instant(f'count_over_time(up{{job="{prom.job}"}}[5m])')
            up = prom.instant(f'up{{job="{prom.job}"}}')
            last = (result, up)
            if result and float(result[0]["value"][1]) >= MIN_SCRAPES and up and up[0]["value"][1] == "1":
                return
        except OSError as error:  # not listening, or not ready, yet
            last = error
        time.sleep(0.25)
    pytest.fail(f"prometheus never scraped the target {MIN_SCRAPES} times (last: {last}):\n"
                f"{log.read_text()[-4000:]}")


@pytest.fixture(scope="session")
def prometheus_server(tmp_path_factory: pytest.TempPathFactory,
                      twin_metrics_server: TwinMetricsServer) -> Iterator[PrometheusServer]:
    """The real ``prometheus`` binary scraping ``twin_metrics_server`` every second."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("the prometheus binary is not installed (Debian package 'prometheus')")
    workdir = tmp_path_factory.mktemp("prometheus")
    job = "dmtwin"
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [{"job_name": job, "static_configs": [{"targets": [twin_metrics_server.target]}]}],
        # The alert rules of docker-compose.yml's Prometheus, evaluated against the real worker.
        "rule_files": [str(ALERT_RULES)],
    }
    (workdir / "prometheus.yml").write_text(json.dumps(config, indent=2), encoding="utf-8")
    port = free_port()
    log = workdir / "prometheus.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [binary, f"--config.file={workdir / 'prometheus.yml'}",
             f"--storage.tsdb.path={workdir / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
             "--log.level=warn"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    prom = PrometheusServer(url=f"http://127.0.0.1:{port}", job=job)
    try:
        _wait_until_scraped(prom, process, log)
        yield prom
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
