"""A TCP proxy on loopback that can go silent, like a network link that stops answering.

``silence()`` keeps every connection open (and keeps accepting new ones) but forwards no byte in
either direction: what a client sees when a router or VPN drops its packets. ``resume()`` closes
the connections that were silenced (after a real outage their TCP state is stale and the peers
reset them) and forwards normally again.
"""

from __future__ import annotations

import asyncio
import contextlib


class TcpProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.silent = False
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._stale: set[asyncio.StreamWriter] = set()
        # Set when a byte was swallowed: a client is now waiting on the silent link.
        self.swallowed = asyncio.Event()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    def silence(self) -> None:
        self.silent = True
        self._stale |= self._writers

    def resume(self) -> None:
        self.silent = False
        self.swallowed.clear()
        for writer in self._stale:
            writer.close()
        self._stale.clear()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await task
        if self._server is not None:
            await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            if self.silent:  # a connection opened during the outage hears nothing, ever
                self._stale.add(writer)
                if await reader.read(1):
                    self.swallowed.set()
                await reader.read()  # until the client gives up (or resume() closes it)
                return
            up_reader, up_writer = await asyncio.open_connection(*self.target)
            self._writers.add(up_writer)
            pumps = [
                asyncio.create_task(self._pump(reader, up_writer, writer)),
                asyncio.create_task(self._pump(up_reader, writer, up_writer)),
            ]
            self._tasks.update(pumps)
            try:
                await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for pump in pumps:
                    pump.cancel()
                    self._tasks.discard(pump)
                up_writer.close()
                self._writers.discard(up_writer)
                self._stale.discard(up_writer)
        except OSError:
            pass
        finally:
            writer.close()
            self._writers.discard(writer)
            self._stale.discard(writer)

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, pair: asyncio.StreamWriter
    ) -> None:
        """Copy bytes until EOF; while silent, drop them (and ignore EOF: nothing gets through)."""
        silenced = False
        while True:
            data = await reader.read(65536)
            if self.silent or silenced:
                silenced = silenced or self.silent
                if data:
                    self.swallowed.set()
                if not data:  # the peer left, but during an outage nobody on the other side knows
                    await asyncio.Event().wait()
                continue
            if not data:
                return
            writer.write(data)
            await writer.drain()


def through(url: str, proxy: TcpProxy) -> str:
    """``url`` (a PostgreSQL URL on 127.0.0.1:5432) redirected through ``proxy``."""
    from sqlalchemy import make_url

    return make_url(url).set(host="127.0.0.1", port=proxy.port).render_as_string(False)
