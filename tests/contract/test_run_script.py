"""``scripts/run`` stops at once, before its set-up, with one line naming the cause and a non-zero
exit, when a port it is told to use is taken or an option is wrong."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
USAGE = ("usage: scripts/run [--speed N] [--scenario FILE] [--web-port P] [--metrics-port P] [--kafka-port P] "
         "[--controller-port P]\n")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(ROOT / "scripts" / "run"), *args], capture_output=True, text=True,
                          timeout=60, cwd=ROOT)


@pytest.mark.parametrize("option", ["--web-port", "--metrics-port", "--kafka-port", "--controller-port"])
def test_a_taken_port_stops_the_run_at_once_naming_it(option: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run(option, str(port))
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == (f"scripts/run: port {port} ({option}) is taken by another program: stop it, or choose "
                           f"another with {option} PORT (or leave {option} out to have a free one chosen)\n")


def test_bad_options_exit_2_with_the_usage() -> None:
    done = run("--bogus")
    assert (done.returncode, done.stderr) == (2, "scripts/run: unknown option --bogus\n" + USAGE)
    done = run("--web-port", "abc")
    assert (done.returncode, done.stderr) == (2, "scripts/run: --web-port abc: expected a port number\n")
    done = run("--scenario", "no/such.toml")
    assert (done.returncode, done.stderr) == (2, "scripts/run: --scenario no/such.toml: no such file\n")
    done = run("--speed")
    assert (done.returncode, done.stderr) == (2, "scripts/run: --speed needs a value\n" + USAGE)
