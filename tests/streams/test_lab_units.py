"""The lab's pieces that need no QEMU: the initramfs archive, module dependencies, the virtio
mapping, and the bridge's checks of the commands it takes (real guests: tests/integration/test_lab.py)."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import pytest

from streams.lab.assets import Newc, module_depends
from streams.lab.bridge import Bridge, BridgeVm
from streams.kafka.topics import Topics
from twin import virtio
from twin.events import BalloonTargetSet
from twin.log import encode

MIB = 1 << 20


def read_newc(blob: bytes) -> dict[str, tuple[int, bytes]]:
    entries, at = {}, 0
    while True:
        assert blob[at:at + 6] == b"070701"
        fields = [int(blob[at + 6 + 8 * i: at + 14 + 8 * i], 16) for i in range(13)]
        mode, size, namesize = fields[1], fields[6], fields[11]
        name_at = at + 110
        name = blob[name_at:name_at + namesize - 1].decode()
        data_at = name_at + namesize + (-(110 + namesize) % 4)
        if name == "TRAILER!!!":
            return entries
        entries[name] = (mode, blob[data_at:data_at + size])
        at = data_at + size + (-size % 4)


def test_the_initramfs_is_a_newc_archive_the_kernel_and_cpio_read():
    archive = Newc()
    archive.directory("bin")
    archive.file("init", b"#!/bin/sh\necho hi\n", 0o755)
    archive.symlink("bin/sh", "busybox")
    blob = archive.finish()
    entries = read_newc(blob)
    assert entries["init"] == (0o100755, b"#!/bin/sh\necho hi\n")
    assert entries["bin/sh"] == (0o120777, b"busybox")
    assert entries["bin"][0] == 0o040755
    try:
        listed = subprocess.run(["cpio", "-t", "--quiet"], input=blob, capture_output=True, timeout=10)
    except FileNotFoundError:
        return
    assert listed.stdout.decode().split() == ["bin", "init", "bin/sh"]


def test_module_dependencies_come_from_the_modinfo_tag():
    assert module_depends(b"\0license=GPL\0depends=virtio_ring,virtio\0vermagic=6.1\0") == ["virtio_ring", "virtio"]
    assert module_depends(b"\0depends=\0name=virtio\0") == []


def test_virtio_figures_map_onto_the_twins_events():
    report = virtio.status(5, "h", "vm", total_bytes=415 * MIB, available_bytes=115 * MIB)
    assert (report.committed_mib, report.available_mib) == (300, 115)
    answer = virtio.balloon_answer(5, "h", "vm", 3, asked_mib=226, before_bytes=512 * MIB,
                                   after_bytes=512 * MIB - 137 * MIB - 4096)
    assert answer.released_mib == 136, "what the balloon took, in 2 MiB units"
    assert virtio.balloon_answer(5, "h", "vm", 3, 64, 512 * MIB, 400 * MIB).released_mib == 64, "never more than asked"
    added = virtio.hot_add_answer(5, "h", "vm", 4, asked_mib=192, before_bytes=0, after_bytes=192 * MIB)
    assert (added.added_mib, added.result) == (192, "success")
    refused = virtio.hot_add_answer(5, "h", "vm", 4, asked_mib=192, before_bytes=0, after_bytes=0)
    assert (refused.added_mib, refused.result) == (0, "transient_failure")
    assert virtio.assigned_mib(256 * MIB, 192 * MIB) == 448
    assert virtio.drift_mib(512, 448 * MIB, 0) == 64
    assert virtio.capabilities().hot_add_alignment_mib == virtio.VIRTIO_MEM_ALIGNMENT_MIB


def test_the_bridge_refuses_bad_commands_naming_field_and_value_and_skips_repeats(tmp_path: Path):
    async def run() -> Bridge:
        bridge = Bridge("localhost:1", Topics("t."), "h", [BridgeVm("vm", memory=None)], tmp_path)  # type: ignore[arg-type]
        command = BalloonTargetSet(at_ms=1, host="h", vm="vm", seq=2, remove_mib=64, target_mib=448)
        bridge._take(b"h", encode(command).encode())
        assert bridge.vms["vm"].queue.qsize() == 1
        bridge.applied["vm"] = 2
        bridge._take(b"h", encode(command).encode())
        assert bridge.duplicates == 1 and bridge.vms["vm"].queue.qsize() == 1
        bridge._take(b"h", encode(command.model_copy(update={"vm": "ghost"})).encode())
        bridge._take(b"h", b'{"type": "decision.balloon", "at_ms": 1, "host": "h", "vm": "vm", "seq": 0, '
                           b'"remove_mib": 64, "target_mib": 448}')
        bridge._take(b"h", b"{not json")
        bridge._take(b"other", encode(command.model_copy(update={"host": "other", "seq": 9})).encode())
        return bridge

    bridge = asyncio.run(run())
    problems = [(e.field, e.value) for e in bridge.errors]
    assert problems[0] == ("vm", "ghost") and "known: vm" in bridge.errors[0].reason
    assert problems[1] == ("seq", 0)
    assert problems[2][0] == "json"
    assert len(problems) == 3, "another host's command is not this bridge's business"
    kept = [json.loads(line) for line in (tmp_path / "errors.jsonl").read_text().splitlines()]
    assert [k["field"] for k in kept] == ["vm", "seq", "json"]


@pytest.mark.parametrize("answer_mib", [0, 2])
def test_a_balloon_answer_is_never_negative(answer_mib: int):
    grown = virtio.balloon_answer(1, "h", "vm", 1, 64, before_bytes=400 * MIB, after_bytes=(400 + answer_mib) * MIB)
    assert grown.released_mib == 0


def test_the_applied_seqs_survive_a_restart_of_the_bridge(tmp_path: Path):
    async def first() -> None:
        bridge = Bridge("localhost:1", Topics("t."), "h", [BridgeVm("vm", memory=None)], tmp_path)  # type: ignore[arg-type]
        bridge.applied["vm"] = 7
        bridge._save_applied()

    async def second() -> Bridge:
        bridge = Bridge("localhost:1", Topics("t."), "h", [BridgeVm("vm", memory=None)], tmp_path)  # type: ignore[arg-type]
        command = BalloonTargetSet(at_ms=1, host="h", vm="vm", seq=7, remove_mib=64, target_mib=448)
        bridge._take(b"h", encode(command).encode())
        return bridge

    asyncio.run(first())
    again = asyncio.run(second())
    assert again.applied == {"vm": 7} and again.duplicates == 1 and again.vms["vm"].queue.empty()


class Balloon:
    """A balloon that reaches any target at once (enough for the actuator's arithmetic)."""

    vmem_path = None
    base = 512 * MIB

    def __init__(self) -> None:
        self.value = 512 * MIB
        self.targets: list[int] = []

    async def actual(self) -> int:
        return self.value

    async def set_balloon(self, value: int) -> None:
        self.targets.append(value)
        self.value = value


def test_a_command_applied_again_after_a_crash_aims_at_the_same_target(tmp_path: Path):
    from streams.lab.actuate import Actuator

    command = BalloonTargetSet(at_ms=1, host="h", vm="vm", seq=3, remove_mib=64, target_mib=448)
    device = Balloon()
    vm = BridgeVm("vm", memory=device)  # type: ignore[arg-type]
    recorded: list[int] = []
    actuator = Actuator("h", error=lambda *a: None, settle_s=0.1)
    first, _ = asyncio.run(actuator.apply(vm, command, record=recorded.append))
    assert recorded == [512 * MIB] and device.value == 448 * MIB and first.released_mib == 64
    # the bridge died before the answer was delivered: the command comes again
    again, _ = asyncio.run(actuator.apply(vm, command, started=recorded[0], record=recorded.append))
    assert device.value == 448 * MIB, "not ballooned twice"
    assert again.released_mib == 64, "the same answer"


def test_the_bridge_keeps_the_started_command_until_it_is_answered(tmp_path: Path):
    async def run() -> dict:
        bridge = Bridge("localhost:1", Topics("t."), "h", [BridgeVm("vm", memory=None)], tmp_path)  # type: ignore[arg-type]
        bridge._save_started("vm", {"seq": 4, "before": 123})
        return Bridge("localhost:1", Topics("t."), "h", [BridgeVm("vm", memory=None)], tmp_path).started  # type: ignore[arg-type]

    assert asyncio.run(run()) == {"vm": {"seq": 4, "before": 123}}
