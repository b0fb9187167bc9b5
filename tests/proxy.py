"""A real TCP proxy on loopback that cuts its connections on demand, as a flaky network does.

Every byte between a client and the server goes through it. :meth:`CuttingProxy.cut` resets
every connection at once (TCP RST both ways), dropping what is in flight: the bytes the
proxy holds, and the halves of frames it has forwarded only in part (it forwards each chunk
in two writes, with a turn of the event loop between them).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator


class CuttingProxy:
    def __init__(self, upstream_port: int, host: str = "127.0.0.1") -> None:
        self._upstream = (host, upstream_port)
        self._host = host
        self._server: asyncio.Server | None = None
        self._pairs: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0
        self.connections = 0
        self.cuts = 0
        # Cut, dropping that chunk, when bytes from the server hold this (a frame's JSON: the
        # server's frames are not masked).
        self.cut_on: bytes | None = None

    async def __aenter__(self) -> CuttingProxy:
        self._server = await asyncio.start_server(self._accept, self._host, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        self.cut(count=False)
        if self._tasks:  # each ends once its sockets are reset
            await asyncio.wait(list(self._tasks), timeout=5)
        await self._server.wait_closed()

    @property
    def open_connections(self) -> int:
        return len(self._pairs)

    def cut(self, *, count: bool = True) -> None:
        """Reset every connection now; what is in flight is lost."""
        if count and self._pairs:
            self.cuts += 1
        for client, upstream in list(self._pairs):
            for writer in (client, upstream):
                writer.transport.abort()
        self._pairs.clear()

    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self._upstream)
        except OSError:
            client_writer.transport.abort()
            return
        self.connections += 1
        pair = (client_writer, upstream_writer)
        self._pairs.add(pair)
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)  # type: ignore[arg-type]
        try:
            await asyncio.gather(
                self._pump(client_reader, upstream_writer, pair),
                self._pump(upstream_reader, client_writer, pair, downstream=True),
            )
        finally:
            self._tasks.discard(task)  # type: ignore[arg-type]
            self._pairs.discard(pair)
            for writer in pair:
                writer.transport.abort()

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        pair: tuple[asyncio.StreamWriter, asyncio.StreamWriter],
        *,
        downstream: bool = False,
    ) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while pair in self._pairs:
                data = await reader.read(65536)
                if not data:  # one side closed: pass the close on
                    if writer.can_write_eof():
                        writer.write_eof()
                    return
                if downstream and self.cut_on is not None and self.cut_on in data:
                    self.cut_on = None
                    self.cut()
                    return
                half = len(data) // 2
                writer.write(data[:half])
                await asyncio.sleep(0)  # a cut here leaves half a frame on the wire
                if pair not in self._pairs:
                    return
                writer.write(data[half:])
                await writer.drain()


@contextlib.contextmanager
def proxy_thread(upstream_port: int) -> Iterator[tuple[CuttingProxy, asyncio.AbstractEventLoop]]:
    """A :class:`CuttingProxy` on its own event loop in a thread, for synchronous tests (a
    browser driven by Playwright): cut with ``loop.call_soon_threadsafe(proxy.cut)``."""
    loop = asyncio.new_event_loop()
    proxy = CuttingProxy(upstream_port)
    started = threading.Event()
    stop = asyncio.Event()

    async def serve() -> None:
        async with proxy:
            started.set()
            await stop.wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    started.wait(10)
    try:
        yield proxy, loop
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
        loop.close()
