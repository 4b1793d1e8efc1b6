"""A lab of real QEMU guests and its bridge, run on an event loop of their own in a thread, so
that synchronous tests (and benchmarks) can drive and inspect them while they run."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from streams.lab.bridge import Bridge
from streams.lab.guest import GuestError, qemu_binary
from streams.lab.lab import Lab
from streams.kafka.topics import Topics
from twin.scenario import Scenario

T = TypeVar("T")


class LabThread:
    def __init__(self, scenario: Scenario, run_dir: Path, monitors: bool = True) -> None:
        self.lab = Lab(scenario, run_dir)
        self.monitors = monitors
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="lab", daemon=True)
        self.thread.start()
        self.bridge: Bridge | None = None
        self.stop_event: asyncio.Event | None = None
        self.bridge_task: asyncio.Future[None] | None = None

    def call(self, coro: Coroutine[Any, Any, T], timeout_s: float = 120) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    def boot(self) -> str | None:
        """Boot the guests; the reason when QEMU cannot start here (None: booted)."""
        if qemu_binary() is None:
            return "qemu-system-x86_64 is not installed (scripts/setup installs qemu-system-x86)"
        try:
            self.call(self.lab.start(), timeout_s=240)
            if self.monitors:
                self.call(self.lab.open_monitors())
        except GuestError as error:
            return f"QEMU cannot start a guest here: {error}"
        return None

    def start_bridge(self, bootstrap: str, topics: Topics, **options: Any) -> Bridge:
        async def start() -> Bridge:
            self.stop_event = asyncio.Event()
            bridge = self.lab.bridge(bootstrap, topics, **options)
            self.bridge_task = asyncio.ensure_future(bridge.run(self.stop_event))
            await asyncio.wait([self.bridge_task, asyncio.ensure_future(bridge.ready.wait())],
                               return_when=asyncio.FIRST_COMPLETED, timeout=60)
            if self.bridge_task.done():
                self.bridge_task.result()
            return bridge

        self.bridge = self.call(start())
        return self.bridge

    def bridge_alive(self) -> bool:
        return self.bridge_task is not None and not self.bridge_task.done()

    def stop_bridge(self) -> None:
        async def stop() -> None:
            if self.stop_event is not None and self.bridge_task is not None:
                self.stop_event.set()
                await asyncio.wait_for(asyncio.shield(self.bridge_task), 30)

        if self.bridge_task is not None and not self.bridge_task.done():
            self.call(stop())

    def close(self) -> None:
        try:
            self.stop_bridge()
        finally:
            try:
                self.call(self.lab.stop(), timeout_s=60)
            finally:
                self.loop.call_soon_threadsafe(self.loop.stop)
                self.thread.join(10)
                self.loop.close()
