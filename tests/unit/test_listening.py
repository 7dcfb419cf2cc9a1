"""Closing a test server while a client connects loses no socket (CPython gh-109564)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import socket
import sys
from collections.abc import Iterator

import pytest

from loopback.listening import loopback_socket, stop_listening


@contextlib.contextmanager
def unraisable() -> Iterator[list[str]]:
    """What the interpreter could not raise meanwhile (an unclosed transport's warning)."""
    # Installed in the test body: pytest puts its own hook back between a test's phases.
    seen: list[str] = []
    before = sys.unraisablehook
    sys.unraisablehook = lambda u: seen.append(f"{u.exc_type.__name__}: {u.exc_value}")
    try:
        yield seen
        gc.collect()  # the leaked transport warns from __del__
    finally:
        sys.unraisablehook = before


async def _connect_then_close(turns: int) -> None:
    server = await asyncio.start_server(lambda _r, w: w.close(), sock=loopback_socket())
    port = server.sockets[0].getsockname()[1]
    # A blocking connect: the kernel completes it before the loop has accepted anything.
    client = socket.create_connection(("127.0.0.1", port))
    try:
        for _ in range(turns):  # the close lands at each step of the accept in turn
            await asyncio.sleep(0)
        await stop_listening(server)
        await server.wait_closed()
    finally:
        client.close()


@pytest.mark.parametrize("turns", range(8))
async def test_a_connection_accepted_as_the_server_closes_is_not_leaked(turns: int) -> None:
    with unraisable() as seen:
        await _connect_then_close(turns)
    assert seen == []
