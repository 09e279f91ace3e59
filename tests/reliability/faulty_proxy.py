"""A TCP proxy in front of sshd that counts connection attempts and can stall mid-stream.

Each accepted connection counts as one attempt (also when the target refuses it: the
proxy then closes the client's side, which the client sees as a dropped connection).
With ``stall_after_bytes`` set, a connection accepted while it is set stops forwarding
in both directions once that many client-to-server bytes went through: the server
looks alive (the TCP connection stays open) but never answers again. Without a target
it is a silent server: it accepts and never says a word.
"""

from __future__ import annotations

import asyncio
import contextlib


class FaultyProxy:
    """Forward ``127.0.0.1:<port>`` to ``target``; count attempts; optionally stall.

    Example::

        proxy = FaultyProxy("127.0.0.1", sshd_port, stall_after_bytes=256_000)
        await proxy.start()
        ...  # connect to proxy.port
        assert proxy.accepted == 1
        await proxy.close()
    """

    def __init__(
        self,
        target_host: str,
        target_port: int | None,
        *,
        stall_after_bytes: int | None = None,
    ) -> None:
        self.target = (target_host, target_port)
        self.stall_after_bytes = stall_after_bytes
        self.port = 0
        self.accepted = 0
        self.stalled = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        host, port = self.target
        if port is None:
            self._writers.add(writer)
            return  # silent: the connection stays open until close()
        try:
            up_reader, up_writer = await asyncio.open_connection(host, port)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))
        stall = asyncio.Event()
        budget = self.stall_after_bytes
        pipes = (
            self._pipe(reader, up_writer, stall, budget),
            self._pipe(up_reader, writer, stall, None),
        )
        for pipe in pipes:
            task = asyncio.create_task(pipe)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(
        self,
        src: asyncio.StreamReader,
        dst: asyncio.StreamWriter,
        stall: asyncio.Event,
        budget: int | None,
    ) -> None:
        try:
            while not stall.is_set() and (data := await src.read(65536)):
                if stall.is_set():
                    break
                if budget is not None:
                    data = data[: max(0, budget)]
                    budget -= len(data)
                dst.write(data)
                await dst.drain()
                if budget is not None and budget <= 0:
                    self.stalled += 1
                    stall.set()
            if stall.is_set():
                await asyncio.Event().wait()  # hold the connection open, say nothing
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            dst.close()
            self._writers.discard(dst)

    async def close(self) -> None:
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
