"""A small asyncio client of QEMU's Machine Protocol (QMP) over a unix socket.

One command at a time per connection (a lock), each tagged with an ``id``; asynchronous events
(``BALLOON_CHANGE``, ``MEMORY_DEVICE_SIZE_CHANGE``, ...) are kept in ``events`` for whoever wants
them. A QMP error becomes :class:`QmpError` naming the command, its arguments and QEMU's message.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections import deque
from pathlib import Path
from typing import Any

__all__ = ["Qmp", "QmpError"]


async def open_unix(path: str, timeout_s: float) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect to the Unix socket at ``path``, retrying while QEMU has not made it yet; the last
    error once ``timeout_s`` have passed."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        try:
            return await asyncio.open_unix_connection(path, limit=1 << 22)
        except (FileNotFoundError, ConnectionRefusedError):
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.1)


class QmpError(RuntimeError):
    """QEMU answered a command with an error, or the socket failed."""

    def __init__(self, command: str, arguments: dict[str, Any] | None, message: str) -> None:
        shown = f" {json.dumps(arguments, sort_keys=True)}" if arguments else ""
        super().__init__(f"QMP {command}{shown}: {message}")
        self.command = command
        self.arguments = arguments or {}
        self.message = message


class Qmp:
    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.lock = asyncio.Lock()
        self.ids = itertools.count(1)
        self.events: deque[dict[str, Any]] = deque(maxlen=1000)
        self.greeting: dict[str, Any] = {}

    async def connect(self, timeout_s: float = 10.0) -> Qmp:
        try:
            self.reader, self.writer = await open_unix(self.path, timeout_s)
        except (FileNotFoundError, ConnectionRefusedError) as error:
            raise QmpError("connect", {"socket": self.path}, f"cannot connect: {error}") from error
        self.greeting = await self._read()
        if "QMP" not in self.greeting:
            raise QmpError("connect", {"socket": self.path}, f"not a QMP greeting: {self.greeting!r}")
        await self.execute("qmp_capabilities")
        return self

    async def _read(self) -> dict[str, Any]:
        assert self.reader is not None
        line = await self.reader.readline()
        if not line:
            raise QmpError("read", {"socket": self.path}, "QEMU closed the QMP socket")
        return json.loads(line)  # type: ignore[no-any-return]

    async def execute(self, command: str, arguments: dict[str, Any] | None = None,
                      timeout_s: float = 10.0) -> Any:
        """Run one command and return its ``return`` value; raise :class:`QmpError` on an error."""
        if self.writer is None:
            raise QmpError(command, arguments, "not connected")
        async with self.lock:
            tag = next(self.ids)
            message: dict[str, Any] = {"execute": command, "id": tag}
            if arguments:
                message["arguments"] = arguments
            try:
                self.writer.write(json.dumps(message).encode() + b"\n")
                await self.writer.drain()
                async with asyncio.timeout(timeout_s):
                    while True:
                        reply = await self._read()
                        if "event" in reply:
                            self.events.append(reply)
                            continue
                        if reply.get("id") != tag:
                            continue
                        if "error" in reply:
                            error = reply["error"]
                            raise QmpError(command, arguments, f"{error.get('class')}: {error.get('desc')}")
                        return reply.get("return")
            except (OSError, TimeoutError) as error:
                raise QmpError(command, arguments, f"{type(error).__name__}: {error}") from error

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except OSError:
                pass
            self.writer = None
