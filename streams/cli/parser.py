"""The ``dmtwin`` argument parser: every subcommand, its options and help, and the commands that
bring a parser of their own (``PASSTHROUGH``). Each subcommand's ``run`` is in ``commands``.
"""

from __future__ import annotations

import argparse

from ..kafka.security import add_kafka_security_options
from ..lab.cli import add_commands as add_lab_commands
from .commands import (
    _audit_explain,
    _audit_report,
    _audit_verify,
    _keys_new,
    _keys_show,
    _log_export,
    _log_import,
    _replay,
    _schema,
    _simulate,
    _whatif,
)
from .live import _worker

__all__ = ["build_parser", "PASSTHROUGH", "add_kafka_option"]

BROKER_DEFAULT = "default $DMTWIN_BROKER, else localhost:9092"


def add_kafka_option(p: argparse.ArgumentParser, purpose: str, *old: str, default: bool = True) -> None:
    """``--kafka HOST:PORT``, the broker, named the same in every command; ``old`` spellings of it
    still work but are not shown in the help."""
    p.add_argument("--kafka", metavar="HOST:PORT",
                   help=f"Kafka broker {purpose} (kafka://HOST:PORT too" + (f"; {BROKER_DEFAULT})" if default else ")"))
    for spelling in old:
        p.add_argument(spelling, dest="kafka", help=argparse.SUPPRESS)


def add_output_option(p: argparse.ArgumentParser, help: str, *old: str, required: bool = False) -> None:
    """``-o/--output FILE``, what a command writes, named the same in every command."""
    p.add_argument("-o", "--output", metavar="FILE", required=required, help=help)
    for spelling in old:
        p.add_argument(spelling, dest="output", help=argparse.SUPPRESS)


def _add_signature_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--key", metavar="PUB", help="the signer's public key (dmtwin keys new writes PATH.pub)")
    p.add_argument("--checkpoints", metavar="FILE", help="signed checkpoints (default: LOG.checkpoints.jsonl "
                   "if it exists)")
    p.add_argument("--rejects", metavar="FILE", help="inputs refused when the log was written: LOG.rejects.jsonl "
                   "(the default if it exists) or an export of the dead-letter topic")
    p.add_argument("--accept-unsigned", action="store_true",
                   help="exit 0 for a log that is chained and clean but not signed")
    p.add_argument("--accept-unchained", action="store_true",
                   help="exit 0 for a clean log without hash chain (or signature)")


def _add_keys_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("keys", help="Ed25519 signing keys for the checkpoints: new | show")
    keys = p.add_subparsers(dest="keys_command", required=True)
    n = keys.add_parser("new", help="create a private key PATH (PEM, mode 600) and its public key PATH.pub")
    n.add_argument("path", help="where to write the private key (the public key goes to PATH.pub)")
    n.set_defaults(run=_keys_new)
    s = keys.add_parser("show", help="the key's fingerprint (SHA256: and 16 hex digits of sha256 of the raw "
                        "public key), from the private or the public key file")
    s.add_argument("path", help="the private key, or its .pub")
    s.add_argument("--json", action="store_true", help="print JSON: fingerprint, sha256, public key")
    s.set_defaults(run=_keys_show)


def _add_audit_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """``log export|import``, ``audit verify|explain|report`` and ``whatif``."""
    log_help = "event log (JSON Lines, .gz allowed; - for stdin; kafka://HOST:PORT for the event-log topic)"
    topic_help = "with kafka://: the topic (default: $DMTWIN_TOPIC_PREFIX + event-log)"
    p = sub.add_parser("log", help="export the event-log topic to a file, or import a file into a topic")
    log = p.add_subparsers(dest="log_command", required=True)
    e = log.add_parser("export", help="write the event-log topic (or part of it) to a file; resumable")
    e.add_argument("file", help="JSON Lines file to write (.gz compresses); an interrupted export resumes")
    add_kafka_option(e, "to read", "--from")
    e.add_argument("--topic", help="topic to export (default: $DMTWIN_TOPIC_PREFIX + event-log)")
    e.add_argument("--since", metavar="TIME", help="only events at or after TIME (at_ms or ISO-8601 UTC)")
    e.add_argument("--until", metavar="TIME", help="only events at or before TIME")
    e.add_argument("--host", action="append", default=[], help="only this host (repeat for several)")
    e.add_argument("--partition", type=int, action="append", default=[], help="only this partition (repeat)")
    e.add_argument("--offsets", metavar="FIRST:END", help="only offsets FIRST ≤ offset < END of each partition")
    e.add_argument("--fresh", action="store_true", help="start over: overwrite the file, forget the sidecar")
    e.add_argument("--max", type=int, metavar="N", help="stop after reading N messages (resume later)")
    e.add_argument("--checkpoints", nargs="?", const="", metavar="CFILE",
                   help="also export the checkpoints topic, first, to CFILE (default FILE.checkpoints.jsonl)")
    e.add_argument("--checkpoints-topic", metavar="T", help="default: $DMTWIN_TOPIC_PREFIX + checkpoints")
    add_kafka_security_options(e)
    e.set_defaults(run=_log_export)
    i = log.add_parser("import", help="send a log file to a topic, keyed by host, in order; resumable")
    i.add_argument("file", help="JSON Lines file (.gz allowed)")
    add_kafka_option(i, "to write to", "--to")
    i.add_argument("--topic", help="topic to write (default: $DMTWIN_TOPIC_PREFIX + event-log)")
    i.add_argument("--skip", type=int, metavar="N", help="start after the first N lines (default: resume)")
    i.add_argument("--partitions", type=int, default=4, help="partitions if the topic is created (default 4)")
    i.add_argument("--max", type=int, metavar="N", help="stop after sending N lines (resume later)")
    i.add_argument("--key", metavar="PRIVATE", help="sign checkpoints of the file's chains (checked first) and "
                   "send them to the checkpoints topic, as the worker does")
    i.add_argument("--checkpoints-topic", metavar="T", help="default: $DMTWIN_TOPIC_PREFIX + checkpoints")
    add_kafka_security_options(i)
    i.set_defaults(run=_log_import)

    p = sub.add_parser("audit", help="verify a log, explain a decision, or write an HTML report")
    audit = p.add_subparsers(dest="audit_command", required=True)
    v = audit.add_parser("verify", help="check the hash chain and the signed checkpoints, re-derive every "
                         "decision; exit 0 OK, 1 FAILED, 3 UNSIGNED, 4 UNCHAINED, 2 could not run, 5 broker unreachable")
    v.add_argument("log", help=log_help)
    v.add_argument("--topic", help=topic_help)
    v.add_argument("--heads", metavar="FILE", help="JSON {host: digest}: the last digest known for each host "
                   "(catches a log cut short)")
    _add_signature_options(v)
    v.add_argument("--jobs", type=int, default=None, help="verify hosts in N processes (default: every core "
                   "for a log file of 16 MiB or more, else 1)")
    v.add_argument("--json", action="store_true", help="print JSON")
    add_kafka_security_options(v)
    v.set_defaults(run=_audit_verify)
    x = audit.add_parser("explain", help="a VM's state at a moment, its last decision and why, in words")
    x.add_argument("log", help=log_help)
    x.add_argument("--vm", required=True, help="the VM's name")
    x.add_argument("--at", required=True, metavar="TIME", help="at_ms or ISO-8601 UTC, e.g. 2026-01-01T00:05:00Z")
    x.add_argument("--host", help="the VM's host, if several hosts have a VM of that name")
    x.add_argument("--topic", help=topic_help)
    x.add_argument("--json", action="store_true", help="print JSON")
    add_kafka_security_options(x)
    x.set_defaults(run=_audit_explain)
    r = audit.add_parser("report", help="self-contained HTML report: charts per host and VM, decisions")
    r.add_argument("log", help=log_help)
    add_output_option(r, "HTML file to write", required=True)
    r.add_argument("--whatif-policy", choices=("hyperv", "squeezed", "mom", "esx", "foresight", "all"),
                   help="also compare with a replay under this policy (all: every policy, a table and a plot)")
    r.add_argument("--topic", help=topic_help)
    _add_signature_options(r)
    add_kafka_security_options(r)
    r.set_defaults(run=_audit_report)

    w = sub.add_parser("whatif", help="replay the recorded inputs with another policy, host size or settings")
    w.add_argument("log", help=log_help)
    w.add_argument("--policy", choices=("hyperv", "squeezed", "mom", "esx", "foresight", "all"),
                   help="every host's balancer policy (foresight: dmtwin's own), or all: every policy on the "
                        "same log, one table and a plot")
    w.add_argument("--host-mib", type=int, metavar="N", help="every host's total memory")
    w.add_argument("--reserve-mib", type=int, metavar="N", help="every host's reserve")
    w.add_argument("--set", action="append", default=[], metavar="VM.field=value",
                   help="a VM setting (VM may be *), e.g. web-01.maximum_mib=8192; repeat for several")
    w.add_argument("--response-ms", type=int, help="how long simulated guests take to answer (default: as recorded)")
    w.add_argument("--topic", help=topic_help)
    w.add_argument("--json", action="store_true", help="print JSON")
    add_kafka_security_options(w)
    w.set_defaults(run=_whatif)


def build_parser() -> argparse.ArgumentParser:
    from twin import __version__

    parser = argparse.ArgumentParser(prog="dmtwin", description="A digital twin of Hyper-V Dynamic Memory.",
                                     epilog="Exit codes: 0 done, 1 the answer is no, 2 bad input, 3/4 audit verify "
                                     "UNSIGNED/UNCHAINED, 5 broker or port unavailable, 70 a bug, 130 Ctrl-C "
                                     "(docs/cli.md).")
    parser.add_argument("--version", action="version", version=f"dmtwin {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="on a failure, print the traceback too (any command; or DMTWIN_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("simulate", help="run a scenario and write its event log (JSON Lines)")
    p.add_argument("scenario", help="scenario file (.toml or .json), see examples/")
    add_output_option(p, "log file to write (.gz compresses); default stdout")
    add_kafka_option(p, "to stream to instead, answering the twin's commands as the guests would", "--to",
                     default=False)
    p.add_argument("--speed", type=float, default=1.0,
                   help="with --kafka: event seconds per wall second (1 = real time, 0 = as fast as possible)")
    p.add_argument("--per-guest", action="store_true",
                   help="with --kafka: one message per guest report instead of one frame per host and second")
    p.add_argument("--forever", action="store_true",
                   help="with --kafka: go on until stopped, the workloads starting over after duration_s")
    p.add_argument("--keep-start", action="store_true",
                   help="with --kafka: use the scenario's start_ms instead of the current time")
    p.add_argument("--key", metavar="PRIVATE", help="with -o FILE: sign checkpoints into FILE.checkpoints.jsonl")
    p.add_argument("--checkpoint-every", type=float, default=10.0, metavar="SECONDS",
                   help="with --key: a checkpoint per host every SECONDS of event time, and at the end (default 10)")
    add_kafka_security_options(p)
    p.set_defaults(run=_simulate)

    p = sub.add_parser("worker", help="run the Faust worker (several share hosts through the consumer group)")
    add_kafka_option(p, "to consume from and produce to", "--broker")
    p.add_argument("--data-dir", help="where Faust keeps its own files (the hosts' state lives in Kafka)")
    p.add_argument("--partitions", type=int, help="partitions of the input topics (default 4)")
    p.add_argument("--web-host", help="address of the /hosts/ page (default 127.0.0.1; 0.0.0.0 for all)")
    p.add_argument("--web-port", type=int, help="port of the /hosts/ page (default 6066)")
    p.add_argument("--metrics-host", help="address of the Prometheus exposition (default 127.0.0.1)")
    p.add_argument("--metrics-port", type=int, help="Prometheus port (default 9108, 0 = off)")
    p.add_argument("--key", help="Ed25519 private key that signs checkpoints of every host's chain "
                                 "(dmtwin keys new; default $DMTWIN_KEY)")
    p.add_argument("--lateness-ms", type=int,
                   help="how late an input may arrive and still be folded (default 300000)")
    p.add_argument("--app-id", help="consumer group (default dmtwin)")
    p.add_argument("--loglevel", default="warning", choices=("debug", "info", "warning", "error", "critical"),
                   help="how much Faust logs (default warning)")
    add_kafka_security_options(p)
    p.set_defaults(run=_worker)

    p = sub.add_parser("replay", help="fold an event log and print state, decisions and counters")
    p.add_argument("log", help="event log (JSON Lines, .gz allowed; - for stdin)")
    p.add_argument("--json", action="store_true", help="print canonical JSON instead of tables")
    p.add_argument("--no-decisions", action="store_true", help="leave the list of decisions out")
    p.add_argument("--rejects", metavar="FILE", help="write every rejected line, with its reason, here")
    p.add_argument("--serve", type=int, metavar="PORT",
                   help="then serve the replayed counters for Prometheus until Ctrl-C")
    p.add_argument("--openmetrics", metavar="FILE",
                   help="also write the counters over event time as OpenMetrics text, for "
                   "promtool tsdb create-blocks-from openmetrics FILE DIR (docs/metrics.md)")
    p.add_argument("--step", type=float, default=60.0, metavar="SECONDS",
                   help="with --openmetrics: a sample of each series every SECONDS of event time (default 60)")
    p.set_defaults(run=_replay)

    p = sub.add_parser("schema", help="write the JSON Schema of every event")
    add_output_option(p, "folder to write to (default docs/schemas)", "--out")
    p.set_defaults(run=_schema)

    _add_audit_commands(sub)
    _add_keys_commands(sub)
    add_lab_commands(sub)

    for name, (_, _, description) in PASSTHROUGH.items():
        sub.add_parser(name, help=description, add_help=False)
    return parser


PASSTHROUGH = {
    "kafka": ("streams.kafka.command", "main", "fetch, start, stop a local single-node Kafka: up | down | status"),
    "ingest": ("streams.telemetry.ingest", "ingest_main",
               "turn a telemetry source (perfmon, meminfo, virsh, bitbrains, synthetic) into events"),
    "agent": ("streams.telemetry.agent", "agent_main", "report this Linux machine's memory as a guest, every second"),
    "top": ("streams.ops.top", "top_main", "live table of every VM, like Hyper-V Manager's memory columns"),
    "study": ("streams.ops.study", "study_main", "a capacity study of a trace at its own time, every policy"),
}
"""Commands with a parser of their own: ``dmtwin NAME --help`` shows their options."""
