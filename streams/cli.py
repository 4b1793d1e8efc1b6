"""The ``dmtwin`` command line.

Offline commands (``simulate``, ``replay``, ``schema``) use only the pure core in ``twin``; the
commands that need Kafka or Faust import them lazily, so the offline ones start fast and work
without a broker.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from .lab.cli import add_commands as add_lab_commands

__all__ = ["main"]


def _simulate(args: argparse.Namespace) -> int:
    if args.to:
        return _simulate_to_kafka(args)
    from twin.errors import Rejected
    from twin.events import InputEvent
    from twin.scenario import load_scenario, simulate

    from .trail import checkpoints_path, rejects_path, write_trail

    scenario = load_scenario(args.scenario)
    signer = _signer(args.key)
    refused: list[tuple[InputEvent, Rejected]] = []
    # Chained like the worker's log; signed checkpoints and refused inputs beside it.
    stats = write_trail(simulate(scenario, refused=refused), args.output, signer,
                        round(args.checkpoint_every * 1000), "simulate", refused)
    to_file = args.output not in (None, "-")
    if not to_file:  # no rejects file next to stdout: say it here
        for _, error in refused:
            print(f"dmtwin simulate: left out: {error}", file=sys.stderr)
    where = args.output if to_file else "stdout"
    print(f"dmtwin simulate: {stats.lines} events written to {where}"
          + (f"; {stats.rejects} refused inputs in {rejects_path(args.output)}" if to_file else "")
          + (f"; {stats.checkpoints} checkpoints signed by {signer.public_key.short} in "
             f"{checkpoints_path(args.output)}" if signer is not None else ""), file=sys.stderr)
    return 0


def _signer(path: str | None):  # type: ignore[no-untyped-def]
    if path is None:
        return None
    from .keys import load_signer

    return load_signer(path)


def _keys_new(args: argparse.Namespace) -> int:
    from .keys import new_key

    private, public, key = new_key(args.path)
    print(f"dmtwin keys: private key {private} (mode 600: keep it secret), public key {public}", file=sys.stderr)
    print(key.short)
    return 0


def _keys_show(args: argparse.Namespace) -> int:
    from .keys import load_any

    key = load_any(args.path)
    print(f"{key.short}  ed25519, sha256 of the raw public key {key.fingerprint}, public key {key.raw.hex()}")
    return 0


def _simulate_to_kafka(args: argparse.Namespace) -> int:
    import asyncio
    import time

    from twin.scenario import load_scenario

    from .feed import feed, parse_kafka_url
    from .settings import Settings

    settings = Settings()
    scenario = load_scenario(args.scenario)
    if not args.keep_start:  # live runs happen now: event time follows the wall clock from here
        scenario = scenario.model_copy(update={"start_ms": int(time.time()) * 1000})
    try:
        stats = asyncio.run(feed(scenario, parse_kafka_url(args.to), settings.topics, speed=args.speed,
                                 per_guest=args.per_guest, partitions=settings.partitions, loop=args.forever))
    except KeyboardInterrupt:
        return 0
    print(f"dmtwin simulate: {stats.seconds} s of event time, {stats.reports} reports in "
          f"{stats.messages} messages, {stats.answers} commands answered", file=sys.stderr)
    return 0


def _worker(args: argparse.Namespace) -> int:
    import asyncio
    import dataclasses

    import faust

    from .app import Worker
    from .feed import ensure_topics
    from .settings import Settings

    overrides = {k: v for k, v in {
        "broker": args.broker, "data_dir": args.data_dir and Path(args.data_dir),
        "partitions": args.partitions, "web_host": args.web_host, "web_port": args.web_port,
        "metrics_host": args.metrics_host, "metrics_port": args.metrics_port, "app_id": args.app_id,
        "lateness_ms": args.lateness_ms, "key_path": args.key}.items() if v is not None}
    settings = dataclasses.replace(Settings(), **overrides)
    # Topics first: a consumer group ignores topics that do not exist when it joins.
    asyncio.run(ensure_topics(settings.broker, settings.topics, settings.partitions,
                              snapshots=f"{settings.app_id}-snapshots"))
    worker = Worker(settings)
    if settings.metrics_port:
        from .metrics import serve

        serve(worker.registry, settings.metrics_port, settings.metrics_host)
    print(f"dmtwin worker: broker {settings.broker}; hosts at "
          f"http://{settings.web_host}:{settings.web_port}/hosts/, metrics at "
          f"http://{settings.metrics_host}:{settings.metrics_port}/metrics", file=sys.stderr)
    try:
        faust.Worker(worker.app, loglevel=args.loglevel).execute_from_commandline()
    except SystemExit as done:
        return int(done.code or 0)
    return 0


def _replay(args: argparse.Namespace) -> int:
    from twin.log import open_log, replay
    from twin.report import summary, to_json, to_text

    with (open_log(args.log) if args.log != "-" else sys.stdin) as lines:
        result = replay(lines)
    data = summary(result, decisions=not args.no_decisions)
    sys.stdout.write(to_json(data) + "\n" if args.json else to_text(data))
    if args.rejects:
        with open(args.rejects, "w", encoding="utf-8") as out:
            for error, line in zip(result.rejected, result.rejected_lines):
                out.write(json.dumps({**error.as_dict(), "line": line}, sort_keys=True) + "\n")
    for error in result.rejected:
        print(f"dmtwin replay: rejected {error}", file=sys.stderr)
    if args.serve is not None:
        from .metrics import serve_replay

        serve_replay(result, args.serve)
    return 0


def _schema(args: argparse.Namespace) -> int:
    from twin.schema import write_schemas

    written = write_schemas(Path(args.out))
    print(f"dmtwin schema: {len(written)} schemas in {args.out}", file=sys.stderr)
    return 0


def _broker_url() -> str:
    import os

    return "kafka://" + os.environ.get("DMTWIN_BROKER", "localhost:9092")


def _event_log_topic(topic: str | None) -> str:
    from .logtool import _default_topic

    return topic or _default_topic()


def _log_export(args: argparse.Namespace) -> int:
    from twin.audit import parse_time

    from .logtool import ExportFilter, export_log, kafka_url

    bootstrap = kafka_url(args.source or _broker_url())
    if bootstrap is None:
        raise ValueError(f"--from={args.source!r}: expected kafka://HOST:PORT")
    first = end = None
    if args.offsets:
        low, _, high = args.offsets.partition(":")
        first, end = (int(low) if low else None), (int(high) if high else None)
    filt = ExportFilter(since_ms=parse_time(args.since) if args.since else None,
                        until_ms=parse_time(args.until) if args.until else None,
                        hosts=tuple(args.host), partitions=tuple(args.partition), first_offset=first, end_offset=end)
    checkpoints = None
    if args.checkpoints is not None:
        from .trail import checkpoints_path

        if args.since or args.until or args.offsets or args.max:
            raise ValueError("--checkpoints needs each host's whole log (a checkpoint counts the host's lines "
                             "from its first): leave out --since, --until, --offsets and --max")
        checkpoints = args.checkpoints or str(checkpoints_path(args.file))
        # The checkpoints first: every one of them then covers lines the log export will hold.
        cp_filter = ExportFilter(hosts=filt.hosts, partitions=filt.partitions)
        cp_stats = export_log(bootstrap, _checkpoints_topic(args.checkpoints_topic), checkpoints, cp_filter,
                              fresh=args.fresh)
        print(f"dmtwin log export: {cp_stats.written} checkpoints in {checkpoints}", file=sys.stderr)
    stats = export_log(bootstrap, _event_log_topic(args.topic), args.file, filt, fresh=args.fresh,
                       max_messages=args.max)
    print(f"dmtwin log export: {stats.written} lines in {args.file}"
          + (" (resumed)" if stats.resumed else ""), file=sys.stderr)
    return 0


def _checkpoints_topic(topic: str | None) -> str:
    import os

    from .topics import Topics

    return topic or Topics(os.environ.get("DMTWIN_TOPIC_PREFIX", "dmtwin.")).checkpoints


def _log_import(args: argparse.Namespace) -> int:
    from .logtool import import_log, kafka_url

    bootstrap = kafka_url(args.to)
    if bootstrap is None:
        raise ValueError(f"--to={args.to!r}: expected kafka://HOST:PORT")
    signer = _signer(args.key)
    stats = import_log(args.file, bootstrap, _event_log_topic(args.topic), skip=args.skip,
                       partitions=args.partitions, max_messages=args.max, signer=signer,
                       checkpoints_topic=_checkpoints_topic(args.checkpoints_topic) if signer else None)
    print(f"dmtwin log import: {stats.sent} lines sent, {stats.skipped} skipped, {stats.already_there} were "
          "already on the topic"
          + (f"; {stats.checkpoints} checkpoints signed by {signer.public_key.short}" if signer else ""),
          file=sys.stderr)
    return 0


def _log_source(args: argparse.Namespace, again: bool = False):  # type: ignore[no-untyped-def]
    """The log's lines; with ``again``, a function giving them anew (a topic is read once)."""
    from .logtool import kafka_url, open_lines

    if not again:
        return open_lines(args.log, args.topic)
    if kafka_url(args.log) is None and args.log != "-":
        return lambda: open_lines(args.log, args.topic)
    lines = list(open_lines(args.log, args.topic))
    return lambda: iter(lines)


def _side_file(args: argparse.Namespace, given: str | None, kind: str) -> Path | None:
    """The checkpoints or rejects file: as given, else next to a log file if there is one."""
    from .logtool import kafka_url
    from .trail import checkpoints_path, rejects_path

    if given is not None:
        return Path(given)
    if args.log == "-" or kafka_url(args.log) is not None:
        return None
    path = checkpoints_path(args.log) if kind == "checkpoints" else rejects_path(args.log)
    return path if path.exists() else None


def _verification(args: argparse.Namespace, lines):  # type: ignore[no-untyped-def]
    """Verify ``lines`` as ``audit verify`` and ``audit report`` do: chain, checkpoints, decisions."""
    from twin.audit import read_refusals, verify

    heads = json.loads(Path(args.heads).read_text()) if getattr(args, "heads", None) else None
    key = None
    if args.key:
        from .keys import load_public

        key = load_public(args.key)
    checkpoints_file = _side_file(args, args.checkpoints, "checkpoints")
    checkpoint_lines = checkpoints_file.read_bytes().splitlines() if checkpoints_file is not None else None
    if getattr(args, "jobs", 1) > 1:
        from .logtool import verify_parallel

        result = verify_parallel(lines, args.jobs, heads, key, checkpoint_lines)
    else:
        from twin.signing import CheckpointCheck

        check = CheckpointCheck(key, checkpoint_lines) if checkpoint_lines is not None else None
        result = verify(lines, heads, check)
    if key is not None:
        result.key = key.fingerprint
    rejects_file = _side_file(args, args.rejects, "rejects")
    if rejects_file is not None:
        result.refused = read_refusals(rejects_file.read_bytes().splitlines())
    return result


def _audit_verify(args: argparse.Namespace) -> int:
    result = _verification(args, _log_source(args))
    allow = {"accept_unsigned": args.accept_unsigned, "accept_unchained": args.accept_unchained}
    sys.stdout.write(json.dumps(result.to_dict(**allow), indent=2, ensure_ascii=False) + "\n" if args.json
                     else result.to_text(**allow))
    return result.exit_code(**allow)


def _audit_explain(args: argparse.Namespace) -> int:
    from twin.audit import explain, parse_time

    result = explain(_log_source(args), args.vm, parse_time(args.at), args.host)
    sys.stdout.write(json.dumps(result.to_dict(), indent=2, ensure_ascii=False) + "\n" if args.json
                     else result.to_text())
    return 0 if result.record is not None or result.decision is not None else 1


def _audit_report(args: argparse.Namespace) -> int:
    from twin.htmlreport import render_report
    from twin.whatif import Changes, whatif

    import hashlib
    import time

    from twin.htmlreport import Evidence
    from twin.log import peek

    lines = _log_source(args, again=True)
    digest = hashlib.sha256()
    times: list[int] = []

    def measured():  # type: ignore[no-untyped-def]
        first = last = None
        for line in lines():
            digest.update(line if line.endswith(b"\n") else line + b"\n")
            head = peek(line)
            if head is not None:
                first = head[0] if first is None else min(first, head[0])
                last = head[0] if last is None else max(last, head[0])
            yield line
        times.extend(t for t in (first, last) if t is not None)

    checked = _verification(args, measured())
    changes = Changes(policy=args.whatif_policy) if args.whatif_policy else None
    run = whatif(lines(), changes, record=True)
    allow = {"accept_unsigned": args.accept_unsigned, "accept_unchained": args.accept_unchained}
    evidence = Evidence(log_sha256=digest.hexdigest(), first_ms=times[0] if times else None,
                        last_ms=times[1] if times else None, generated_ms=int(time.time() * 1000),
                        key=checked.key, verdict=checked.verdict(**allow), status=checked.status,
                        accepted=checked.accepted(**allow))
    Path(args.output).write_text(render_report(run, checked, source=args.log, evidence=evidence), encoding="utf-8")
    print(f"dmtwin audit report: {args.output}: {checked.verdict(**allow)}", file=sys.stderr)
    return 0


def _whatif(args: argparse.Namespace) -> int:
    from twin.whatif import Changes, parse_setting, whatif

    settings: dict[str, dict[str, int | bool]] = {}
    for text in args.set:
        vm, name, value = parse_setting(text)
        settings.setdefault(vm, {})[name] = value
    changes = Changes(policy=args.policy, host_mib=args.host_mib, reserve_mib=args.reserve_mib, settings=settings)
    result = whatif(_log_source(args), changes, response_ms=args.response_ms)
    sys.stdout.write(json.dumps(result.to_dict(), indent=2, ensure_ascii=False) + "\n" if args.json
                     else result.to_text())
    return 0


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
    n.add_argument("path")
    n.set_defaults(run=_keys_new)
    s = keys.add_parser("show", help="the key's fingerprint (SHA256: and 16 hex digits of sha256 of the raw "
                        "public key), from the private or the public key file")
    s.add_argument("path")
    s.set_defaults(run=_keys_show)


def _add_audit_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """``log export|import``, ``audit verify|explain|report`` and ``whatif``."""
    log_help = "event log (JSON Lines, .gz allowed; - for stdin; kafka://HOST:PORT for the event-log topic)"
    topic_help = "with kafka://: the topic (default: $DMTWIN_TOPIC_PREFIX + event-log)"
    p = sub.add_parser("log", help="export the event-log topic to a file, or import a file into a topic")
    log = p.add_subparsers(dest="log_command", required=True)
    e = log.add_parser("export", help="write the event-log topic (or part of it) to a file; resumable")
    e.add_argument("file", help="JSON Lines file to write (.gz compresses); an interrupted export resumes")
    e.add_argument("--from", dest="source", metavar="kafka://HOST:PORT", help="broker (default $DMTWIN_BROKER)")
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
    e.set_defaults(run=_log_export)
    i = log.add_parser("import", help="send a log file to a topic, keyed by host, in order; resumable")
    i.add_argument("file", help="JSON Lines file (.gz allowed)")
    i.add_argument("--to", required=True, metavar="kafka://HOST:PORT")
    i.add_argument("--topic", help="topic to write (default: $DMTWIN_TOPIC_PREFIX + event-log)")
    i.add_argument("--skip", type=int, metavar="N", help="start after the first N lines (default: resume)")
    i.add_argument("--partitions", type=int, default=4, help="partitions if the topic is created (default 4)")
    i.add_argument("--max", type=int, metavar="N", help="stop after sending N lines (resume later)")
    i.add_argument("--key", metavar="PRIVATE", help="sign checkpoints of the file's chains (checked first) and "
                   "send them to the checkpoints topic, as the worker does")
    i.add_argument("--checkpoints-topic", metavar="T", help="default: $DMTWIN_TOPIC_PREFIX + checkpoints")
    i.set_defaults(run=_log_import)

    p = sub.add_parser("audit", help="verify a log, explain a decision, or write an HTML report")
    audit = p.add_subparsers(dest="audit_command", required=True)
    v = audit.add_parser("verify", help="check the hash chain and the signed checkpoints, re-derive every "
                         "decision; exit 0 OK, 1 FAILED, 3 UNSIGNED, 4 UNCHAINED, 2 could not run")
    v.add_argument("log", help=log_help)
    v.add_argument("--topic", help=topic_help)
    v.add_argument("--heads", metavar="FILE", help="JSON {host: digest}: the last digest known for each host "
                   "(catches a log cut short)")
    _add_signature_options(v)
    v.add_argument("--jobs", type=int, default=1, help="verify hosts in N processes (default 1)")
    v.add_argument("--json", action="store_true", help="print JSON")
    v.set_defaults(run=_audit_verify)
    x = audit.add_parser("explain", help="a VM's state at a moment, its last decision and why, in words")
    x.add_argument("log", help=log_help)
    x.add_argument("--vm", required=True)
    x.add_argument("--at", required=True, metavar="TIME", help="at_ms or ISO-8601 UTC, e.g. 2026-01-01T00:05:00Z")
    x.add_argument("--host", help="the VM's host, if several hosts have a VM of that name")
    x.add_argument("--topic", help=topic_help)
    x.add_argument("--json", action="store_true", help="print JSON")
    x.set_defaults(run=_audit_explain)
    r = audit.add_parser("report", help="self-contained HTML report: charts per host and VM, decisions")
    r.add_argument("log", help=log_help)
    r.add_argument("-o", "--output", required=True, help="HTML file to write")
    r.add_argument("--whatif-policy", choices=("hyperv", "squeezed", "mom", "esx"),
                   help="also compare with a replay under this policy")
    r.add_argument("--topic", help=topic_help)
    _add_signature_options(r)
    r.set_defaults(run=_audit_report)

    w = sub.add_parser("whatif", help="replay the recorded inputs with another policy, host size or settings")
    w.add_argument("log", help=log_help)
    w.add_argument("--policy", choices=("hyperv", "squeezed", "mom", "esx"))
    w.add_argument("--host-mib", type=int, metavar="N", help="every host's total memory")
    w.add_argument("--reserve-mib", type=int, metavar="N", help="every host's reserve")
    w.add_argument("--set", action="append", default=[], metavar="VM.field=value",
                   help="a VM setting (VM may be *), e.g. web-01.maximum_mib=8192; repeat for several")
    w.add_argument("--response-ms", type=int, help="how long simulated guests take to answer (default: as recorded)")
    w.add_argument("--topic", help=topic_help)
    w.add_argument("--json", action="store_true", help="print JSON")
    w.set_defaults(run=_whatif)


def build_parser() -> argparse.ArgumentParser:
    from twin import __version__

    parser = argparse.ArgumentParser(prog="dmtwin", description="A digital twin of Hyper-V Dynamic Memory.")
    parser.add_argument("--version", action="version", version=f"dmtwin {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("simulate", help="run a scenario and write its event log (JSON Lines)")
    p.add_argument("scenario", help="scenario file (.toml or .json), see examples/")
    p.add_argument("-o", "--output", help="log file to write (.gz compresses); default stdout")
    p.add_argument("--to", metavar="kafka://HOST:PORT",
                   help="stream to Kafka instead, and answer the twin's commands as the guests would")
    p.add_argument("--speed", type=float, default=1.0,
                   help="with --to: event seconds per wall second (1 = real time, 0 = as fast as possible)")
    p.add_argument("--per-guest", action="store_true",
                   help="with --to: one message per guest report instead of one frame per host and second")
    p.add_argument("--forever", action="store_true",
                   help="with --to: go on until stopped, the workloads starting over after duration_s")
    p.add_argument("--keep-start", action="store_true",
                   help="with --to: use the scenario's start_ms instead of the current time")
    p.add_argument("--key", metavar="PRIVATE", help="with -o FILE: sign checkpoints into FILE.checkpoints.jsonl")
    p.add_argument("--checkpoint-every", type=float, default=10.0, metavar="SECONDS",
                   help="with --key: a checkpoint per host every SECONDS of event time, and at the end (default 10)")
    p.set_defaults(run=_simulate)

    p = sub.add_parser("worker", help="run the Faust worker (several share hosts through the consumer group)")
    p.add_argument("--broker", help="Kafka bootstrap host:port (default $DMTWIN_BROKER or localhost:9092)")
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
    p.add_argument("--loglevel", default="warning")
    p.set_defaults(run=_worker)

    p = sub.add_parser("replay", help="fold an event log and print state, decisions and counters")
    p.add_argument("log", help="event log (JSON Lines, .gz allowed; - for stdin)")
    p.add_argument("--json", action="store_true", help="print canonical JSON instead of tables")
    p.add_argument("--no-decisions", action="store_true", help="leave the list of decisions out")
    p.add_argument("--rejects", metavar="FILE", help="write every rejected line, with its reason, here")
    p.add_argument("--serve", type=int, metavar="PORT",
                   help="then serve the replayed counters for Prometheus until Ctrl-C")
    p.set_defaults(run=_replay)

    p = sub.add_parser("schema", help="write the JSON Schema of every event")
    p.add_argument("--out", default="docs/schemas", help="folder to write to (default docs/schemas)")
    p.set_defaults(run=_schema)

    _add_audit_commands(sub)
    _add_keys_commands(sub)
    add_lab_commands(sub)

    for name, (_, _, description) in PASSTHROUGH.items():
        sub.add_parser(name, help=description, add_help=False)
    return parser


PASSTHROUGH = {
    "kafka": ("streams.broker", "main", "fetch, start, stop a local single-node Kafka: up | down | status"),
    "ingest": ("streams.ingest", "ingest_main",
               "turn a telemetry source (perfmon, meminfo, virsh, bitbrains, synthetic) into events"),
    "agent": ("streams.agent", "agent_main", "report this Linux machine's memory as a guest, every second"),
    "top": ("streams.top", "top_main", "live table of every VM, like Hyper-V Manager's memory columns"),
}
"""Commands with a parser of their own: ``dmtwin NAME --help`` shows their options."""


def _passthrough(name: str, rest: list[str]) -> int:
    import importlib

    module, function, _ = PASSTHROUGH[name]
    entry = getattr(importlib.import_module(module), function)
    if name == "ingest":
        from .sink import sink_for

        return int(entry(rest, sink_factory=sink_for))
    return int(entry(rest))


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] and argv[0] in PASSTHROUGH:
        return _passthrough(argv[0], argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except (OSError, ValueError) as error:
        print(f"dmtwin {args.command}: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
