"""Self-managed single-node Apache Kafka (KRaft, combined broker+controller).

Kafka is fetched from Maven Central by coordinates (``mvn dependency:copy-dependencies``),
cached under ``$DMTWIN_CACHE`` (default ``~/.cache/dmtwin``), formatted once per data
directory, started detached, and stopped with SIGTERM (SIGKILL as a last resort).

Standard library only; kafka-python is imported lazily by the readiness check and the
check degrades to a plain TCP probe when it is not installed.

CLI: ``python -m streams.kafka.broker up|down|status [--data-dir DIR] [--port N]``.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import fcntl
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

KAFKA_VERSION = "4.1.1"
"""Apache Kafka release used by the twin (artifact ``org.apache.kafka:kafka_2.13``)."""
LOG4J_VERSION = "2.24.3"
"""Log4j 2 version Kafka 4.1.x is built against (gradle/dependencies.gradle)."""
SCALA_BINARY_VERSION = "2.13"
DEPENDENCY_PLUGIN_VERSION = "3.8.1"
"""Pinned maven-dependency-plugin, so fetching does not depend on Maven's prefix resolution."""

DEFAULT_PORT = 9092
DEFAULT_CONTROLLER_PORT = 9093
_MARKER = ".complete"

_POM_TEMPLATE = """\
<?xml version="1.0" encoding="UTF-8"?>
<!-- Written by dmtwin streams/broker.py: resolves a runnable Kafka {kafka} classpath. -->
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>dmtwin</groupId>
  <artifactId>kafka-runtime</artifactId>
  <version>{kafka}</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_{scala}</artifactId>
      <version>{kafka}</version>
    </dependency>
    <!-- Not in Kafka's published POM ("releaseOnly" in its build): add them explicitly. -->
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-api</artifactId>
      <version>{log4j}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-core</artifactId>
      <version>{log4j}</version>
    </dependency>
    <dependency>
      <!-- SLF4J 1.x binding: Kafka ships slf4j-api 1.7.x. -->
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId>
      <version>{log4j}</version>
    </dependency>
  </dependencies>
  <build>
    <plugins>
      <plugin>
        <groupId>org.apache.maven.plugins</groupId>
        <artifactId>maven-dependency-plugin</artifactId>
        <version>{plugin}</version>
        <configuration>
          <outputDirectory>{libs}</outputDirectory>
          <includeScope>runtime</includeScope>
        </configuration>
      </plugin>
    </plugins>
  </build>
</project>
"""

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


class KafkaError(RuntimeError):
    """Fetching, formatting, starting or stopping the local broker failed."""


def default_cache_dir() -> Path:
    """``$DMTWIN_CACHE`` or ``~/.cache/dmtwin``."""
    return Path(os.environ.get("DMTWIN_CACHE") or Path.home() / ".cache" / "dmtwin")


def default_data_dir() -> Path:
    """``$DMTWIN_HOME/kafka`` or ``~/.local/state/dmtwin/kafka``."""
    home = os.environ.get("DMTWIN_HOME")
    return (Path(home) if home else Path.home() / ".local" / "state" / "dmtwin") / "kafka"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``path`` (serialises concurrent fetch/up calls)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def fetch_kafka(
    cache_dir: Path | None = None,
    version: str = KAFKA_VERSION,
    log4j_version: str = LOG4J_VERSION,
) -> Path:
    """Resolve Kafka's runtime classpath from Maven Central into ``<cache>/kafka-<version>/libs``.

    Idempotent: a marker file is written once the copy is complete, and later calls return at
    once. Needs ``mvn`` on PATH (artifacts also land in the usual ``~/.m2`` repository).
    Returns the ``libs`` directory (use it as ``-cp 'libs/*'``).
    """
    home = Path(cache_dir or default_cache_dir()).expanduser().resolve() / f"kafka-{version}"
    libs = home / "libs"
    if (libs / _MARKER).exists():
        return libs
    with _locked(home / ".lock"):
        if (libs / _MARKER).exists():  # another process finished while we waited
            return libs
        mvn = shutil.which("mvn")
        if mvn is None:
            raise KafkaError("Maven ('mvn') is not on PATH; it is needed to fetch Kafka")
        if libs.exists():
            shutil.rmtree(libs)  # leftovers of an interrupted fetch
        pom = home / "pom.xml"
        pom.write_text(
            _POM_TEMPLATE.format(
                kafka=version,
                scala=SCALA_BINARY_VERSION,
                log4j=log4j_version,
                plugin=DEPENDENCY_PLUGIN_VERSION,
                libs=libs,
            )
        )
        cmd = [mvn, "-B", "-q", "-f", str(pom), "dependency:copy-dependencies"]
        proc = subprocess.run(cmd, cwd=home, capture_output=True, text=True)
        if proc.returncode != 0:
            tail = (proc.stdout + proc.stderr).strip()[-4000:]
            raise KafkaError(f"fetching Kafka {version} failed ({' '.join(cmd)}):\n{tail}")
        jars = sorted(p.name for p in libs.glob("*.jar"))
        if not any(j.startswith(f"kafka_{SCALA_BINARY_VERSION}-") for j in jars):
            raise KafkaError(f"Maven finished but no kafka_{SCALA_BINARY_VERSION} jar in {libs}")
        (libs / _MARKER).write_text("\n".join(jars) + "\n")
    return libs


def _new_cluster_id() -> str:
    """A Kafka ``Uuid`` string (22 chars, URL-safe base64), as ``StorageTool random-uuid`` makes.

    Like Kafka, avoid ids starting with ``-`` (they would look like a CLI flag).
    """
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cid.startswith("-"):
            return cid


def _pid_alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    """True if something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def broker_answers(bootstrap: str, timeout_s: float = 5.0) -> bool:
    """True if the broker at ``bootstrap`` answers a metadata request and lists a live broker.

    Uses kafka-python when available (imported lazily), otherwise only a TCP probe.
    """
    try:
        with warnings.catch_warnings():  # kafka-python 3.0 uses deprecated importlib.resources
            warnings.simplefilter("ignore", DeprecationWarning)
            from kafka import KafkaAdminClient  # type: ignore[import-untyped]
            from kafka.errors import KafkaConfigurationError
            from kafka.errors import KafkaError as ClientError
    except ImportError:
        host, _, port = bootstrap.rpartition(":")
        return _port_open(int(port), host=host or "127.0.0.1")
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=bootstrap,
            client_id="dmtwin-readiness",
            request_timeout_ms=int(timeout_s * 1000),
        )
    except KafkaConfigurationError:
        raise  # a bug here, not "broker not ready yet"
    except (ClientError, OSError):
        return False
    try:
        return bool(admin.describe_cluster().get("brokers"))
    except (ClientError, OSError):
        return False
    finally:
        admin.close()


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
            if _port_open(self.port) or _port_open(self.controller_port):
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
        lines = ["# Written by dmtwin streams/broker.py; rewritten on every `up`."]
        lines += [f"{k}={v}" for k, v in props.items()]
        return "\n".join(lines) + "\n"

    def _write_config(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(self._server_properties())
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
            if _port_open(self.port) and broker_answers(self.bootstrap, timeout_s=5.0):
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


def main(argv: list[str] | None = None) -> int:
    """``up`` / ``down`` / ``status`` for the local broker; returns a process exit code."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data-dir", type=Path, default=None,
                        help=f"broker state (default: {default_data_dir()})")  # fmt: skip
    common.add_argument("--port", type=int, default=None,
                        help=f"broker port (default: as last configured, else {DEFAULT_PORT})")  # fmt: skip
    common.add_argument("--controller-port", type=int, default=None,
                        help=f"KRaft controller port (default: as configured, else {DEFAULT_CONTROLLER_PORT})")  # fmt: skip
    common.add_argument("--timeout", type=float, default=90.0, help="start-up timeout, seconds")
    parser = argparse.ArgumentParser(
        prog="dmtwin kafka", description=f"Local single-node Apache Kafka {KAFKA_VERSION} (KRaft)."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up", parents=[common], help="fetch, format and start the broker; wait ready")
    sub.add_parser("down", parents=[common], help="stop the broker cleanly")
    sub.add_parser("status", parents=[common], help="is the broker running?")
    args = parser.parse_args(argv)

    data_dir = (args.data_dir or default_data_dir()).expanduser().resolve()
    port, cport = _ports_from_config(data_dir) or (DEFAULT_PORT, DEFAULT_CONTROLLER_PORT)
    kafka = LocalKafka(
        data_dir=data_dir,
        port=args.port or port,
        controller_port=args.controller_port or cport,
        startup_timeout=args.timeout,
    )
    try:
        if args.command == "up":
            t0 = time.monotonic()
            st = kafka.up()
            print(f"kafka up: {st.bootstrap} (pid {st.pid}, {time.monotonic() - t0:.1f}s)")
        elif args.command == "down":
            print("kafka stopped" if kafka.down() else "kafka was not running")
            st = kafka.status()
        else:
            st = kafka.status()
            state = f"running (pid {st.pid})" if st.running else "not running"
            print(f"kafka {state}: bootstrap {st.bootstrap}")
    except KafkaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        print(f"logs: {kafka.log_dir}", file=sys.stderr)
        return 1
    print(f"data: {st.data_dir}\nlogs: {st.log_file}")
    return 0 if args.command != "status" or st.running else 3


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
