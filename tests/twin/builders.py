"""Small builders for hand-made event streams in tests."""

from __future__ import annotations

from twin.engine import Twin
from twin.events import (
    BalancerTicked,
    GuestCapabilities,
    GuestStatusReported,
    HostJoined,
    MemorySettings,
    VmStarted,
)

HOST = "h1"


def host(total_mib: int = 16384, reserve_mib: int = 1024, policy: str = "hyperv") -> Twin:
    twin = Twin()
    twin.apply(HostJoined(at_ms=0, host=HOST, total_mib=total_mib, reserve_mib=reserve_mib, policy=policy))
    return twin


def start(twin: Twin, vm: str, startup: int = 2048, minimum: int = 512, maximum: int = 8192, *,
          weight: int = 5000, buffer: int = 20, hot_add: bool = True, balloon: bool = True,
          dm: bool = True, at_ms: int = 0, alignment: int = 128) -> None:
    twin.handle(VmStarted(
        at_ms=at_ms, host=HOST, vm=vm,
        settings=MemorySettings(startup_mib=startup, minimum_mib=minimum, maximum_mib=maximum,
                                buffer_percent=buffer, weight=weight, dynamic_memory_enabled=dm),
        capabilities=GuestCapabilities(balloon=balloon, hot_add=hot_add, hot_add_alignment_mib=alignment)))


def report(twin: Twin, vm: str, committed: int, at_ms: int, available: int = 0) -> None:
    twin.handle(GuestStatusReported(at_ms=at_ms, host=HOST, vm=vm, committed_mib=committed,
                                    available_mib=available))


def tick(twin: Twin, at_ms: int) -> list:
    return twin.handle(BalancerTicked(at_ms=at_ms, host=HOST))


def answer_all(twin: Twin, decisions: list, at_ms: int) -> None:
    """Answer every request as a cooperative guest would: in full."""
    from twin.events import BalloonResponded, HotAddResponded, UnballoonResponded

    for d in decisions:
        if d.type == "decision.balloon":
            twin.handle(BalloonResponded(at_ms=at_ms, host=HOST, vm=d.vm, seq=d.seq, released_mib=d.remove_mib))
        elif d.type == "decision.unballoon":
            twin.handle(UnballoonResponded(at_ms=at_ms, host=HOST, vm=d.vm, seq=d.seq))
        elif d.type == "decision.hot_add":
            twin.handle(HotAddResponded(at_ms=at_ms, host=HOST, vm=d.vm, seq=d.seq, added_mib=d.add_mib))
