"""The TCP proxy's added latency and end of stream, against an in-process echo server."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import pytest

from loopback.listening import stop_listening
from loopback.tcpproxy import TcpProxy
from tests.conftest import wait_until

DELAY_S = 0.05
WAIT_S = 5.0


@pytest.fixture
async def echo_port() -> AsyncIterator[int]:
    """A plain echo server on 127.0.0.1; yields its port."""
    handlers: set[asyncio.Task[None]] = set()

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        handlers.add(task)
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass  # the proxy resets its upstream side when it is cut or closed
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    yield int(server.sockets[0].getsockname()[1])
    await stop_listening(server)
    for task in handlers:
        task.cancel()
    await asyncio.gather(*handlers, return_exceptions=True)
    await server.wait_closed()


async def test_delay_applies_each_way(echo_port: int) -> None:
    proxy = TcpProxy("127.0.0.1", echo_port, delay_s=DELAY_S)
    reader, writer = await asyncio.open_connection("127.0.0.1", await proxy.start())
    try:
        started = time.monotonic()
        writer.write(b"ping")
        await writer.drain()
        assert await asyncio.wait_for(reader.readexactly(4), WAIT_S) == b"ping"
        assert time.monotonic() - started >= 2 * DELAY_S
    finally:
        writer.close()
        await writer.wait_closed()
        await proxy.close()


async def test_delay_pipelines_chunks_in_order(echo_port: int) -> None:
    proxy = TcpProxy("127.0.0.1", echo_port, delay_s=DELAY_S)
    reader, writer = await asyncio.open_connection("127.0.0.1", await proxy.start())
    messages = [b"message %03d\n" % i for i in range(200)]
    try:
        started = time.monotonic()
        for message in messages:
            writer.write(message)
            await writer.drain()
            await asyncio.sleep(0)  # a yield, not a wait: lets the proxy read separate chunks
        echoed = await asyncio.wait_for(reader.readexactly(sum(map(len, messages))), 30)
        elapsed = time.monotonic() - started
        assert echoed == b"".join(messages)
        assert elapsed < 5.0, "chunks were delivered one delay at a time"
    finally:
        writer.close()
        await writer.wait_closed()
        await proxy.close()


async def test_end_of_stream_passes_through(echo_port: int) -> None:
    proxy = TcpProxy("127.0.0.1", echo_port, delay_s=DELAY_S)
    reader, writer = await asyncio.open_connection("127.0.0.1", await proxy.start())
    try:
        writer.write(b"last words")
        writer.write_eof()
        assert await asyncio.wait_for(reader.read(), WAIT_S) == b"last words"
        await wait_until(lambda: proxy.open_connections == 0, timeout_s=WAIT_S)
    finally:
        writer.close()
        await writer.wait_closed()
        await proxy.close()
