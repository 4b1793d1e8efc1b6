"""How ``dmtwin`` fails: one line on stderr naming what failed and what to do, and an exit code.

``main`` runs every command through ``run_reporting``: an exception becomes one line
``dmtwin COMMAND: WHAT: WHY; WHAT TO DO`` and the exit code of its kind (``EXIT_CODES``, listed in
docs/cli.md); ``--debug`` (or ``DMTWIN_DEBUG=1``) prints the traceback as well.

``Failure`` is the exception a command raises to say exactly that; ``broker_address`` and
``reach_broker`` check a broker address before a Kafka client spends half a minute finding out.
"""

from __future__ import annotations

import errno
import socket
import sys
import traceback
from collections.abc import Callable

__all__ = ["EXIT_CODES", "OK", "NO", "USAGE", "UNREACHABLE", "BUG", "INTERRUPTED", "Failure",
           "broker_address", "reach_broker", "describe", "run_reporting"]

OK, NO, USAGE, UNREACHABLE, BUG, INTERRUPTED = 0, 1, 2, 5, 70, 130
EXIT_CODES: dict[int, str] = {
    OK: "done; for audit verify: OK",
    NO: "the command ran and the answer is no: audit verify FAILED, audit explain found nothing, "
        "ingest --strict had problems",
    USAGE: "could not run: a bad option, a missing or unreadable file, a malformed scenario, log, key or setting",
    3: "audit verify: UNSIGNED (passes with --accept-unsigned); kafka status: not running",
    4: "audit verify: UNCHAINED (passes with --accept-unchained)",
    UNREACHABLE: "could not run: the Kafka broker or a worker cannot be reached, or a port is taken",
    BUG: "an unexpected error, a bug in dmtwin: run again with --debug and report the traceback",
    INTERRUPTED: "interrupted (Ctrl-C)",
}
"""Every exit code of ``dmtwin``; docs/cli.md lists the same (a test keeps them equal)."""

BROKER_HINT = "start one with 'dmtwin kafka up', or give its address with --kafka HOST:PORT"


class Failure(Exception):
    """A failure to report as one line (``str``) with exit ``code``."""

    def __init__(self, message: str, code: int = USAGE) -> None:
        super().__init__(message)
        self.code = code


def broker_address(text: str, flag: str = "--kafka") -> str:
    """``HOST:PORT`` (or ``kafka://HOST:PORT``, or several separated by commas) as the clients take
    it; ``Failure`` naming ``flag`` and the value when it is not one."""
    bare = text[len("kafka://"):] if text.startswith("kafka://") else text
    for one in bare.split(","):
        host, _, port = one.strip().rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise Failure(f"{flag}={text!r}: expected HOST:PORT (or kafka://HOST:PORT), e.g. localhost:9092")
    return bare


def reach_broker(bootstrap: str, flag: str = "--kafka", timeout_s: float = 3.0) -> str:
    """``bootstrap`` if something listens at one of its addresses; else ``Failure`` (exit 5) at
    once, instead of the Kafka client's 30-second bootstrap timeout and its traceback."""
    bootstrap = broker_address(bootstrap, flag)
    why = ""
    for one in bootstrap.split(","):
        host, _, port = one.strip().rpartition(":")
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
                return bootstrap
        except socket.gaierror:
            why = f"unknown host {host!r}"
        except TimeoutError:
            why = f"no answer within {timeout_s:g} s"
        except OSError as error:
            why = (error.strerror or str(error)).lower()
    hint = {"LOG": "start one with 'dmtwin kafka up', or give its address as kafka://HOST:PORT",
            "DMTWIN_BROKER": "start one with 'dmtwin kafka up', or give its address with --kafka HOST:PORT "
                             "(or DMTWIN_BROKER)"}.get(flag, BROKER_HINT)
    raise Failure(f"cannot reach the Kafka broker at {bootstrap} ({why}): {hint}", UNREACHABLE)


def _is_kafka_error(error: BaseException) -> bool:
    module = type(error).__module__ or ""
    return module.split(".")[0] in ("kafka", "aiokafka")


def describe(error: BaseException) -> tuple[str, int]:
    """The one line and the exit code for ``error``."""
    if isinstance(error, Failure):
        return str(error), error.code
    if isinstance(error, KeyboardInterrupt):
        return "interrupted", INTERRUPTED
    if _is_kafka_error(error):
        text = str(error).removeprefix(type(error).__name__ + ": ")
        if "bootstrap" in text.lower() or "connect" in type(error).__name__.lower() or "NoBrokers" in type(error).__name__:
            return f"cannot reach the Kafka broker ({text}): {BROKER_HINT}", UNREACHABLE
        return f"Kafka: {type(error).__name__}: {text}", UNREACHABLE
    if isinstance(error, OSError):
        name = getattr(error, "filename", None)
        if error.errno == errno.EADDRINUSE:
            return f"a port is taken by another program ({error.strerror}): stop it or choose another port", UNREACHABLE
        if isinstance(error, FileNotFoundError) and name:
            from pathlib import Path

            parent = Path(str(name)).parent
            if not parent.is_dir():
                return f"{name}: the folder {parent} does not exist: check the path", USAGE
            return f"{name}: no such file: check the path", USAGE
        if isinstance(error, IsADirectoryError) and name:
            return f"{name}: is a folder, not a file", USAGE
        if isinstance(error, PermissionError) and name:
            return f"{name}: permission denied", USAGE
        if name:
            return f"{name}: {error.strerror or error}", USAGE
        return str(error) or type(error).__name__, USAGE
    if isinstance(error, ValueError):  # pydantic's ValidationError too, when a command lets one through
        text = str(error)
        return (text.splitlines()[0] if text else type(error).__name__), USAGE
    return (f"unexpected {type(error).__name__}: {error}; this is a bug in dmtwin: run again with --debug "
            "and report the traceback"), BUG


def run_reporting(command: str, run: Callable[[], int], debug: bool = False) -> int:
    """``run()``'s exit code; an exception is reported as one line (and its traceback with
    ``debug``) and gives the exit code of its kind."""
    try:
        return int(run())
    except SystemExit:
        raise
    except BrokenPipeError:  # the reader went away (| head): nothing to say to it
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return OK
    except BaseException as error:  # noqa: BLE001 - every failure becomes a line and an exit code
        message, code = describe(error)
        if debug:
            traceback.print_exc()
        print(f"{command}: {message}", file=sys.stderr, flush=True)
        return code
