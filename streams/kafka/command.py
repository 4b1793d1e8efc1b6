"""``dmtwin kafka up|down|status``: the local broker (``streams.kafka.broker``) from the shell.

Also ``python -m streams.kafka.command up|down|status [--data-dir DIR] [--port N]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from .broker import (
    DEFAULT_CONTROLLER_PORT,
    DEFAULT_PORT,
    LocalKafka,
    _ports_from_config,
    default_data_dir,
)
from .download import KAFKA_VERSION, KafkaError


def build_parser() -> argparse.ArgumentParser:
    """``dmtwin kafka``'s subcommands and options."""
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
    status = sub.add_parser("status", parents=[common], help="is the broker running? (exit 3 if not)")
    status.add_argument("--json", action="store_true", help="print JSON: running, pid, bootstrap, data, logs")
    return parser


def main(argv: list[str] | None = None) -> int:
    """``up`` / ``down`` / ``status`` for the local broker; returns a process exit code."""
    args = build_parser().parse_args(argv)

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
            if args.json:
                print(json.dumps({"running": st.running, "pid": st.pid, "bootstrap": st.bootstrap,
                                  "data": str(st.data_dir), "logs": str(st.log_file)}, indent=2))
                return 0 if st.running else 3
            state = f"running (pid {st.pid})" if st.running else "not running"
            print(f"kafka {state}: bootstrap {st.bootstrap}")
    except KafkaError as exc:
        print(f"dmtwin kafka {args.command}: {exc} (logs: {kafka.log_dir})", file=sys.stderr)
        return 5
    print(f"data: {st.data_dir}\nlogs: {st.log_file}")
    return 0 if args.command != "status" or st.running else 3


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
