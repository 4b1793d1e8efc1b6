"""libvirt/QEMU guests: ``virsh dommemstat`` and ``virsh domstats --balloon`` output (KiB).

``virsh dommemstat DOMAIN`` prints one ``name value`` line per statistic (DOMAIN.md §3.4)::

    actual 4194304
    swap_in 0
    ...
    available 4030548
    usable 3309232
    rss 1279560

Several domains go in one file under ``Domain: 'name'`` headers — what ``virsh domstats
--balloon`` prints itself (with ``balloon.current=...`` lines), or a loop over ``virsh list --name``.
Sample times are ``@<milliseconds since the epoch>`` lines; a file without them is one sample at
``at_ms``, or else at the newest ``last_update``. Recording, every 5 s::

    virsh list --name | xargs -rn1 virsh dommemstat --period 5 --live   # once: turn on guest stats
    while sleep 5; do echo "@$(date +%s%3N)"; virsh domstats --balloon; done > virsh.log

Mapping to a Hyper-V guest's report (virtio-balloon → Dynamic Memory):

- memory (Hyper-V Physical Memory) = ``actual``, the balloon's current size;
- Maximum RAM = ``balloon.maximum`` when known: deflating the balloon back to it is what the twin
  calls hot-add;
- demand = ``available − usable`` (memory the guest sees minus what it could give up without
  swapping); without ``usable``, ``available − unused − disk_caches``;
- committed = demand + ballooned pages (``maximum − actual``), as a Hyper-V guest counts them;
- available = ``usable`` (MemAvailable, Linux ≥ 4.6 guests), else ``unused``.

A domain without guest statistics (no ``--period``, no balloon driver) appears and disappears but
reports nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from ..events import GuestCapabilities, InputEvent
from .errors import Problems, SourceProblem, read_text
from .observed import (
    DEFAULT_RESERVE_MIB,
    HYPERV_DEFAULT_MINIMUM_MIB,
    ObservedHost,
    Snapshot,
    VmSample,
)

__all__ = ["DOMMEMSTAT_FIELDS", "DomainStats", "parse_virsh", "domain_sample", "virsh_events", "read_virsh"]

DOMMEMSTAT_FIELDS = frozenset({
    "actual", "swap_in", "swap_out", "major_fault", "minor_fault", "unused", "available", "usable", "rss",
    "last_update", "disk_caches", "hugetlb_pgalloc", "hugetlb_pgfail",
})
"""``virsh dommemstat`` names (KiB except the faults, counts and last_update in seconds)."""
DOMSTATS_NAMES = {"current": "actual", "maximum": "maximum", "last-update": "last_update"}
"""``domstats`` names that differ from dommemstat's; the rest are the same after ``balloon.``."""

_MARK = re.compile(r"^@(?P<ms>\d+)\s*$")
_DOMAIN = re.compile(r"^Domain:\s*'?(?P<name>.*?)'?\s*$")
_STAT = re.compile(r"^\s*(?P<key>[a-z0-9_.-]+)(?:\s+|=)(?P<value>\S+)\s*$")


@dataclass
class DomainStats:
    """One domain's statistics at one time, KiB."""

    domain: str
    line: int
    stats: dict[str, int] = field(default_factory=dict)


@dataclass
class _Sample:
    line: int
    at_ms: int | None
    domains: list[DomainStats] = field(default_factory=list)


def parse_virsh(text: str, problems: Problems, domain: str | None = None) -> list[tuple[int, int | None,
                                                                                       list[DomainStats]]]:
    """(line, at_ms, domains) per sample time; ``domain`` names stats that come before any header."""
    samples = [_Sample(1, None)]
    current: DomainStats | None = None
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        if mark := _MARK.match(line):
            if samples[-1].domains or samples[-1].at_ms is not None:
                samples.append(_Sample(number, None))
            samples[-1].at_ms, samples[-1].line, current = int(mark["ms"]), number, None
            continue
        if header := _DOMAIN.match(line):
            current = _new_domain(samples[-1], header["name"], number, problems)
            continue
        stat = _STAT.match(line)
        if stat is None:
            problems.add(number, f"not a dommemstat line: {line[:80]!r}")
            continue
        key, value = stat["key"], stat["value"]
        if "=" in line and not key.startswith("balloon."):
            continue  # other domstats groups (state.*, cpu.*, ...)
        key = key.removeprefix("balloon.")
        key = DOMSTATS_NAMES.get(key, key)
        if key not in DOMMEMSTAT_FIELDS and key != "maximum":
            problems.add(number, f"unknown statistic {stat['key']!r}: ignored")
            continue
        if not value.isdigit():
            problems.add(number, f"bad number {value!r} for {stat['key']}: ignored")
            continue
        if current is None:
            if domain is None:
                problems.add(number, "statistics before any 'Domain:' line and no domain named: ignored")
                continue
            current = _new_domain(samples[-1], domain, number, problems)
        current.stats[key] = int(value)
    return [(s.line, s.at_ms, s.domains) for s in samples if s.domains]


def _new_domain(sample: _Sample, name: str, line: int, problems: Problems) -> DomainStats:
    stats = DomainStats(name, line)
    if any(d.domain == name for d in sample.domains):
        problems.add(line, f"domain {name!r} twice in one sample: the later one ignored")
        return stats  # filled, never kept
    sample.domains.append(stats)
    return stats


def domain_sample(stats: DomainStats, problems: Problems) -> VmSample | None:
    """One domain as an observed VM (see the module's mapping), or None without ``actual``."""
    s = stats.stats
    if "actual" not in s:
        problems.add(stats.line, f"domain {stats.domain!r} has no 'actual' size: skipped")
        return None
    memory, maximum = s["actual"] // 1024, s["maximum"] // 1024 if "maximum" in s else None
    capabilities = GuestCapabilities(hot_add_alignment_mib=2)
    if "available" not in s:
        return VmSample(stats.domain, memory, maximum_mib=maximum, capabilities=capabilities)
    if "usable" in s:
        used, available = s["available"] - s["usable"], s["usable"]
    else:
        used = s["available"] - s.get("unused", 0) - s.get("disk_caches", 0)
        available = s.get("unused", 0)
    ballooned = max(0, maximum - memory) if maximum is not None else 0
    return VmSample(stats.domain, memory, committed_mib=max(0, used) // 1024 + ballooned,
                    available_mib=available // 1024, maximum_mib=maximum, capabilities=capabilities)


def read_virsh(path: str | Path, *, problems: list[SourceProblem] | None = None, host: str = "kvm-host",
               domain: str | None = None, at_ms: int | None = None, host_mib: int | None = None,
               reserve_mib: int = DEFAULT_RESERVE_MIB, minimum_mib: int = HYPERV_DEFAULT_MINIMUM_MIB,
               maximum_mib: int | None = None) -> Iterator[InputEvent]:
    """``virsh_events`` of a file."""
    return virsh_events(read_text(path), file=str(path), problems=problems, host=host, domain=domain,
                        at_ms=at_ms, host_mib=host_mib, reserve_mib=reserve_mib, minimum_mib=minimum_mib,
                        maximum_mib=maximum_mib)


def virsh_events(text: str, *, file: str = "<virsh>", problems: list[SourceProblem] | None = None,
                 host: str = "kvm-host", domain: str | None = None, at_ms: int | None = None,
                 host_mib: int | None = None, reserve_mib: int = DEFAULT_RESERVE_MIB,
                 minimum_mib: int = HYPERV_DEFAULT_MINIMUM_MIB, maximum_mib: int | None = None
                 ) -> Iterator[InputEvent]:
    """The twin's inputs for one libvirt host's recorded memory statistics."""
    report = Problems(file, problems)
    snapshots: list[Snapshot] = []
    silent: set[str] = set()
    for line, at, domains in parse_virsh(text, report, domain):
        newest_update_s = max(d.stats.get("last_update", 0) for d in domains)
        at = at if at is not None else at_ms if at_ms is not None else newest_update_s * 1000 or None
        if at is None:
            report.add(line, "no '@<ms>' line, no at_ms and no last_update: the sample has no time, skipped")
            continue
        if snapshots and at < snapshots[-1].at_ms:
            report.add(line, f"time goes backwards (@{at}): sample skipped")
            continue
        samples = []
        for stats in domains:
            sample = domain_sample(stats, report)
            if sample is None:
                continue
            samples.append(sample)
            if sample.committed_mib is None and sample.vm not in silent:
                silent.add(sample.vm)
                report.add(stats.line, f"domain {sample.vm!r} has no guest statistics ('available'): it "
                                       "reports nothing; turn them on with virsh dommemstat --period")
        snapshots.append(Snapshot(at, line, samples))
    return ObservedHost(host, report, total_mib=host_mib, reserve_mib=reserve_mib, minimum_mib=minimum_mib,
                        maximum_mib=maximum_mib).events(snapshots)
