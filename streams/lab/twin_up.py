"""``dmtwin lab up --with-twin``: the broker and the worker the lab needs, started for it when they
are not running yet, and stopped with it. One command then runs the lab end to end."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

__all__ = ["twin_for_lab"]


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def _worker_answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/hosts/", timeout=2) as page:
            return page.status == 200
    except OSError:
        return False


@contextmanager
def twin_for_lab(bootstrap: str, run_dir: Path, web_port: int, say) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """Yield the worker's URL; start a local broker at ``bootstrap`` and a worker on ``web_port``
    for as long as the lab runs, each only if nothing answers there already."""
    from ..kafka.broker import LocalKafka

    host, _, port = bootstrap.split(",")[0].rpartition(":")
    broker = None
    if not _answers(host.strip("[]"), int(port)):
        broker = LocalKafka(data_dir=run_dir / "kafka", port=int(port), controller_port=int(port) + 1)
        say(f"starting Kafka on {bootstrap} (data in {run_dir / 'kafka'})")
        broker.up()
    url = f"http://127.0.0.1:{web_port}"
    worker = None
    try:
        if not _worker_answers(url):
            log_path = run_dir / "worker.log"
            env = {**os.environ, "DMTWIN_BROKER": bootstrap, "DMTWIN_WEB_PORT": str(web_port),
                   "DMTWIN_DATA_DIR": str(run_dir / "worker")}
            say(f"starting a twin worker ({url}/hosts/, log {log_path})")
            with open(log_path, "ab") as log:
                worker = subprocess.Popen([sys.executable, "-m", "streams.cli", "worker", "--loglevel", "info"],
                                          env=env, stdout=log, stderr=subprocess.STDOUT)
            deadline = time.monotonic() + 120
            while not _worker_answers(url):
                if worker.poll() is not None:
                    raise RuntimeError(f"the worker exited ({worker.returncode}): see {log_path}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the worker did not answer on {url} in 120 s: see {log_path}")
                time.sleep(0.5)
        yield url
    finally:
        if worker is not None and worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(60)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
        if broker is not None:
            broker.down()
