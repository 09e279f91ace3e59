"""A TCP proxy between a client and RabbitMQ that tests can cut, as aio-pika's tests do."""

from __future__ import annotations

import asyncio
import contextlib


class TcpProxy:
    """Forward <listen_host>:<port> to ``target``; :meth:`cut` drops every open connection.

    ``rate_bytes_per_s`` slows each direction of each connection to about that rate
    (a slow link, so that a transfer can be interrupted halfway). ``listen_host``
    (default 127.0.0.1) can be, for example, the root end of a namespace's uplink.
    While :attr:`refusing` is true, new connections are closed at once (a host that is
    down: the client keeps failing to reconnect). :meth:`freeze` makes the open
    connections go silent without closing them (a partitioned or vanished peer: only
    heartbeats notice).
    """

    def __init__(
        self,
        target_host: str,
        target_port: int,
        *,
        rate_bytes_per_s: float | None = None,
        listen_host: str = "127.0.0.1",
    ) -> None:
        self.target = (target_host, target_port)
        self.listen_host = listen_host
        self.rate = rate_bytes_per_s
        self.port = 0
        self.connections = 0
        self.refusing = False
        self._frozen: set[asyncio.StreamWriter] = set()
        self._thaw = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self, port: int = 0) -> None:
        """Listen on ``port`` (0: a free one, then in :attr:`port`)."""
        self._server = await asyncio.start_server(self._accept, self.listen_host, port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refusing:
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self.connections += 1
        self._writers.update((writer, up_writer))
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(src, dst))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        chunk = 65536 if self.rate is None else max(1024, int(self.rate / 20))
        try:
            while data := await src.read(chunk):
                if dst in self._frozen:
                    await self._thaw.wait()  # never set: silent until the proxy closes
                dst.write(data)
                await dst.drain()
                if self.rate is not None:
                    await asyncio.sleep(len(data) / self.rate)
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            dst.close()
            self._writers.discard(dst)

    def cut(self) -> int:
        """Drop every proxied connection at once (both directions); return how many."""
        writers = list(self._writers)
        for writer in writers:
            transport = writer.transport
            transport.abort()
        self._writers.clear()
        return len(writers) // 2

    def freeze(self) -> int:
        """Stop forwarding on every open connection, leaving it open; return how many.
        Connections made afterwards work."""
        self._frozen.update(self._writers)
        return len(self._writers) // 2

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
