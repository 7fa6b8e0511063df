"""A TCP proxy on loopback that can stall (stop forwarding, keep the sockets open): the
network failure that only heartbeats detect."""

from __future__ import annotations

import asyncio

from tests.servers import free_port


class StallingProxy:
    def __init__(self, target_port: int):
        self.target_port = target_port
        self.port = free_port()
        self.stalled = asyncio.Event()
        self.server: asyncio.base_events.Server | None = None
        self.pipes: list[asyncio.Task] = []

    async def __aenter__(self) -> "StallingProxy":
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for t in self.pipes:
            t.cancel()

    def stall(self) -> None:
        self.stalled.set()

    def resume(self) -> None:
        self.stalled.clear()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, born_stalled: bool) -> None:
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                if self.stalled.is_set() or born_stalled:
                    born_stalled = True  # a stalled connection stays dead; data vanishes
                    continue
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        self.pipes.append(asyncio.create_task(self._pipe(reader, up_w, False)))
        self.pipes.append(asyncio.create_task(self._pipe(up_r, writer, False)))
