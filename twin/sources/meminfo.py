"""A Linux guest's own view: ``/proc/meminfo`` and the Hyper-V balloon driver's debugfs file.

What a Linux guest sends the host every second (DM_STATUS_REPORT, ``hv_balloon.c``, DOMAIN.md §2.4):

- ``num_avail`` = MemAvailable;
- ``num_committed`` = Committed_AS + pages ballooned out + pages hot-added but not yet onlined
  + the balloon floor (``compute_balloon_floor()`` of the guest's RAM, MemTotal).

``guest_status`` builds exactly that report. The ballooned and hot-added pages come from
``/sys/kernel/debug/hv-balloon`` (root only; present from Linux 6.0 on Hyper-V guests)::

    host_version          : 2.0
    capabilities          : enabled hot_add
    state                 : 1 (Initialized)
    page_size             : 4096
    pages_added           : 0
    pages_onlined         : 0
    pages_ballooned       : 0
    total_pages_committed : 405523
    max_dynamic_page_count: 4194304

Without it (no root, or not a Hyper-V guest) the ballooned pages are /proc/meminfo's ``Balloon:``
line (Linux ≥ 6.15, which every balloon driver, hv_balloon included, keeps up to date), else none.
The guest sees MemTotal plus what its balloon holds (Linux takes ballooned pages out of MemTotal);
``max_dynamic_page_count`` is the VM's Maximum RAM (DM_INFO_MAX_PAGE_CNT). All kB values are
rounded down to whole MiB.

A recording is one or more snapshots, each the text of /proc/meminfo (and, optionally, the debugfs
file after it), started by a line ``@<milliseconds since the epoch>``::

    while sleep 1; do echo "@$(date +%s%3N)"; cat /proc/meminfo /sys/kernel/debug/hv-balloon 2>/dev/null; done
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from ..events import GuestCapabilities, GuestStatusReported, InputEvent
from ..guest import linux_balloon_floor_mib
from .errors import Problems, SourceProblem, read_text
from .observed import (
    DEFAULT_RESERVE_MIB,
    HYPERV_DEFAULT_MINIMUM_MIB,
    ObservedHost,
    Snapshot,
    VmSample,
)

__all__ = ["Meminfo", "HvBalloon", "parse_meminfo", "parse_hv_balloon", "ballooned_mib", "committed_mib",
           "visible_mib", "guest_status", "vm_sample",
           "meminfo_events", "read_meminfo", "HV_BALLOON_FIELDS"]

HV_BALLOON_FIELDS = ("host_version", "capabilities", "state", "page_size", "pages_added", "pages_onlined",
                     "pages_ballooned", "total_pages_committed", "max_dynamic_page_count")
NEEDED = ("MemTotal", "MemAvailable", "Committed_AS")
OPTIONAL = ("Balloon",)
_MEMINFO_LINE = re.compile(r"^(?P<key>[A-Za-z0-9_()]+):\s*(?P<value>\S+)(?:\s+(?P<unit>kB))?\s*$")
_BALLOON_LINE = re.compile(r"^(?P<key>[a-z_]+)\s*:\s*(?P<value>.*?)\s*$")
_MARK = re.compile(r"^@(?P<ms>\d+)\s*$")


@dataclass(frozen=True)
class Meminfo:
    """The /proc/meminfo fields the twin needs, in kB (KiB) as the kernel prints them."""

    total_kib: int
    available_kib: int
    committed_as_kib: int
    balloon_kib: int | None = None
    """``Balloon:``, Linux ≥ 6.15; None when the kernel does not print it."""

    @property
    def total_mib(self) -> int:
        return self.total_kib // 1024


@dataclass(frozen=True)
class HvBalloon:
    """``/sys/kernel/debug/hv-balloon``: the driver's state, counts in ``page_size`` pages."""

    host_version: str = ""
    capabilities: tuple[str, ...] = ()
    state: int = 0
    page_size: int = 4096
    pages_added: int = 0
    pages_onlined: int = 0
    pages_ballooned: int = 0
    total_pages_committed: int = 0
    max_dynamic_page_count: int = 0

    def mib(self, pages: int) -> int:
        return pages * self.page_size // (1 << 20)

    @property
    def ballooned_mib(self) -> int:
        return self.mib(self.pages_ballooned)

    @property
    def not_onlined_mib(self) -> int:
        return self.mib(max(0, self.pages_added - self.pages_onlined))

    @property
    def maximum_mib(self) -> int | None:
        return self.mib(self.max_dynamic_page_count) or None

    def guest_capabilities(self) -> GuestCapabilities:
        """``enabled`` = ballooning on, ``hot_add`` = hot-add on; Linux aligns hot-adds to 128 MB."""
        return GuestCapabilities(balloon="enabled" in self.capabilities, hot_add="hot_add" in self.capabilities,
                                 hot_add_alignment_mib=128)


def parse_meminfo(text: str, problems: Problems, first_line: int = 1) -> Meminfo | None:
    """The needed fields of /proc/meminfo text, or None (with a problem) if one is missing or bad."""
    found: dict[str, int] = {}
    bad = False
    for offset, raw in enumerate(text.splitlines()):
        match = _MEMINFO_LINE.match(raw)
        if match is None or match["key"] not in NEEDED + OPTIONAL:
            continue
        if not match["value"].isdigit():
            problems.add(first_line + offset, f"bad number {match['value']!r} for {match['key']}: "
                                              "snapshot skipped")
            bad = True
            continue
        found[match["key"]] = int(match["value"])
    missing = [key for key in NEEDED if key not in found]
    if missing and not bad:
        problems.add(first_line, f"meminfo lacks {', '.join(missing)}: snapshot skipped")
    if missing:
        return None
    return Meminfo(found["MemTotal"], found["MemAvailable"], found["Committed_AS"], found.get("Balloon"))


def parse_hv_balloon(text: str, problems: Problems, first_line: int = 1) -> HvBalloon | None:
    """The debugfs file's fields, or None when ``text`` holds none of them."""
    fields: dict[str, object] = {}
    for offset, raw in enumerate(text.splitlines()):
        match = _BALLOON_LINE.match(raw)
        if match is None or match["key"] not in HV_BALLOON_FIELDS:
            continue
        key, value = match["key"], match["value"]
        if key == "host_version":
            fields[key] = value
        elif key == "capabilities":
            fields[key] = tuple(value.split())
        else:
            number = value.split()[0] if value else ""  # "state: 1 (Initialized)"
            if not number.isdigit():
                problems.add(first_line + offset, f"bad number {value!r} for {key}")
                continue
            fields[key] = int(number)
    if not fields:
        return None
    if fields.get("page_size") == 0:
        problems.add(first_line, "page_size 0 in hv-balloon: 4096 assumed")
        fields["page_size"] = 4096
    return HvBalloon(**fields)  # type: ignore[arg-type]


def ballooned_mib(meminfo: Meminfo, balloon: HvBalloon | None = None) -> int:
    """Pages in the balloon: the driver's own count, else meminfo's ``Balloon:``, else 0."""
    if balloon is not None:
        return balloon.ballooned_mib
    return (meminfo.balloon_kib or 0) // 1024


def committed_mib(meminfo: Meminfo, balloon: HvBalloon | None = None, floor: bool = True) -> int:
    """``num_committed`` as hv_balloon.c computes it (get_pages_committed), in MiB."""
    committed = meminfo.committed_as_kib // 1024 + ballooned_mib(meminfo, balloon)
    if balloon is not None:
        committed += balloon.not_onlined_mib
    if floor:
        committed += linux_balloon_floor_mib(meminfo.total_mib)
    return committed


def visible_mib(meminfo: Meminfo, balloon: HvBalloon | None = None) -> int:
    """Memory the guest was given: MemTotal plus what the balloon holds."""
    return meminfo.total_mib + ballooned_mib(meminfo, balloon)


def guest_status(host: str, vm: str, at_ms: int, meminfo: Meminfo, balloon: HvBalloon | None = None, *,
                 floor: bool = True, visible_cap_mib: int | None = None) -> GuestStatusReported:
    """The DM_STATUS_REPORT a Linux guest with this meminfo (and balloon) sends at ``at_ms``.

    ``visible_cap_mib`` caps the available memory at what the twin thinks the guest can see.
    """
    available = meminfo.available_kib // 1024
    if visible_cap_mib is not None:
        available = min(available, visible_cap_mib)
    return GuestStatusReported(at_ms=at_ms, host=host, vm=vm, committed_mib=committed_mib(meminfo, balloon, floor),
                               available_mib=available)


def vm_sample(vm: str, meminfo: Meminfo, balloon: HvBalloon | None = None, floor: bool = True) -> VmSample:
    """The guest as an observed VM: its memory, its report, its Maximum RAM and capabilities."""
    return VmSample(vm, visible_mib(meminfo, balloon), committed_mib=committed_mib(meminfo, balloon, floor),
                    available_mib=meminfo.available_kib // 1024,
                    maximum_mib=balloon.maximum_mib if balloon is not None else None,
                    capabilities=(balloon.guest_capabilities() if balloon is not None
                                  else GuestCapabilities(hot_add_alignment_mib=128)))


def read_meminfo(path: str | Path, *, problems: list[SourceProblem] | None = None, host: str = "linux-host",
                 vm: str | None = None, at_ms: int | None = None, host_mib: int | None = None,
                 reserve_mib: int = DEFAULT_RESERVE_MIB, minimum_mib: int = HYPERV_DEFAULT_MINIMUM_MIB,
                 maximum_mib: int | None = None, floor: bool = True) -> Iterator[InputEvent]:
    """``meminfo_events`` of a file; the VM is named after the file unless ``vm`` is given."""
    path = Path(path)
    return meminfo_events(read_text(path), file=str(path), problems=problems, host=host, vm=vm or path.stem,
                          at_ms=at_ms, host_mib=host_mib, reserve_mib=reserve_mib, minimum_mib=minimum_mib,
                          maximum_mib=maximum_mib, floor=floor)


def meminfo_events(text: str, *, file: str = "<meminfo>", problems: list[SourceProblem] | None = None,
                   host: str = "linux-host", vm: str = "linux-guest", at_ms: int | None = None,
                   host_mib: int | None = None, reserve_mib: int = DEFAULT_RESERVE_MIB,
                   minimum_mib: int = HYPERV_DEFAULT_MINIMUM_MIB, maximum_mib: int | None = None,
                   floor: bool = True) -> Iterator[InputEvent]:
    """The twin's inputs for a recording of one guest: ``HostJoined``, ``VmStarted``, a report per
    snapshot. A text without ``@`` lines is one snapshot at ``at_ms``."""
    report = Problems(file, problems)
    snapshots: list[Snapshot] = []
    for line, at, block in _blocks(text, at_ms, report):
        meminfo = parse_meminfo(block, report, line)
        if meminfo is None:
            continue
        if snapshots and at < snapshots[-1].at_ms:
            report.add(line - 1, f"time goes backwards (@{at}): snapshot skipped")
            continue
        balloon = parse_hv_balloon(block, report, line)
        snapshots.append(Snapshot(at, line, [vm_sample(vm, meminfo, balloon, floor)]))
    return ObservedHost(host, report, total_mib=host_mib, reserve_mib=reserve_mib, minimum_mib=minimum_mib,
                        maximum_mib=maximum_mib).events(snapshots)


def _blocks(text: str, at_ms: int | None, report: Problems) -> Iterator[tuple[int, int, str]]:
    """(first line, at_ms, text) of each snapshot."""
    lines = text.splitlines()
    marks = [(i, int(m["ms"])) for i, raw in enumerate(lines) if (m := _MARK.match(raw))]
    if not marks:
        if at_ms is None:
            report.add(None, "no '@<ms>' line and no at_ms given: the snapshot has no time")
            return
        yield 1, at_ms, text
        return
    if any(raw.strip() for raw in lines[: marks[0][0]]):
        report.add(1, "text before the first '@<ms>' line: ignored")
    for k, (i, at) in enumerate(marks):
        end = marks[k + 1][0] if k + 1 < len(marks) else len(lines)
        yield i + 2, at, "\n".join(lines[i + 1: end])
