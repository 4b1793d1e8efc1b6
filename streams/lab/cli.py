"""``dmtwin lab ...`` (real guests under QEMU on this machine) and ``dmtwin bridge`` (the QMP bridge
for any QEMU/KVM VMs, libvirt's included). Registered into the main parser by ``add_commands``."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_commands"]


def _bootstrap(args: argparse.Namespace) -> str:
    """The broker of ``--kafka`` (or ``$DMTWIN_BROKER``), checked to answer before any client waits."""
    from ..cli.failure import reach_broker

    if args.kafka:
        return reach_broker(args.kafka)
    return reach_broker(os.environ.get("DMTWIN_BROKER", "localhost:9092"), "DMTWIN_BROKER")


def _topics():  # type: ignore[no-untyped-def]
    from ..kafka.topics import Topics

    return Topics(os.environ.get("DMTWIN_TOPIC_PREFIX", "dmtwin."))


def _partitions() -> int:
    return int(os.environ.get("DMTWIN_PARTITIONS", "4"))


def _client(args: argparse.Namespace) -> dict[str, Any]:
    """Kafka connection options (TLS, SASL) from the --kafka-* flags and DMTWIN_KAFKA_*."""
    from ..kafka.security import security_from_args

    return security_from_args(args).client()


def _twin_url(args: argparse.Namespace) -> str | None:
    if args.twin_url == "none":
        return None
    return args.twin_url or f"http://127.0.0.1:{os.environ.get('DMTWIN_WEB_PORT', '6066')}"


def _say(text: str) -> None:
    print(f"dmtwin lab: {text}", file=sys.stderr)


async def _until_signalled(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)


def _logging(args: argparse.Namespace) -> None:
    """The bridge's own log at ``--loglevel``; the Kafka clients' only from warnings up."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("dmtwin").setLevel(getattr(logging, args.loglevel.upper()))


def _lab_assets(args: argparse.Namespace) -> int:
    from .assets import ensure_assets

    assets = ensure_assets(Path(args.cache) if args.cache else None, say=_say)
    print(f"kernel {assets.kernel} ({assets.kernel_release})\ninitramfs {assets.initrd}")
    return 0


def _lab_up(args: argparse.Namespace) -> int:
    from twin.scenario import load_scenario

    from .lab import Lab

    _logging(args)
    scenario = load_scenario(args.scenario)
    lab = Lab(scenario, Path(args.run_dir) if args.run_dir else None, host=args.host, accel=args.accel)

    if args.with_twin:
        from ..cli.failure import broker_address
        from .twin_up import twin_for_lab

        bootstrap = broker_address(args.kafka or os.environ.get("DMTWIN_BROKER", "localhost:9092"),
                                   "--kafka" if args.kafka else "DMTWIN_BROKER")
        web_port = int(os.environ.get("DMTWIN_WEB_PORT", "6066"))
        lab.run_dir.mkdir(parents=True, exist_ok=True)
        with twin_for_lab(bootstrap, lab.run_dir, web_port, _say) as url:
            if args.twin_url is None:
                args.twin_url = url
            return _run_lab(args, lab, bootstrap)
    return _run_lab(args, lab, _bootstrap(args))


def _run_lab(args: argparse.Namespace, lab: Any, bootstrap: str) -> int:
    async def run() -> None:
        stop = asyncio.Event()
        await _until_signalled(stop)
        await lab.start(say=_say)
        try:
            bridge = lab.bridge(bootstrap, _topics(), twin_url=_twin_url(args),
                                partitions=_partitions(), metrics_port=args.metrics_port or None,
                                client=_client(args))
            tasks = [asyncio.create_task(bridge.run(stop))]
            if args.follow_workloads:
                tasks.append(asyncio.create_task(lab.follow_workloads(stop, speed=args.speed)))
            _say(f"host {lab.host.name}: {', '.join(lab.guests)} bridged to {bootstrap}; run dir {lab.run_dir}; "
                 f"Ctrl-C stops them")
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            stop.set()
            for task in tasks:
                await asyncio.gather(task, return_exceptions=True)
            for task in done:
                if task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
            _say(f"{bridge.reports} reports, {len(bridge.answers)} commands answered, "
                 f"{bridge.duplicates} duplicates skipped, {len(bridge.errors)} errors, "
                 f"{len(bridge.drifts)} drift events")
        finally:
            await lab.stop()

    asyncio.run(run())
    return 0


def _lab_load(args: argparse.Namespace) -> int:
    from .guest import Control
    from .lab import default_run_dir, read_lab

    _, guests = read_lab(Path(args.run_dir) if args.run_dir else default_run_dir())
    by_name = {g.name: g for g in guests}
    if args.vm not in by_name:
        raise ValueError(f"vm={args.vm!r}: not a guest of the lab ({', '.join(by_name)})")

    async def run() -> None:
        control = await Control(by_name[args.vm].control).connect(timeout_s=10)
        try:
            await control.set_load(args.mib)
            info = await control.meminfo()
        finally:
            await control.close()
        print(f"{args.vm}: load {args.mib} MiB; MemTotal {info['MemTotal'] // 1024} MiB, "
              f"MemAvailable {info['MemAvailable'] // 1024} MiB")

    asyncio.run(run())
    return 0


def _lab_status(args: argparse.Namespace) -> int:
    from .guest import MIB, VirtioMemory
    from .lab import default_run_dir, read_lab

    host, guests = read_lab(Path(args.run_dir) if args.run_dir else default_run_dir())

    async def run() -> list[dict[str, Any]]:
        rows = []
        for guest in guests:
            memory = await VirtioMemory.open(guest.monitor)
            try:
                view = await memory.view()
            finally:
                await memory.close()
            rows.append({"vm": guest.name, "boot_mib": view.base // MIB, "balloon_actual_mib": view.actual // MIB,
                         "virtio_mem_mib": view.plugged // MIB, "assigned_mib": view.assigned // MIB,
                         "guest_total_mib": view.stats.get("stat-total-memory", 0) // MIB,
                         "guest_available_mib": view.stats.get("stat-available-memory", 0) // MIB})
        return rows

    rows = asyncio.run(run())
    if args.json:
        print(json.dumps({"host": host, "vms": rows}, indent=2))
        return 0
    keys = list(rows[0]) if rows else []
    print(f"host {host}")
    print("  ".join(f"{k:>19}" for k in keys))
    for row in rows:
        print("  ".join(f"{row[k]!s:>19}" for k in keys))
    return 0


def _lab_down(args: argparse.Namespace) -> int:
    from .lab import default_run_dir, stop_lab

    stopped = stop_lab(Path(args.run_dir) if args.run_dir else default_run_dir())
    _say(f"stopped {', '.join(stopped) or 'nothing'}")
    return 0


def _bridge(args: argparse.Namespace) -> int:
    from twin.scenario import load_scenario

    from .bridge import Bridge, BridgeVm
    from .guest import VirtioMemory

    _logging(args)
    sockets: dict[str, str] = {}
    for item in args.qmp:
        vm, sep, path = item.partition("=")
        if not sep or not vm or not path:
            raise ValueError(f"--qmp={item!r}: expected VM=SOCKET (e.g. web-01=/run/web-01.qmp)")
        sockets[vm] = path
    settings: dict[str, Any] = {}
    host_spec = None
    if args.scenario:
        scenario = load_scenario(args.scenario)
        host_spec = next((h for h in scenario.hosts if h.name == args.host), None)
        if host_spec is None:
            raise ValueError(f"--host={args.host!r}: not in {args.scenario}")
        settings = {vm.name: vm.settings() for vm in host_spec.vms}
        missing = [vm for vm in sockets if vm not in settings]
        if missing:
            raise ValueError(f"--qmp={missing[0]!r}: no such VM in host {args.host!r} of {args.scenario}")
    join = not args.no_join
    if join and host_spec is None:
        raise ValueError("--scenario: needed to join the host and its VMs to the twin (or give --no-join)")

    bootstrap = _bootstrap(args)

    async def run() -> None:
        stop = asyncio.Event()
        await _until_signalled(stop)
        vms = [BridgeVm(vm, await VirtioMemory.open(path), settings.get(vm)) for vm, path in sockets.items()]
        bridge = Bridge(bootstrap, _topics(), args.host, vms,
                        Path(args.state_dir or Path(os.environ.get("DMTWIN_DATA_DIR") or ".dmtwin") / "bridge"),
                        total_mib=host_spec.total_mib if host_spec else None,
                        reserve_mib=host_spec.reserve_mib if host_spec else 0,
                        policy=host_spec.policy if host_spec else "hyperv", join=join,
                        twin_url=_twin_url(args), partitions=_partitions(),
                        metrics_port=args.metrics_port or None, client=_client(args))
        _say(f"bridging host {args.host}: {', '.join(sockets)} to {bootstrap}")
        try:
            await bridge.run(stop)
        finally:
            for vm in vms:
                await vm.memory.close()

    asyncio.run(run())
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--kafka", metavar="HOST:PORT",
                   help="Kafka broker of the twin (kafka://HOST:PORT too; default $DMTWIN_BROKER, else localhost:9092)")
    p.add_argument("--to", dest="kafka", help=argparse.SUPPRESS)
    p.add_argument("--twin-url", default=None,
                   help="the worker's web address, to compare its belief with QEMU's (default "
                        "http://127.0.0.1:$DMTWIN_WEB_PORT; 'none': no drift watch)")
    p.add_argument("--metrics-port", type=int, default=0,
                   help="serve the bridge's metrics (dmtwin_lab_drift_mib, ...) on this port")
    p.add_argument("--loglevel", default="info", choices=("debug", "info", "warning", "error"),
                   help="how much the bridge logs to stderr (default info: every command applied)")
    from ..kafka.security import add_kafka_security_options

    add_kafka_security_options(p)


RUN_DIR_HELP = "the lab's sockets, consoles and lab.json (default $DMTWIN_DATA_DIR/lab, else .dmtwin/lab)"


def add_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``lab`` and ``bridge`` to the ``dmtwin`` parser."""
    p = sub.add_parser("lab", help="real Linux guests under QEMU as a dmtwin host: assets | up | load | status | down")
    lab = p.add_subparsers(dest="lab_command", required=True)
    a = lab.add_parser("assets", help="build the guest kernel and initramfs from Debian packages (cached)")
    a.add_argument("--cache", help="folder (default $DMTWIN_CACHE/lab or ~/.cache/dmtwin/lab)")
    a.set_defaults(run=_lab_assets)
    u = lab.add_parser("up", help="boot a scenario host's VMs as real guests and bridge them to the twin")
    u.add_argument("scenario", help="scenario file (.toml/.json), e.g. examples/lab.toml")
    u.add_argument("--host", help="which host of the scenario (default: the first)")
    u.add_argument("--run-dir", help=RUN_DIR_HELP)
    u.add_argument("--follow-workloads", action="store_true",
                   help="hold each guest's tmpfs load at its scenario workload, second by second")
    u.add_argument("--speed", type=float, default=1.0, help="workload seconds per real second")
    u.add_argument("--accel", choices=("kvm", "tcg"), help="default: kvm when usable, else tcg")
    u.add_argument("--with-twin", action="store_true",
                   help="also start a local Kafka (at --kafka) and a twin worker (on $DMTWIN_WEB_PORT, default "
                        "6066) if none answers there, and stop them with the lab: the lab end to end")
    _common(u)
    u.set_defaults(run=_lab_up)
    ld = lab.add_parser("load", help="set a lab guest's memory load (MiB held in its tmpfs)")
    ld.add_argument("vm", help="the lab guest (a VM of the scenario)")
    ld.add_argument("mib", type=int, help="MiB its tmpfs load should hold")
    ld.add_argument("--run-dir", help=RUN_DIR_HELP)
    ld.set_defaults(run=_lab_load)
    s = lab.add_parser("status", help="each lab guest's memory as QEMU and the guest see it")
    s.add_argument("--run-dir", help=RUN_DIR_HELP)
    s.add_argument("--json", action="store_true", help="print JSON")
    s.set_defaults(run=_lab_status)
    d = lab.add_parser("down", help="stop the lab's QEMU processes")
    d.add_argument("--run-dir", help=RUN_DIR_HELP)
    d.set_defaults(run=_lab_down)

    b = sub.add_parser("bridge", help="apply the twin's commands to QEMU/KVM VMs over QMP and report their memory")
    b.add_argument("--host", required=True, help="the dmtwin host these VMs belong to")
    b.add_argument("--qmp", action="append", default=[], required=True, metavar="VM=SOCKET",
                   help="a VM and its QMP socket (repeat); libvirt: /var/lib/libvirt/qemu/domain-*/monitor.sock "
                        "is libvirt's own, add a second one (docs/real-guests.md)")
    b.add_argument("--scenario", help="scenario file with the host and its VMs' settings, to join them")
    b.add_argument("--no-join", action="store_true", help="the host and VMs have already joined the twin")
    b.add_argument("--state-dir", help="where the applied seqs and errors are kept (default .dmtwin/bridge)")
    _common(b)
    b.set_defaults(run=_bridge)
