"""Applying one command to a VM's devices over QMP, and reading the guest's real answer off them
(``twin.virtio``): watch the device until it reaches the target or stops moving, then pin it at
what is answered, so that QEMU and the twin agree."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from twin import virtio
from twin.events import BalloonTargetSet, UnballoonRequested, UnballoonResponded

from .guest import MIB
from .qmp import QmpError
from .records import BridgeVm, now_ms

__all__ = ["Actuator", "PARTIAL_BACKOFF_MIB"]

PARTIAL_BACKOFF_MIB = 8
"""A balloon that stopped short gives this much back before the answer: room for the guest."""


class Actuator:
    def __init__(self, host: str, error: Callable[..., Any], settle_s: float = 1.5, timeout_s: float = 20.0) -> None:
        self.host = host
        self.error = error
        self.settle_s = settle_s
        self.timeout_s = timeout_s

    async def settle(self, probe: Callable[[], Any], reached: Callable[[int], bool]) -> int:
        """Poll ``probe`` until ``reached`` or it stopped moving for ``settle_s``; return its value."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        value = await probe()
        moved = start
        while not reached(value) and loop.time() - moved < self.settle_s and loop.time() - start < self.timeout_s:
            await asyncio.sleep(0.1)
            now_value = await probe()
            if now_value != value:
                value, moved = now_value, loop.time()
        return int(value)

    async def apply(self, vm: BridgeVm, command: Any, started: int | None = None,
                    record: Callable[[int], None] = lambda before: None) -> tuple[Any, str]:
        """Apply one command to ``vm``; return the guest's real answer and the outcome (applied,
        partial, failed). A QMP error is reported through ``error`` and answered as nothing done.

        The device's value before the command (balloon ``actual``, virtio-mem ``size``) is passed
        to ``record`` before the device is touched; a command applied again after a crash gets it
        back as ``started`` and aims at the same absolute target, so it is not applied twice."""
        memory = vm.memory

        async def first(probe: Callable[[], Any]) -> int:
            before = started if started is not None else int(await probe())
            record(before)
            return before
        if isinstance(command, BalloonTargetSet):
            try:
                before = await first(memory.actual)
                goal = max(0, before - command.remove_mib * MIB)
                await memory.set_balloon(goal)
                after = await self.settle(memory.actual, lambda value: value <= goal)
                answer = virtio.balloon_answer(now_ms(), self.host, vm.name, command.seq, command.remove_mib,
                                               before, after)
                if answer.released_mib < command.remove_mib:
                    # Stopped short: the guest is at its edge. Give it back a little room, or its next
                    # allocation deflates the balloon behind the twin's back (deflate-on-oom).
                    answer = answer.model_copy(update={"released_mib": max(0, answer.released_mib
                                                                           - PARTIAL_BACKOFF_MIB)})
                held = before - answer.released_mib * MIB
                if after != held:  # hold what was answered: no more, no less
                    await memory.set_balloon(held)
                    await self.settle(memory.actual, lambda value: value == held)
            except QmpError as error:
                self.error("qmp", error.command, f"{error.message} (balloon answered as 0 MiB released)",
                           vm.name, command.seq)
                answer = virtio.balloon_answer(now_ms(), self.host, vm.name, command.seq, command.remove_mib, 0, 0)
            outcome = "applied" if answer.released_mib == command.remove_mib else "partial"
        elif isinstance(command, UnballoonRequested):
            try:
                before = await first(memory.actual)
                goal = min(memory.base, before + command.return_mib * MIB)
                await memory.set_balloon(goal)
                after = await self.settle(memory.actual, lambda value: value >= goal)
                outcome = "applied" if after >= goal else "partial"
            except QmpError as error:
                self.error("qmp", error.command, f"{error.message} (unballoon answered)", vm.name, command.seq)
                outcome = "failed"
            answer = UnballoonResponded(at_ms=now_ms(), host=self.host, vm=vm.name, seq=command.seq)
        else:
            if memory.vmem_path is None:
                self.error("vm", vm.name, "has no virtio-mem device: memory addition refused", vm.name, command.seq)
                answer = virtio.hot_add_answer(now_ms(), self.host, vm.name, command.seq, command.add_mib, 0, 0)
                answer = answer.model_copy(update={"result": "permanent_failure"})
            else:
                try:
                    before = await first(memory.plugged)
                    goal = min(memory.region, before + command.add_mib * MIB)
                    await memory.set_requested(goal)
                    after = await self.settle(memory.plugged, lambda value: value >= goal)
                    answer = virtio.hot_add_answer(now_ms(), self.host, vm.name, command.seq, command.add_mib,
                                                   before, after)
                    if after < goal:  # the guest could not online more: stop asking it
                        await memory.set_requested(before + answer.added_mib * MIB)
                except QmpError as error:
                    self.error("qmp", error.command, f"{error.message} (memory addition answered as 0 MiB)",
                               vm.name, command.seq)
                    answer = virtio.hot_add_answer(now_ms(), self.host, vm.name, command.seq, command.add_mib, 0, 0)
            outcome = "applied" if answer.added_mib == command.add_mib else (
                "partial" if answer.added_mib else "failed")
        return answer, outcome

