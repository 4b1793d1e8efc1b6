"""dmtwin core: a pure, deterministic, event-sourced model of Hyper-V Dynamic Memory."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("dmtwin")
    """The twin's version: logs record it (``HostJoined.twin_version``) so that an auditor knows
    which rules decided."""
except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
    __version__ = "0+unknown"
