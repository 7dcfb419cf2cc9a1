"""A small asyncio TCP proxy that tests put between two peers to add latency or cut connections."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct

from loopback.listening import stop_accepting

CHUNK_BYTES = 65536
QUEUED_CHUNKS = 64  # per direction when delaying: bounds memory, the reader waits when full
LISTEN_ATTEMPTS = 5
_LINGER_RST = struct.pack("ii", 1, 0)  # SO_LINGER on, timeout 0: close() sends RST, not FIN


def _abort(writer: asyncio.StreamWriter | None) -> None:
    """Drop a connection at once: unsent data is discarded and the peer gets a reset."""
    if writer is None:
        return
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
    writer.transport.abort()


def _half_close(writer: asyncio.StreamWriter) -> None:
    """Pass an end-of-stream on, keeping the other direction open."""
    with contextlib.suppress(OSError):
        if writer.can_write_eof():
            writer.write_eof()


async def _close(writer: asyncio.StreamWriter | None) -> None:
    """Close a stream and wait until its socket is released."""
    if writer is None:
        return
    writer.close()
    with contextlib.suppress(Exception):
        await writer.wait_closed()


class _Link:
    """One proxied connection: its client side, its upstream side and the task pumping them."""

    def __init__(self, client: asyncio.StreamWriter) -> None:
        self.client = client
        self.upstream: asyncio.StreamWriter | None = None
        self.task: asyncio.Task[None] | None = None

    def abort(self) -> None:
        """Reset both sides."""
        _abort(self.client)
        _abort(self.upstream)


class TcpProxy:
    """Forwards connections from 127.0.0.1:port to a target; can delay, cut and restore them."""

    def __init__(self, target_host: str, target_port: int, *, delay_s: float = 0.0) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.delay_s = delay_s
        self.connections_total = 0
        self._port = 0
        self._server: asyncio.Server | None = None
        self._accepting = False
        self._closed = False
        self._links: set[_Link] = set()

    @property
    def port(self) -> int:
        """The port the proxy listens on (fixed by start(), kept across cut/restore)."""
        if not self._port:
            raise RuntimeError("the proxy has not been started")
        return self._port

    @property
    def open_connections(self) -> int:
        """Connections being proxied right now."""
        return len(self._links)

    async def start(self) -> int:
        """Listen on a free port of 127.0.0.1 and return it."""
        if self._port or self._closed:
            raise RuntimeError("the proxy was already started")
        self._server = await self._listen(0)
        self._port = int(self._server.sockets[0].getsockname()[1])
        return self._port

    async def cut(self) -> None:
        """Reset every proxied connection and refuse new ones until restore()."""
        self._accepting = False
        server, self._server = self._server, None
        if server is not None:
            await stop_accepting(server.sockets)  # the daemon is reconnecting meanwhile
            server.close()
        links = list(self._links)
        self._links.difference_update(links)
        for link in links:
            link.abort()
        tasks = [link.task for link in links if link.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if server is not None:
            await server.wait_closed()

    async def restore(self) -> None:
        """Listen again on the same port and forward as before."""
        if self._closed:
            raise RuntimeError("the proxy is closed")
        if self._server is None:
            self._server = await self._listen(self.port)

    async def close(self) -> None:
        """Stop listening and drop every connection for good."""
        self._closed = True
        await self.cut()

    async def _listen(self, port: int) -> asyncio.Server:
        self._accepting = True
        for attempt in range(1, LISTEN_ATTEMPTS + 1):
            try:
                return await asyncio.start_server(
                    self._accept, "127.0.0.1", port, reuse_address=True
                )
            except OSError:
                if attempt == LISTEN_ATTEMPTS:
                    self._accepting = False
                    raise
                await asyncio.sleep(0.05 * attempt)  # back off: the port may take a moment
        raise AssertionError("unreachable")

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # A plain callback, so the connection is registered before cut() can run.
        if not self._accepting:
            _abort(writer)  # accepted just before the listener closed
            return
        self.connections_total += 1
        link = _Link(writer)
        self._links.add(link)
        link.task = asyncio.get_running_loop().create_task(self._serve(link, reader))

    async def _serve(self, link: _Link, client_reader: asyncio.StreamReader) -> None:
        try:
            upstream_reader, link.upstream = await asyncio.open_connection(
                self.target_host, self.target_port
            )
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._pipe(client_reader, link.upstream))
                tg.create_task(self._pipe(upstream_reader, link.client))
        except Exception:  # refused upstream, a reset on either side: drop both sides
            link.abort()
        finally:
            self._links.discard(link)
            await _close(link.client)
            await _close(link.upstream)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.delay_s <= 0:
            while data := await reader.read(CHUNK_BYTES):
                writer.write(data)
                await writer.drain()
            _half_close(writer)
            return
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(QUEUED_CHUNKS)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._deliver(queue, writer))
            while True:
                data = await reader.read(CHUNK_BYTES)
                await queue.put((loop.time() + self.delay_s, data))  # b"" carries the EOF
                if not data:
                    break

    @staticmethod
    async def _deliver(queue: asyncio.Queue[tuple[float, bytes]], w: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        while True:
            deadline, data = await queue.get()
            # The delay itself, not a wait for a condition: asyncio may wake a sleeper up to
            # its clock resolution early, and a chunk must never be delivered before its time.
            while (wait := deadline - loop.time()) > 0:  # noqa: ASYNC110
                await asyncio.sleep(wait)
            if not data:
                _half_close(w)
                return
            w.write(data)
            await w.drain()
