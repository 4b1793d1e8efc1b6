"""``dmtwin --version`` names the release, the same one the logs and dmtwin_build_info carry."""

import subprocess
import sys

import pytest

from streams.cli import build_parser
from twin import __version__


def test_version_flag_prints_the_twin_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        build_parser().parse_args(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out == f"dmtwin {__version__}\n"


def test_the_installed_command_answers_without_a_subcommand() -> None:
    done = subprocess.run([sys.executable, "-m", "streams.cli", "--version"], capture_output=True,
                          text=True, timeout=60)
    assert (done.returncode, done.stdout.strip()) == (0, f"dmtwin {__version__}")
