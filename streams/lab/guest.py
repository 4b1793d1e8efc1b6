"""A real guest: its memory devices over QMP, and for lab guests the QEMU process and a command
channel into the guest.

- :class:`VirtioMemory` drives one VM's ``virtio-balloon-pci`` and (optional) ``virtio-mem-pci``
  over QMP. It finds the devices itself (``qom-list /machine/peripheral``), so it works for lab
  guests and for libvirt's (whose device aliases are ``balloon0``, ``virtiomem0``, ...).
- :class:`Control` is the lab guest's command channel: a shell on the second serial port
  (``streams.lab.assets``); through it the lab changes the guest's load and reads its
  ``/proc/meminfo``.
- :class:`LabGuest` is one QEMU process (KVM when ``/dev/kvm`` is usable, else TCG) booting the lab
  kernel with a balloon (``deflate-on-oom=on``) and, when Maximum > Startup, a virtio-mem device of
  Maximum − Startup.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .assets import Assets
from .qmp import Qmp, QmpError, open_unix

__all__ = ["VirtioMemory", "Control", "LabGuest", "GuestError", "kvm_usable", "qemu_binary", "MIB"]

MIB = 1 << 20


class GuestError(RuntimeError):
    """QEMU did not start, the guest did not boot, or its command channel failed."""


@dataclass(frozen=True)
class MemoryView:
    """What QEMU and the guest say of one VM's memory, in bytes (as QMP gives them)."""

    base: int
    """Boot memory (``-m``), what the balloon works on."""
    actual: int
    """Boot memory less the balloon (``query-balloon``: excludes virtio-mem)."""
    plugged: int
    """virtio-mem's ``size``: memory the guest has plugged."""
    requested: int
    """virtio-mem's ``requested-size``."""
    region: int
    """virtio-mem's whole region (the most it can plug)."""
    stats: dict[str, int]
    """``guest-stats``: the guest's own figures (``stat-total-memory``, ``stat-available-memory``, ...)."""
    stats_at: int
    """``last-update`` of the stats, seconds since the epoch (0: never)."""

    @property
    def assigned(self) -> int:
        return self.actual + self.plugged


class VirtioMemory:
    """One VM's balloon and virtio-mem device over QMP."""

    def __init__(self, qmp: Qmp) -> None:
        self.qmp = qmp
        self.balloon_path: str | None = None
        self.vmem_path: str | None = None
        self.base = 0
        self.region = 0

    @classmethod
    async def open(cls, socket: str | Path, stats_interval_s: int = 1) -> VirtioMemory:
        self = cls(await Qmp(socket).connect())
        children = await self.qmp.execute("qom-list", {"path": "/machine/peripheral"})
        for child in children:
            kind = child.get("type", "")
            if kind.startswith("child<virtio-balloon") and self.balloon_path is None:
                self.balloon_path = f"/machine/peripheral/{child['name']}"
            elif kind.startswith("child<virtio-mem") and self.vmem_path is None:
                self.vmem_path = f"/machine/peripheral/{child['name']}"
        if self.balloon_path is None:
            raise QmpError("qom-list", {"path": "/machine/peripheral"},
                           "no virtio-balloon device with an id (libvirt: <memballoon model='virtio'>)")
        summary = await self.qmp.execute("query-memory-size-summary")
        self.base = int(summary["base-memory"])
        if self.vmem_path is not None:
            memdev = await self.qmp.execute("qom-get", {"path": self.vmem_path, "property": "memdev"})
            self.region = int(await self.qmp.execute("qom-get", {"path": memdev, "property": "size"}))
        await self.qmp.execute("qom-set", {"path": self.balloon_path, "property": "guest-stats-polling-interval",
                                           "value": stats_interval_s})
        return self

    async def _get(self, path: str, prop: str) -> Any:
        return await self.qmp.execute("qom-get", {"path": path, "property": prop})

    async def actual(self) -> int:
        return int((await self.qmp.execute("query-balloon"))["actual"])

    async def plugged(self) -> int:
        return int(await self._get(self.vmem_path, "size")) if self.vmem_path else 0

    async def requested(self) -> int:
        return int(await self._get(self.vmem_path, "requested-size")) if self.vmem_path else 0

    async def view(self) -> MemoryView:
        stats = await self._get(self.balloon_path, "guest-stats")  # type: ignore[arg-type]
        return MemoryView(self.base, await self.actual(), await self.plugged(), await self.requested(),
                          self.region, {k: int(v) for k, v in stats.get("stats", {}).items()},
                          int(stats.get("last-update", 0)))

    async def set_balloon(self, actual: int) -> None:
        """Ask the balloon to leave ``actual`` bytes of boot memory to the guest."""
        await self.qmp.execute("balloon", {"value": int(actual)})

    async def set_requested(self, size: int) -> None:
        if self.vmem_path is None:
            raise QmpError("qom-set", {"property": "requested-size"}, "this VM has no virtio-mem device")
        await self.qmp.execute("qom-set", {"path": self.vmem_path, "property": "requested-size", "value": int(size)})

    async def close(self) -> None:
        await self.qmp.close()


class Control:
    """The lab guest's shell on its second serial port."""

    def __init__(self, socket: str | Path) -> None:
        self.socket = str(socket)
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.lock = asyncio.Lock()
        self.ids = itertools.count(int(time.time()) % 100000 * 1000)

    async def connect(self, timeout_s: float = 60.0) -> Control:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        try:
            self.reader, self.writer = await open_unix(self.socket, timeout_s)
        except (FileNotFoundError, ConnectionRefusedError) as error:
            raise GuestError(f"control channel {self.socket}: {error}") from error
        while True:  # the guest may still be booting: ask until the shell answers
            try:
                if (await self.run("echo ok", timeout_s=1.0)).strip() == "ok":
                    return self
            except TimeoutError:
                pass
            if loop.time() > deadline:
                raise GuestError(f"control channel {self.socket}: the guest's shell did not answer "
                                 f"in {timeout_s:.0f} s (it takes one client at a time: is another one, "
                                 f"such as dmtwin lab up --follow-workloads, connected?)")

    async def run(self, command: str, timeout_s: float = 30.0) -> str:
        """Run ``command`` in the guest's shell and return its output; raise GuestError if it fails."""
        if self.writer is None or self.reader is None:
            raise GuestError("control channel not connected")
        if "\n" in command:
            raise GuestError(f"command={command!r}: one line only")
        async with self.lock:
            tag = next(self.ids)
            self.writer.write(f"{tag} {command}\n".encode())
            await self.writer.drain()
            begin, end = f"@@{tag}@@BEGIN\n".encode(), f"@@{tag}@@END ".encode()
            buffer = b""
            async with asyncio.timeout(timeout_s):
                while not (end in buffer and buffer.split(end, 1)[1].endswith(b"\n")):
                    chunk = await self.reader.read(65536)
                    if not chunk:
                        raise GuestError(f"control channel {self.socket}: the guest closed it")
                    buffer += chunk
        body = buffer.split(begin, 1)[1] if begin in buffer else buffer
        output, _, rest = body.partition(end)
        rc = int(rest.strip() or b"0")
        text = output.decode(errors="replace")
        text = text[:-1] if text.endswith("\n") else text
        if rc != 0:
            raise GuestError(f"guest command {command!r} failed ({rc}): {text[-500:]}")
        return text

    async def meminfo(self) -> dict[str, int]:
        """The guest's ``/proc/meminfo``, in KiB."""
        out = await self.run("cat /proc/meminfo")
        info: dict[str, int] = {}
        for line in out.splitlines():
            key, _, value = line.partition(":")
            if value.strip():
                info[key.strip()] = int(value.split()[0])
        return info

    async def load_mib(self) -> int:
        out = await self.run("du -m /load/fill 2>/dev/null | cut -f1 || true")
        return int(out.strip() or 0)

    async def set_load(self, mib: int, previous: int | None = None) -> None:
        """Make the tmpfs load hold ``mib`` MiB: grow by appending, shrink by truncating."""
        if mib < 0:
            raise GuestError(f"load_mib={mib}: must not be negative")
        if previous is not None and mib > previous:
            await self.run(f"dd if=/dev/zero of=/load/fill bs=1M seek={previous} count={mib - previous} "
                           f"conv=notrunc 2>/dev/null", timeout_s=120)
        else:
            await self.run(f"rm -f /load/fill; dd if=/dev/zero of=/load/fill bs=1M count={mib} 2>/dev/null",
                           timeout_s=120)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except OSError:
                pass
            self.writer = None


def kvm_usable() -> bool:
    """``/dev/kvm`` opens and the CPU shows hardware virtualisation (vmx/svm): a /dev/kvm without
    them (a VM without nested virtualisation) opens fine and then hangs QEMU."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    if not any(f" {flag} " in f" {line} " for line in flags.splitlines() if line.startswith("flags")
               for flag in ("vmx", "svm")):
        return False
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    os.close(fd)
    return True


def qemu_binary() -> str | None:
    return shutil.which("qemu-system-x86_64")


class LabGuest:
    """One QEMU process running the lab kernel, with its QMP and control sockets in ``run_dir``."""

    def __init__(self, name: str, run_dir: Path, assets: Assets, startup_mib: int, maximum_mib: int,
                 accel: str | None = None, cpus: int = 1) -> None:
        self.name = name
        self.run_dir = Path(run_dir)
        self.assets = assets
        self.startup_mib = startup_mib
        self.vmem_mib = max(0, maximum_mib - startup_mib)
        self.vmem_mib -= self.vmem_mib % 2  # virtio-mem works in 2 MiB blocks
        self.accel = accel or os.environ.get("DMTWIN_LAB_ACCEL") or ("kvm" if kvm_usable() else "tcg")
        self.cpus = cpus
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def qmp_socket(self) -> Path:
        return self.run_dir / "qmp.sock"

    @property
    def monitor_socket(self) -> Path:
        """A second QMP monitor, for readers other than the bridge (``dmtwin lab status``, tests)."""
        return self.run_dir / "monitor.sock"

    @property
    def control_socket(self) -> Path:
        return self.run_dir / "control.sock"

    @property
    def console(self) -> Path:
        return self.run_dir / "console.log"

    def argv(self) -> list[str]:
        qemu = qemu_binary()
        if qemu is None:
            raise GuestError("qemu-system-x86_64 not found: install qemu-system-x86 (scripts/setup does)")
        memory = f"{self.startup_mib}M"
        if self.vmem_mib:
            memory += f",slots=1,maxmem={self.startup_mib + self.vmem_mib}M"
        argv = [qemu, "-name", self.name, "-machine", "pc", "-accel", self.accel, "-smp", str(self.cpus),
                "-m", memory, "-nodefaults", "-display", "none", "-no-reboot",
                "-kernel", str(self.assets.kernel), "-initrd", str(self.assets.initrd),
                "-append", "console=ttyS0 quiet loglevel=4 memhp_default_state=online panic=-1",
                "-chardev", f"file,id=console,path={self.console}", "-serial", "chardev:console",
                "-chardev", f"socket,id=control,path={self.control_socket},server=on,wait=off",
                "-serial", "chardev:control",
                "-qmp", f"unix:{self.qmp_socket},server=on,wait=off",
                "-qmp", f"unix:{self.monitor_socket},server=on,wait=off",
                "-device", "virtio-balloon-pci,id=balloon0,deflate-on-oom=on"]
        if self.vmem_mib:
            argv += ["-object", f"memory-backend-ram,id=vmem0mem,size={self.vmem_mib}M",
                     "-device", "virtio-mem-pci,id=vmem0,memdev=vmem0mem,requested-size=0"]
        return argv

    def start(self) -> LabGuest:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        for stale in (self.qmp_socket, self.monitor_socket, self.control_socket, self.console):
            stale.unlink(missing_ok=True)
        log = open(self.run_dir / "qemu.log", "ab")
        try:
            self.process = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            log.close()
        (self.run_dir / "qemu.pid").write_text(f"{self.process.pid}\n")
        return self

    async def booted(self, timeout_s: float = 90.0) -> None:
        """Wait until the guest's init says it is ready."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise GuestError(f"QEMU for {self.name} exited ({self.process.returncode}): "
                                 f"{(self.run_dir / 'qemu.log').read_text(errors='replace')[-1500:]}")
            if self.console.exists() and b"DMTWIN-LAB-READY" in self.console.read_bytes():
                return
            await asyncio.sleep(0.2)
        raise GuestError(f"guest {self.name} did not boot in {timeout_s:.0f} s; console: "
                         f"{self.console.read_text(errors='replace')[-1500:] if self.console.exists() else ''}")

    def stop(self, timeout_s: float = 10.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
