"""Self-managed single-node Apache Kafka (KRaft, combined broker+controller).

Kafka is fetched from Maven Central (``streams.kafka.download``), formatted once per data
directory, started detached, and stopped with SIGTERM (SIGKILL as a last resort).

``secure`` (``streams.kafka.listener``) puts clients on SASL_SSL with SCRAM users.

Standard library only; the readiness check (``streams.kafka.probe``) imports kafka-python
lazily and degrades to a plain TCP probe when it is not installed.

CLI: ``dmtwin kafka`` (``streams.kafka.command``), also
``python -m streams.kafka.command up|down|status [--data-dir DIR] [--port N]``.
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import shutil
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from .download import KafkaError, _locked, fetch_kafka
from .listener import SecureListener
from .probe import _pid_alive, _port_open, broker_answers

DEFAULT_PORT = 9092
DEFAULT_CONTROLLER_PORT = 9093

_LOG4J2_YAML = """\
# Written by dmtwin streams/broker.py. Console (WARN+, goes to kafka.out) and a rolling file.
Configuration:
  name: dmtwin-kafka
  Properties:
    Property:
      - name: logs
        value: "${sys:kafka.logs.dir}"
      - name: pattern
        value: "[%d] %p %m (%c)%n"
  Appenders:
    Console:
      name: STDOUT
      target: SYSTEM_OUT
      ThresholdFilter:
        level: WARN
      PatternLayout:
        pattern: "${pattern}"
    RollingFile:
      name: FILE
      fileName: "${logs}/server.log"
      filePattern: "${logs}/server.log.%i"
      PatternLayout:
        pattern: "${pattern}"
      SizeBasedTriggeringPolicy:
        size: 20MB
      DefaultRolloverStrategy:
        max: 5
  Loggers:
    Root:
      level: INFO
      AppenderRef:
        - ref: STDOUT
        - ref: FILE
"""


def default_data_dir() -> Path:
    """``$DMTWIN_HOME/kafka`` or ``~/.local/state/dmtwin/kafka``."""
    home = os.environ.get("DMTWIN_HOME")
    return (Path(home) if home else Path.home() / ".local" / "state" / "dmtwin") / "kafka"


def _new_cluster_id() -> str:
    """A Kafka ``Uuid`` string (22 chars, URL-safe base64), as ``StorageTool random-uuid`` makes.

    Like Kafka, avoid ids starting with ``-`` (they would look like a CLI flag).
    """
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cid.startswith("-"):
            return cid


@dataclass(frozen=True)
class KafkaStatus:
    """Snapshot returned by :meth:`LocalKafka.status`."""

    running: bool
    """The broker process from this data dir is alive."""
    pid: int | None
    bootstrap: str
    data_dir: Path
    log_file: Path


@dataclass
class LocalKafka:
    """One single-node KRaft Kafka (broker+controller) owned by a data directory.

    The data dir holds ``server.properties``, ``log4j2.yaml``, ``kafka.pid``, the Kafka log
    dir ``kraft/`` and ``logs/`` (``server.log``; JVM stdout/stderr in ``kafka.out``).
    Listeners bind to 127.0.0.1 only; clients use :attr:`bootstrap` (``localhost:PORT``).
    The process is started in its own session, so it outlives the Python process that
    started it; a later ``LocalKafka`` on the same data dir finds it through the pid file.
    """

    data_dir: Path = field(default_factory=default_data_dir)
    port: int = DEFAULT_PORT
    controller_port: int = DEFAULT_CONTROLLER_PORT
    heap_min: str = "256m"
    heap_max: str = "768m"
    cache_dir: Path | None = None
    startup_timeout: float = 90.0
    stop_timeout: float = 60.0
    secure: SecureListener | None = None
    """Clients on SASL_SSL instead of PLAINTEXT (``port`` is then the SASL_SSL listener)."""
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir).expanduser().resolve()

    # -- paths -------------------------------------------------------------------------
    @property
    def bootstrap(self) -> str:
        """Client bootstrap address, ``localhost:PORT``."""
        return f"localhost:{self.port}"

    @property
    def config_file(self) -> Path:
        return self.data_dir / "server.properties"

    @property
    def log4j_file(self) -> Path:
        return self.data_dir / "log4j2.yaml"

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "kafka.pid"

    @property
    def log_dir(self) -> Path:
        """Kafka's application logs (``server.log``, ``kafka.out``)."""
        return self.data_dir / "logs"

    @property
    def log_file(self) -> Path:
        return self.log_dir / "server.log"

    @property
    def stdout_file(self) -> Path:
        """JVM stdout/stderr (start-up crashes land here before log4j is configured)."""
        return self.log_dir / "kafka.out"

    @property
    def kraft_dir(self) -> Path:
        """Kafka ``log.dirs``: topic partitions and the KRaft metadata log."""
        return self.data_dir / "kraft"

    # -- public API --------------------------------------------------------------------
    def pid(self) -> int | None:
        """Pid of the live broker started from this data dir, else None (stale file removed)."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        if self._proc is not None and self._proc.pid == pid:
            alive = self._proc.poll() is None
        else:
            alive = _pid_alive(pid) and self._is_our_broker(pid)
        if not alive:
            self.pid_file.unlink(missing_ok=True)
            return None
        return pid

    def status(self) -> KafkaStatus:
        """Whether the broker of this data dir is running, and where to find it."""
        pid = self.pid()
        return KafkaStatus(pid is not None, pid, self.bootstrap, self.data_dir, self.log_file)

    def up(self) -> KafkaStatus:
        """Fetch (if needed), configure, format (once), start and wait until ready.

        A no-op if the broker of this data dir is already running (it still waits until it
        answers, in case it is starting). Raises :class:`KafkaError` on failure or timeout.
        """
        with _locked(self.data_dir / ".lock"):
            if self.pid() is not None:
                running = _ports_from_config(self.data_dir)
                if running and running != (self.port, self.controller_port):
                    raise KafkaError(
                        f"the broker of {self.data_dir} is already running on ports "
                        f"{running[0]}/{running[1]}, not {self.port}/{self.controller_port}"
                    )
                self._wait_ready()
                return self.status()
            if any(_port_open(port) for port in self._ports()):
                raise KafkaError(
                    f"port {self.port} or {self.controller_port} is already in use by another "
                    f"process; choose other ports (--port)"
                )
            libs = fetch_kafka(self.cache_dir)
            self._write_config()
            self._format(libs)
            self._start(libs)
        self._wait_ready()
        return self.status()

    def down(self) -> bool:
        """Stop the broker: SIGTERM, wait up to ``stop_timeout`` for a clean exit, then SIGKILL.

        Returns True if a broker was running. The pid file is removed either way.
        """
        pid = self.pid()
        if pid is None:
            return False
        os.kill(pid, signal.SIGTERM)
        if not self._wait_exit(pid, self.stop_timeout):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            self._wait_exit(pid, 10.0)
        self.pid_file.unlink(missing_ok=True)
        self._proc = None
        return True

    # -- internals ---------------------------------------------------------------------
    def _is_our_broker(self, pid: int) -> bool:
        """Guard against pid reuse: the process must be kafka.Kafka on our server.properties."""
        if not Path("/proc/self").exists():
            return True  # no procfs (e.g. macOS): trust the pid file
        try:
            args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        return b"kafka.Kafka" in args and str(self.config_file).encode() in args

    def _ports(self) -> list[int]:
        return [self.port, self.controller_port] + ([self.secure.internal_port] if self.secure else [])

    @property
    def _probe_bootstrap(self) -> str:
        """Where readiness is probed: the plaintext listener (the internal one with ``secure``)."""
        return f"localhost:{self.secure.internal_port}" if self.secure else self.bootstrap

    def _server_properties(self) -> str:
        p, c = self.port, self.controller_port
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.bootstrap.servers": f"localhost:{c}",
            "listeners": f"PLAINTEXT://127.0.0.1:{p},CONTROLLER://127.0.0.1:{c}",
            "advertised.listeners": f"PLAINTEXT://localhost:{p},CONTROLLER://localhost:{c}",
            "inter.broker.listener.name": "PLAINTEXT",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(self.kraft_dir),
            "num.partitions": "1",
            "auto.create.topics.enable": "true",
            "offsets.topic.replication.factor": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "log.cleaner.enable": "true",  # Faust table changelogs are compacted topics
        }
        if self.secure is not None:
            props.update(self.secure.properties(self.port, self.controller_port))
        lines = ["# Written by dmtwin streams/broker.py; rewritten on every `up`."]
        lines += [f"{k}={v}" for k, v in props.items()]
        return "\n".join(lines) + "\n"

    def _write_config(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(self._server_properties())
        self.config_file.chmod(0o600)  # it may hold the keystore's password
        self.log4j_file.write_text(_LOG4J2_YAML)

    def _java(self, libs: Path) -> list[str]:
        java_home = os.environ.get("JAVA_HOME")
        java = str(Path(java_home) / "bin" / "java") if java_home else shutil.which("java")
        if not java:
            raise KafkaError("'java' (17+) is not on PATH and JAVA_HOME is not set")
        return [
            java,
            f"-Dlog4j2.configurationFile={self.log4j_file}",
            f"-Dkafka.logs.dir={self.log_dir}",
            "-Djava.awt.headless=true",
            "-cp",
            f"{libs}/*",
        ]

    def _format(self, libs: Path) -> None:
        """``StorageTool format --standalone`` once per data dir (``-g``: ignore if formatted)."""
        if (self.kraft_dir / "meta.properties").exists():
            return
        cmd = self._java(libs) + [
            "kafka.tools.StorageTool", "format", "--standalone",
            "-t", _new_cluster_id(), "-c", str(self.config_file), "-g",
        ]  # fmt: skip
        cmd += self.secure.scram_arguments() if self.secure else []
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise KafkaError(f"formatting {self.kraft_dir} failed:\n{proc.stdout}{proc.stderr}")

    def _start(self, libs: Path) -> None:
        cmd = self._java(libs) + [
            f"-Xms{self.heap_min}", f"-Xmx{self.heap_max}",
            "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-XX:+ExplicitGCInvokesConcurrent",
            "kafka.Kafka", str(self.config_file),
        ]  # fmt: skip
        with open(self.stdout_file, "ab") as out:
            self._proc = subprocess.Popen(
                cmd,
                cwd=self.data_dir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # survive the Python process / Ctrl-C
            )
        self.pid_file.write_text(f"{self._proc.pid}\n")

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.pid() is None:
                raise KafkaError(f"Kafka exited during start-up; see {self._log_hint()}")
            if _port_open(self.port) and broker_answers(self._probe_bootstrap, timeout_s=5.0):
                return
            time.sleep(0.5)
        raise KafkaError(
            f"Kafka did not answer on {self.bootstrap} within {self.startup_timeout:.0f}s; "
            f"see {self._log_hint()} (it is still running; `down` stops it)"
        )

    def _log_hint(self) -> str:
        """Where to look, plus the last lines of kafka.out (JVM errors and WARN+ only)."""
        try:
            tail = self.stdout_file.read_text(errors="replace").strip().splitlines()[-5:]
        except OSError:
            tail = []
        return f"{self.log_file} and {self.stdout_file}" + "".join(f"\n  {t}" for t in tail)

    def _wait_exit(self, pid: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.pid == pid:
                if self._proc.poll() is not None:
                    return True
            elif not _pid_alive(pid):
                return True
            time.sleep(0.2)
        return False


def _ports_from_config(data_dir: Path) -> tuple[int, int] | None:
    """(broker, controller) ports from an existing ``server.properties`` in ``data_dir``."""
    try:
        text = (data_dir / "server.properties").read_text()
    except OSError:
        return None
    m = re.search(r"^listeners=PLAINTEXT://[^:]+:(\d+),CONTROLLER://[^:]+:(\d+)", text, re.M)
    return (int(m.group(1)), int(m.group(2))) if m else None
