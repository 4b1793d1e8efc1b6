"""The lab's guest image, built from Debian's packages alone: a kernel and a tiny initramfs.

- The kernel comes from ``linux-image-*-cloud-amd64`` (``apt-get download`` + ``dpkg-deb -x``; no
  root needed). It ships ``virtio_pci``, ``virtio_balloon`` and ``virtio_mem`` as modules; they go
  into the initramfs with the modules they depend on (read from each module's ``depends=`` tag).
- The userland is one static busybox (``busybox-static``: the installed ``/bin/busybox`` when it is
  static, else the package downloaded the same way).
- The initramfs is a ``newc`` cpio archive written here (gzip), so ``cpio`` itself is not needed.

Its ``/init`` loads the modules, mounts a tmpfs on ``/load`` (the guest's memory load: files filled
there hold memory that no reclaim can take), and serves a line-based command channel on the second
serial port (``ttyS1``): the host writes ``ID COMMAND``, the guest answers
``@@ID@@BEGIN`` / output / ``@@ID@@END RC`` (``streams.lab.guest.Control``).

Everything is cached under ``$DMTWIN_CACHE/lab`` (default ``~/.cache/dmtwin/lab``) and built once.
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Assets", "AssetError", "ensure_assets", "default_lab_cache", "MODULES"]

MODULES = ("virtio_pci", "virtio_balloon", "virtio_mem")
"""The guest needs these (and what they depend on); the cloud kernel has them as modules."""

INIT = r"""#!/bin/sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in $(cat /modules.order); do insmod /lib/modules/$m.ko; done
# virtio-mem memory is onlined by the kernel (memhp_default_state=online); this catches any left.
for s in /sys/devices/system/memory/memory*/state; do grep -q offline "$s" 2>/dev/null && echo online > "$s"; done
mkdir -p /load
mount -t tmpfs -o size=64g load /load
echo -1000 > /proc/self/oom_score_adj
stty -F /dev/ttyS1 raw -echo 2>/dev/null
echo DMTWIN-LAB-READY > /dev/ttyS0
exec /bin/sh /ctl.sh < /dev/ttyS1 > /dev/ttyS1 2>&1
"""

CONTROL = r"""# The lab's command channel on ttyS1: 'ID COMMAND' in, '@@ID@@BEGIN', output, '@@ID@@END RC' out.
while IFS= read -r line; do
  id=${line%% *}
  cmd=${line#* }
  out=$(eval "$cmd" 2>&1)
  rc=$?
  printf '\n@@%s@@BEGIN\n%s\n@@%s@@END %s\n' "$id" "$out" "$id" "$rc"
done
"""


class AssetError(RuntimeError):
    """The guest image could not be built (a package could not be fetched, a module is missing)."""


@dataclass(frozen=True)
class Assets:
    kernel: Path
    initrd: Path
    kernel_release: str


def default_lab_cache() -> Path:
    """``$DMTWIN_CACHE/lab`` or ``~/.cache/dmtwin/lab``."""
    return Path(os.environ.get("DMTWIN_CACHE") or Path.home() / ".cache" / "dmtwin") / "lab"


def ensure_assets(cache: Path | None = None, say=lambda text: None) -> Assets:  # type: ignore[no-untyped-def]
    """The kernel and initramfs, built into ``cache`` on first use."""
    cache = Path(cache or default_lab_cache())
    cache.mkdir(parents=True, exist_ok=True)
    kernel, initrd, release = cache / "vmlinuz", cache / "initrd.gz", cache / "kernel-release"
    if kernel.exists() and initrd.exists() and release.exists():
        return Assets(kernel, initrd, release.read_text().strip())
    with tempfile.TemporaryDirectory(prefix="dmtwin-lab-", dir=cache) as work:
        root = Path(work)
        package = _newest_cloud_kernel()
        say(f"fetching {package} with apt-get download")
        tree = _download_and_extract(package, root / "kernel")
        vmlinuz = next(iter(sorted((tree / "boot").glob("vmlinuz-*"))), None)
        if vmlinuz is None:
            raise AssetError(f"package {package} has no /boot/vmlinuz-*")
        kernel_release = vmlinuz.name[len("vmlinuz-"):]
        modules_dir = next((p for p in (tree / "lib" / "modules" / kernel_release,
                                        tree / "usr" / "lib" / "modules" / kernel_release) if p.exists()), None)
        if modules_dir is None:
            raise AssetError(f"package {package} has no modules for {kernel_release}")
        busybox = _static_busybox(root, say)
        say("writing the initramfs")
        image = _initramfs(modules_dir, busybox)
        tmp_initrd = cache / "initrd.gz.tmp"
        tmp_initrd.write_bytes(image)
        shutil.copyfile(vmlinuz, cache / "vmlinuz.tmp")
        os.replace(cache / "vmlinuz.tmp", kernel)
        os.replace(tmp_initrd, initrd)
        release.write_text(kernel_release + "\n")
    return Assets(kernel, initrd, kernel_release)


def _run(argv: list[str], cwd: Path | None = None) -> str:
    try:
        done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=600)
    except FileNotFoundError as error:
        raise AssetError(f"{argv[0]} not found: the lab builds its guest from Debian packages "
                         f"(apt-get, dpkg-deb)") from error
    if done.returncode != 0:
        raise AssetError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()[-800:]}")
    return done.stdout


def _newest_cloud_kernel() -> str:
    """The package that ``linux-image-cloud-amd64`` depends on, e.g. ``linux-image-6.1.0-57-cloud-amd64``."""
    out = _run(["apt-cache", "depends", "linux-image-cloud-amd64"])
    found = re.findall(r"Depends:\s*(linux-image-[0-9][^\s]*-cloud-amd64)\b", out)
    if not found:
        raise AssetError("apt-cache knows no linux-image-*-cloud-amd64 (is this Debian amd64 with "
                         "its main archive in sources.list?)")
    return found[0]


def _download_and_extract(package: str, into: Path) -> Path:
    into.mkdir(parents=True)
    _run(["apt-get", "download", "-q", package], cwd=into)
    debs = sorted(into.glob("*.deb"))
    if not debs:
        raise AssetError(f"apt-get download {package} wrote no .deb")
    tree = into / "tree"
    _run(["dpkg-deb", "-x", str(debs[0]), str(tree)])
    return tree


def _is_static(path: Path) -> bool:
    try:
        out = subprocess.run(["ldd", str(path)], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "not a dynamic executable" in (out.stdout + out.stderr)


def _static_busybox(root: Path, say) -> Path:  # type: ignore[no-untyped-def]
    installed = shutil.which("busybox")
    if installed and _is_static(Path(installed)):
        return Path(installed)
    say("fetching busybox-static with apt-get download")
    tree = _download_and_extract("busybox-static", root / "busybox")
    for candidate in (tree / "bin" / "busybox", tree / "usr" / "bin" / "busybox"):
        if candidate.exists():
            return candidate
    raise AssetError("busybox-static has no bin/busybox")


def module_depends(ko: bytes) -> list[str]:
    """The ``depends=`` tag of a kernel module's .modinfo section."""
    match = re.search(rb"(?:^|\0)depends=([^\0]*)\0", ko)
    if not match or not match.group(1):
        return []
    return [name.decode() for name in match.group(1).split(b",") if name]


def _read_module(path: Path) -> bytes:
    data = path.read_bytes()
    if path.suffix == ".xz":
        import lzma

        return lzma.decompress(data)
    if path.suffix == ".zst":
        raise AssetError(f"{path.name}: zstd-compressed modules are not supported")
    return data


def _initramfs(modules_dir: Path, busybox: Path) -> bytes:
    found = {p.name.split(".ko")[0].replace("-", "_"): p for p in modules_dir.rglob("*.ko*")}
    order: list[str] = []
    blobs: dict[str, bytes] = {}

    def visit(name: str) -> None:
        if name in blobs:
            return
        if name not in found:
            raise AssetError(f"kernel module {name} not in {modules_dir}")
        blobs[name] = _read_module(found[name])
        for dep in module_depends(blobs[name]):
            visit(dep.replace("-", "_"))
        order.append(name)

    for name in MODULES:
        visit(name)
    archive = Newc()
    for d in ("bin", "dev", "proc", "sys", "lib", "lib/modules", "load", "tmp"):
        archive.directory(d)
    archive.file("bin/busybox", busybox.read_bytes(), 0o755)
    archive.symlink("bin/sh", "busybox")
    archive.file("init", INIT.encode(), 0o755)
    archive.file("ctl.sh", CONTROL.encode(), 0o644)
    archive.file("modules.order", ("\n".join(order) + "\n").encode(), 0o644)
    for name in order:
        archive.file(f"lib/modules/{name}.ko", blobs[name], 0o644)
    return gzip.compress(archive.finish(), compresslevel=6)


class Newc:
    """A ``newc`` (SVR4, no CRC) cpio archive, as the kernel reads an initramfs."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.ino = 1

    def _entry(self, name: str, mode: int, data: bytes) -> None:
        encoded = name.encode() + b"\0"
        fields = (self.ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(encoded), 0)
        header = b"070701" + b"".join(b"%08X" % value for value in fields)
        self.ino += 1
        self.parts.append(header + encoded + b"\0" * (-(len(header) + len(encoded)) % 4))
        self.parts.append(data + b"\0" * (-len(data) % 4))

    def directory(self, name: str) -> None:
        self._entry(name, 0o040755, b"")

    def file(self, name: str, data: bytes, mode: int) -> None:
        self._entry(name, 0o100000 | mode, data)

    def symlink(self, name: str, target: str) -> None:
        self._entry(name, 0o120777, target.encode())

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0, b"")
        return b"".join(self.parts)
