"""``scripts/run`` end to end, as a person runs it: with the usual web port taken it chooses another
and says so, keeps the URLs on screen above the live table, and Ctrl-C stops every part and exits
130. (The quick failures, before any set-up, are in tests/contract/test_run_script.py.)"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path

import pytest

from .conftest import free_ports

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def test_the_run_chooses_a_free_port_keeps_the_urls_and_exits_130_on_ctrl_c(tmp_path: Path) -> None:
    with ExitStack() as stack:
        usual = stack.enter_context(socket.socket())
        try:  # hold the usual web port (unless something else already does)
            usual.bind(("127.0.0.1", 6066))
            usual.listen()
        except OSError:
            pass
        metrics, kafka, controller = free_ports(3)
        screen = tmp_path / "screen.txt"
        out = stack.enter_context(open(screen, "wb"))
        env = {**os.environ, "DMTWIN_HOME": str(tmp_path / "home"), "TERM": "xterm"}
        run = subprocess.Popen(
            ["bash", "scripts/run", "--speed", "10", "--metrics-port", str(metrics), "--kafka-port", str(kafka),
             "--controller-port", str(controller)],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)
        try:
            deadline = time.monotonic() + 300
            text = ""
            while time.monotonic() < deadline and "dmtwin top" not in text:
                assert run.poll() is None, screen.read_text(errors="replace")
                time.sleep(1)
                text = screen.read_text(errors="replace")
            assert "dmtwin top" in text, text
            web = int(re.search(r"state as JSON:  http://localhost:(\d+)/hosts/", text)[1])  # type: ignore[index]
            assert web != 6066
            assert f"scripts/run: port {web} for the web port (instead of 6066, which is taken)" in text
            assert f"http://localhost:{metrics}/metrics" in text
            with urllib.request.urlopen(f"http://127.0.0.1:{web}/hosts/", timeout=10) as page:
                assert "hosts" in json.load(page)
            time.sleep(3)  # a redraw or two: the URLs are drawn again above every table
            redraws = screen.read_text(errors="replace").split("\x1b[H\x1b[2J")[1:]
            assert redraws and all(f"http://localhost:{web}/hosts/" in part for part in redraws)
        finally:
            os.killpg(run.pid, signal.SIGINT)  # what Ctrl-C sends to the terminal's foreground group
            code = run.wait(timeout=120)
    text = screen.read_text(errors="replace")
    assert code == 130, text[-2000:]
    assert text.rstrip().endswith(f"scripts/run: stopped (exit 130); logs are in {tmp_path / 'home'}")
    with socket.socket() as probe:  # the broker is down again
        assert probe.connect_ex(("127.0.0.1", kafka)) != 0
