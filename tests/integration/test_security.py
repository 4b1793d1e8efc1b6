"""dmtwin through a broker that takes clients on SASL_SSL only (SCRAM-SHA-512, a CA made here).

The broker's client listener is SASL_SSL; its controller and its own traffic stay on plaintext
listeners bound to 127.0.0.1 (``SecureListener``). The worker, ``simulate --to``, ``log export``,
``log import``, ``audit verify kafka://``, ``ingest --to`` and ``agent --to`` all go through
SASL_SSL, as users run them (their own processes, settings from the environment or the flags).
Only the test's own observers read the topics on the internal plaintext listener, to check that
what arrived through the secure one is what is there.
"""

from __future__ import annotations

import gzip
import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from streams.kafka.broker import LocalKafka
from streams.kafka.listener import SecureListener
from twin.chain import verify_chain

from .conftest import free_ports
from .pipeline import ROOT, WorkerProcess, read_topic, unique_topics, wait_until_consumed, wait_until_quiet
from .tls import make_pki

pytestmark = pytest.mark.integration

USER = "dmtwin-worker"


class SecureKafka:
    """The broker, the files a client needs, and the internal plaintext address for observers."""

    def __init__(self, folder: Path) -> None:
        self.pki = make_pki(folder / "pki")
        self.password = secrets.token_urlsafe(18)  # random per run: no password is in the repository
        self.password_file = folder / "kafka-password"
        self.password_file.write_text(self.password + "\n")
        self.password_file.chmod(0o600)
        port, controller, internal = free_ports(3)
        self.kafka = LocalKafka(data_dir=folder / "kafka", port=port, controller_port=controller,
                                secure=SecureListener(internal, self.pki.keystore, self.pki.keystore_password,
                                                      {USER: self.password}))
        self.bootstrap = self.kafka.bootstrap
        self.internal = f"localhost:{internal}"

    def env(self, **extra: str) -> dict[str, str]:
        """The DMTWIN_KAFKA_* variables of a client, over a clean copy of this environment."""
        base = {k: v for k, v in os.environ.items() if not k.startswith("DMTWIN_KAFKA_")}
        return {**base, "DMTWIN_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "DMTWIN_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
                "DMTWIN_KAFKA_SASL_USERNAME": USER, "DMTWIN_KAFKA_SASL_PASSWORD_FILE": str(self.password_file),
                "DMTWIN_KAFKA_SSL_CAFILE": str(self.pki.ca), **extra}

    def flags(self, password_file: Path | None = None, ca: Path | None = None) -> list[str]:
        """The same settings as ``--kafka-*`` flags."""
        return ["--kafka-security", "SASL_SSL", "--kafka-sasl-mechanism", "SCRAM-SHA-512", "--kafka-user", USER,
                "--kafka-password-file", str(password_file or self.password_file),
                "--kafka-ca", str(ca or self.pki.ca)]


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory):
    broker = SecureKafka(tmp_path_factory.mktemp("secure-kafka"))
    broker.kafka.up()
    try:
        yield broker
    finally:
        broker.kafka.down()


def dmtwin(*args: str, env: dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "streams.cli", *args], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def plain_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("DMTWIN_KAFKA_")}


SCENARIO = {"seed": 3, "duration_s": 40, "hosts": [
    {"name": name, "total_mib": 10240, "reserve_mib": 1024, "vms": [
        {"name": "busy", "startup_mib": 1024, "minimum_mib": 512, "maximum_mib": 6144,
         "workload": {"kind": "diurnal", "base_mib": 3000, "amplitude_mib": 2000, "period_s": 20}},
        {"name": "idle", "startup_mib": 4096, "minimum_mib": 512, "maximum_mib": 4096, "workload": {"kind": "idle"}},
    ]} for name in ("hv-a", "hv-b")]}


def test_worker_feeder_and_export_through_sasl_ssl_and_the_log_verifies(secure, tmp_path):
    app_id, topics = unique_topics()
    scenario = tmp_path / "fleet.json"
    scenario.write_text(json.dumps(SCENARIO))
    key = tmp_path / "signer.key"
    assert dmtwin("keys", "new", str(key), env=plain_env()).returncode == 0

    worker = WorkerProcess(secure.bootstrap, tmp_path / "worker", app_id, topics)
    worker.env.update(secure.env(DMTWIN_KEY=str(key)))  # the worker's settings from the environment
    worker.start()
    try:
        fed = dmtwin("simulate", str(scenario), "--to", f"kafka://{secure.bootstrap}", "--speed", "0",
                     *secure.flags(), env={**plain_env(), "DMTWIN_TOPIC_PREFIX": topics.prefix})
        assert fed.returncode == 0, fed.stderr
        assert "Traceback" not in fed.stderr
        wait_until_consumed(secure.internal, app_id, topics)
        wait_until_quiet(secure.internal, topics.event_log)
        assert "broker " + secure.bootstrap + " (SASL_SSL, SCRAM-SHA-512 as dmtwin-worker)" in \
            worker.log_path.read_text()
    finally:
        worker.stop()

    exported = tmp_path / "log.jsonl.gz"
    out = dmtwin("log", "export", str(exported), "--from", f"kafka://{secure.bootstrap}", "--checkpoints",
                 env=secure.env(DMTWIN_TOPIC_PREFIX=topics.prefix))
    assert out.returncode == 0, out.stderr
    lines = gzip.decompress(exported.read_bytes()).splitlines()
    on_topic = [value for _, value in read_topic(secure.internal, topics.event_log)]
    assert lines == on_topic and len(lines) > 40, "the export through SASL_SSL is the whole event-log topic"
    assert {json.loads(line)["host"] for line in lines} == {"hv-a", "hv-b"}
    assert verify_chain(lines) == []

    verified = dmtwin("audit", "verify", str(exported), "--key", f"{key}.pub", env=plain_env())
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert verified.stdout.strip().splitlines()[-1].startswith("OK"), verified.stdout

    live = dmtwin("audit", "verify", f"kafka://{secure.bootstrap}", "--topic", topics.event_log, "--key",
                  f"{key}.pub", "--checkpoints", f"{exported}.checkpoints.jsonl", *secure.flags(), env=plain_env())
    assert live.returncode == 0, live.stdout + live.stderr
    assert live.stdout.strip().splitlines()[-1].startswith("OK"), live.stdout

    copy = f"{topics.prefix}copy"
    imported = dmtwin("log", "import", str(exported), "--to", f"kafka://{secure.bootstrap}", "--topic", copy,
                      *secure.flags(), env=plain_env())
    assert imported.returncode == 0, imported.stderr
    assert sorted(v for _, v in read_topic(secure.internal, copy)) == sorted(lines)


def test_telemetry_producers_send_through_sasl_ssl(secure, tmp_path):
    _, topics = unique_topics()
    env = secure.env(DMTWIN_TOPIC_PREFIX=topics.prefix)
    meminfo = ROOT / "tests" / "sources" / "data" / "meminfo_hyperv.log"
    ingested = dmtwin("ingest", "meminfo", str(meminfo), "--to", f"kafka://{secure.bootstrap}", env=env)
    assert ingested.returncode == 0, ingested.stderr
    count = int(ingested.stderr.rsplit("dmtwin ingest: ", 1)[1].split()[0])
    agent = dmtwin("agent", "--host", "hv-agent", "--vm", "probe", "--count", "2", "--interval", "0.1",
                   "--to", f"kafka://{secure.bootstrap}", *secure.flags(), env={**plain_env(),
                                                                           "DMTWIN_TOPIC_PREFIX": topics.prefix})
    assert agent.returncode == 0, agent.stderr
    sent = read_topic(secure.internal, topics.telemetry) + read_topic(secure.internal, topics.host_events)
    assert len([k for k, _ in sent if k != b"hv-agent"]) == count
    assert len([k for k, _ in sent if k == b"hv-agent"]) >= 2


def one_line_refusal(result: subprocess.CompletedProcess[str], bootstrap: str, cause: str) -> str:
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert bootstrap in lines[0] and cause in lines[0], lines[0]
    return lines[0]


def test_a_wrong_password_or_an_unknown_ca_is_one_clear_line(secure, tmp_path):
    wrong = tmp_path / "wrong-password"
    wrong.write_text("not-" + secure.password)
    env = {**plain_env(), "DMTWIN_BROKER": secure.bootstrap}
    line = one_line_refusal(dmtwin("log", "export", str(tmp_path / "x.jsonl"), "--from", f"kafka://{secure.bootstrap}",
                                   *secure.flags(password_file=wrong), env=env, timeout=60),
                            secure.bootstrap, "SASL login failed")
    assert "invalid credentials" in line and USER in line and secure.password not in line
    one_line_refusal(dmtwin("simulate", "examples/dozen.toml", "--to", f"kafka://{secure.bootstrap}",
                            *secure.flags(password_file=wrong), env=env, timeout=60),
                     secure.bootstrap, "SASL login failed")
    one_line_refusal(dmtwin("worker", *secure.flags(password_file=wrong), env=env, timeout=60),
                     secure.bootstrap, "SASL login failed")
    one_line_refusal(dmtwin("log", "export", str(tmp_path / "y.jsonl"), "--from", f"kafka://{secure.bootstrap}",
                            *secure.flags(ca=secure.pki.other_ca), env=env, timeout=60),
                     secure.bootstrap, "certificate does not verify")
    bad = dmtwin("log", "export", str(tmp_path / "z.jsonl"), "--from", f"kafka://{secure.bootstrap}",
                 env={**secure.env(), "DMTWIN_KAFKA_SECURITY_PROTOCOL": "TLS"}, timeout=60)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1, bad.stderr
    assert bad.stderr.strip().endswith(": DMTWIN_KAFKA_SECURITY_PROTOCOL='TLS': expected one of PLAINTEXT, SSL, "
                                       "SASL_PLAINTEXT, SASL_SSL"), bad.stderr
