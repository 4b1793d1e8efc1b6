"""Fetching Apache Kafka for the local broker (``streams.kafka.broker``).

Kafka is fetched from Maven Central by coordinates (``mvn dependency:copy-dependencies``) and
cached under ``$DMTWIN_CACHE`` (default ``~/.cache/dmtwin``), once per version; concurrent fetches
wait for each other on a file lock. Standard library only.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
from pathlib import Path
from typing import Iterator

KAFKA_VERSION = "4.1.1"
"""Apache Kafka release used by the twin (artifact ``org.apache.kafka:kafka_2.13``)."""
LOG4J_VERSION = "2.24.3"
"""Log4j 2 version Kafka 4.1.x is built against (gradle/dependencies.gradle)."""
SCALA_BINARY_VERSION = "2.13"
DEPENDENCY_PLUGIN_VERSION = "3.8.1"
"""Pinned maven-dependency-plugin, so fetching does not depend on Maven's prefix resolution."""

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

class KafkaError(RuntimeError):
    """Fetching, formatting, starting or stopping the local broker failed."""


def default_cache_dir() -> Path:
    """``$DMTWIN_CACHE`` or ``~/.cache/dmtwin``."""
    return Path(os.environ.get("DMTWIN_CACHE") or Path.home() / ".cache" / "dmtwin")


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
