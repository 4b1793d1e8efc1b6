"""What each ``dmtwin`` subcommand does, given its parsed arguments (``args.run(args)``).

Offline commands (``simulate``, ``replay``, ``schema``) use only the pure core in ``twin``; the
commands that need Kafka or Faust import them lazily, so the offline ones start fast and work
without a broker.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .failure import UNREACHABLE, Failure, reach_broker


def _simulate(args: argparse.Namespace) -> int:
    if args.kafka:
        from .live import _simulate_to_kafka

        return _simulate_to_kafka(args)
    from twin.errors import Rejected
    from twin.events import InputEvent
    from twin.scenario import load_scenario, simulate

    from ..audit.trail import checkpoints_path, rejects_path, write_trail

    scenario = load_scenario(args.scenario)
    signer = _signer(args.key)
    refused: list[tuple[InputEvent, Rejected]] = []
    # Chained like the worker's log; signed checkpoints and refused inputs beside it.
    stats = write_trail(simulate(scenario, refused=refused, framed=True), args.output, signer,
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
    from ..audit.keys import load_signer

    return load_signer(path)


def _keys_new(args: argparse.Namespace) -> int:
    from ..audit.keys import new_key

    private, public, key = new_key(args.path)
    print(f"dmtwin keys: private key {private} (mode 600: keep it secret), public key {public}", file=sys.stderr)
    print(key.short)
    return 0


def _keys_show(args: argparse.Namespace) -> int:
    from ..audit.keys import load_any

    key = load_any(args.path)
    if args.json:
        print(json.dumps({"fingerprint": key.short, "sha256": key.fingerprint, "public_key": key.raw.hex(),
                          "algorithm": "ed25519"}, indent=2))
        return 0
    print(f"{key.short}  ed25519, sha256 of the raw public key {key.fingerprint}, public key {key.raw.hex()}")
    return 0


def _replay(args: argparse.Namespace) -> int:
    from twin.log import open_log, replay
    from twin.report import summary, to_json, to_text

    from .progress import with_progress

    with (open_log(args.log) if args.log != "-" else sys.stdin) as file:
        lines = with_progress(file, args.log, "replay")
        if args.openmetrics:
            from ..ops.history import write_history

            result, history = write_history(lines, args.openmetrics, args.step)
            print(f"dmtwin replay: {history.series} series, {history.samples} samples at {history.instants} "
                  f"instants in {args.openmetrics}", file=sys.stderr)
        else:
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
        import errno

        from ..ops.serving import serve_replay

        try:
            serve_replay(result, args.serve)
        except OSError as error:
            if error.errno != errno.EADDRINUSE:
                raise
            raise Failure(f"port {args.serve} (--serve) is taken (address already in use): stop the program "
                          "that holds it, or choose another with --serve PORT", UNREACHABLE) from None
    return 0


def _schema(args: argparse.Namespace) -> int:
    from twin.schema import write_schemas

    out = args.output or "docs/schemas"
    written = write_schemas(Path(out))
    print(f"dmtwin schema: {len(written)} schemas in {out}", file=sys.stderr)
    return 0


def _broker(args: argparse.Namespace) -> str:
    """The broker of ``--kafka``, else ``$DMTWIN_BROKER``, else localhost:9092, once something
    listens there (``Failure`` at once, exit 5, if nothing does)."""
    import os

    if args.kafka:
        return reach_broker(args.kafka)
    return reach_broker(os.environ.get("DMTWIN_BROKER", "localhost:9092"), "DMTWIN_BROKER")


def _event_log_topic(topic: str | None) -> str:
    from ..audit.logtool import _default_topic

    return topic or _default_topic()


def _log_export(args: argparse.Namespace) -> int:
    from twin.audit import parse_time

    from ..audit.transfer import ExportFilter, export_log
    from ..kafka.security import security_from_args

    security = security_from_args(args)
    bootstrap = _broker(args)
    first = end = None
    if args.offsets:
        low, _, high = args.offsets.partition(":")
        first, end = (int(low) if low else None), (int(high) if high else None)
    filt = ExportFilter(since_ms=parse_time(args.since) if args.since else None,
                        until_ms=parse_time(args.until) if args.until else None,
                        hosts=tuple(args.host), partitions=tuple(args.partition), first_offset=first, end_offset=end)
    checkpoints = None
    if args.checkpoints is not None:
        from ..audit.trail import checkpoints_path

        if args.since or args.until or args.offsets or args.max:
            raise ValueError("--checkpoints needs each host's whole log (a checkpoint counts the host's lines "
                             "from its first): leave out --since, --until, --offsets and --max")
        checkpoints = args.checkpoints or str(checkpoints_path(args.file))
        # The checkpoints first: every one of them then covers lines the log export will hold.
        cp_filter = ExportFilter(hosts=filt.hosts, partitions=filt.partitions)
        cp_stats = export_log(bootstrap, _checkpoints_topic(args.checkpoints_topic), checkpoints, cp_filter,
                              fresh=args.fresh, security=security)
        print(f"dmtwin log export: {cp_stats.written} checkpoints in {checkpoints}", file=sys.stderr)
    stats = export_log(bootstrap, _event_log_topic(args.topic), args.file, filt, fresh=args.fresh,
                       max_messages=args.max, security=security)
    print(f"dmtwin log export: {stats.written} lines in {args.file}"
          + (" (resumed)" if stats.resumed else ""), file=sys.stderr)
    return 0


def _checkpoints_topic(topic: str | None) -> str:
    import os

    from ..kafka.topics import Topics

    return topic or Topics(os.environ.get("DMTWIN_TOPIC_PREFIX", "dmtwin.")).checkpoints


def _log_import(args: argparse.Namespace) -> int:
    from ..audit.transfer import import_log
    from ..kafka.security import security_from_args

    security = security_from_args(args)
    bootstrap = _broker(args)
    signer = _signer(args.key)
    stats = import_log(args.file, bootstrap, _event_log_topic(args.topic), skip=args.skip,
                       partitions=args.partitions, max_messages=args.max, signer=signer,
                       checkpoints_topic=_checkpoints_topic(args.checkpoints_topic) if signer else None,
                       security=security)
    print(f"dmtwin log import: {stats.sent} lines sent, {stats.skipped} skipped, {stats.already_there} were "
          "already on the topic"
          + (f"; {stats.checkpoints} checkpoints signed by {signer.public_key.short}" if signer else ""),
          file=sys.stderr)
    return 0


def _log_source(args: argparse.Namespace, again: bool = False, linger: bool = False):  # type: ignore[no-untyped-def]
    """The log's lines; with ``again``, a function giving them anew (a topic is read once)."""
    from ..audit.logtool import kafka_url, open_lines
    from ..kafka.security import security_from_args

    if kafka_url(args.log) is not None:
        reach_broker(args.log, "LOG")
    elif args.log != "-" and not Path(args.log).is_file():
        raise Failure(f"{args.log}: no such file: give a log file, - for stdin, or kafka://HOST:PORT")
    from .progress import with_progress

    # Only a topic needs the Kafka settings: a file is read whatever DMTWIN_KAFKA_* say.
    security = security_from_args(args) if kafka_url(args.log) is not None else None
    what = " ".join(getattr(args, "words", ["reading"]))
    if not again:
        return with_progress(open_lines(args.log, args.topic, security), args.log, what, linger)
    if kafka_url(args.log) is None and args.log != "-":
        return lambda: with_progress(open_lines(args.log, args.topic), args.log, what)
    lines = list(with_progress(open_lines(args.log, args.topic, security), args.log, what))
    return lambda: iter(lines)


def _side_file(args: argparse.Namespace, given: str | None, kind: str) -> Path | None:
    """The checkpoints or rejects file: as given, else next to a log file if there is one."""
    from ..audit.logtool import kafka_url
    from ..audit.trail import checkpoints_path, rejects_path

    if given is not None:
        return Path(given)
    if args.log == "-" or kafka_url(args.log) is not None:
        return None
    path = checkpoints_path(args.log) if kind == "checkpoints" else rejects_path(args.log)
    return path if path.exists() else None


PARALLEL_FROM_BYTES = 16 << 20
"""A log file at least this big is verified on every core unless ``--jobs`` says otherwise (smaller
ones finish before the processes would have started)."""


def _jobs(args: argparse.Namespace) -> int:
    """Processes for verify: ``--jobs``, else every core for a big log file."""
    import os

    from ..audit.logtool import kafka_url

    jobs = getattr(args, "jobs", 1)
    if jobs is not None:
        return max(1, jobs)
    if args.log == "-" or kafka_url(args.log) is not None or not Path(args.log).is_file():
        return 1
    return (os.cpu_count() or 1) if Path(args.log).stat().st_size >= PARALLEL_FROM_BYTES else 1


def _verification(args: argparse.Namespace, lines):  # type: ignore[no-untyped-def]
    """Verify ``lines`` as ``audit verify`` and ``audit report`` do: chain, checkpoints, decisions."""
    from twin.audit import read_refusals, verify

    heads = None
    if getattr(args, "heads", None):
        try:
            heads = json.loads(Path(args.heads).read_text())
        except ValueError as error:
            raise Failure(f"{args.heads}: not valid JSON ({error}): --heads wants {{\"HOST\": \"DIGEST\", ...}}") from None
    key = None
    if args.key:
        from ..audit.keys import load_public

        key = load_public(args.key)
    checkpoints_file = _side_file(args, args.checkpoints, "checkpoints")
    checkpoint_lines = checkpoints_file.read_bytes().splitlines() if checkpoints_file is not None else None
    jobs = _jobs(args)
    if jobs > 1:
        from ..audit.parallel import verify_parallel

        result = verify_parallel(lines, jobs, heads, key, checkpoint_lines)
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
    from .progress import finish

    try:
        result = _verification(args, _log_source(args, linger=True))
    finally:
        finish()
    allow = {"accept_unsigned": args.accept_unsigned, "accept_unchained": args.accept_unchained}
    sys.stdout.write(json.dumps(result.to_dict(**allow), indent=2, ensure_ascii=False) + "\n" if args.json
                     else result.to_text(**allow))
    return result.exit_code(**allow)


def _audit_explain(args: argparse.Namespace) -> int:
    from twin.audit import parse_time
    from twin.explain import explain

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
    comparison = None
    if args.whatif_policy == "all":
        from twin.whatif import WHATIF_POLICIES, compare

        comparison = compare(lines, list(WHATIF_POLICIES))
    changes = Changes(policy=args.whatif_policy) if args.whatif_policy not in (None, "all") else None
    run = whatif(lines(), changes, record=True)
    allow = {"accept_unsigned": args.accept_unsigned, "accept_unchained": args.accept_unchained}
    evidence = Evidence(log_sha256=digest.hexdigest(), first_ms=times[0] if times else None,
                        last_ms=times[1] if times else None, generated_ms=int(time.time() * 1000),
                        key=checked.key, verdict=checked.verdict(**allow), status=checked.status,
                        accepted=checked.accepted(**allow))
    Path(args.output).write_text(render_report(run, checked, source=args.log, evidence=evidence,
                                                comparison=comparison), encoding="utf-8")
    print(f"dmtwin audit report: {args.output}: {checked.verdict(**allow)}", file=sys.stderr)
    return 0


def _whatif(args: argparse.Namespace) -> int:
    from twin.whatif import Changes, parse_setting, whatif

    settings: dict[str, dict[str, int | bool]] = {}
    for text in args.set:
        vm, name, value = parse_setting(text)
        settings.setdefault(vm, {})[name] = value
    if args.policy == "all":
        from twin.whatif import WHATIF_POLICIES, compare

        base = Changes(host_mib=args.host_mib, reserve_mib=args.reserve_mib, settings=settings)
        table = compare(_log_source(args, again=True), list(WHATIF_POLICIES), base, response_ms=args.response_ms)
        sys.stdout.write(json.dumps(table.to_dict(), indent=2, ensure_ascii=False) + "\n" if args.json
                         else table.to_text())
        return 0
    changes = Changes(policy=args.policy, host_mib=args.host_mib, reserve_mib=args.reserve_mib, settings=settings)
    result = whatif(_log_source(args), changes, response_ms=args.response_ms)
    sys.stdout.write(json.dumps(result.to_dict(), indent=2, ensure_ascii=False) + "\n" if args.json
                     else result.to_text())
    return 0
