"""Closing a listening server without losing a connection it has just accepted."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterable
from typing import Protocol

# Loop turns for an accept already under way: one for asyncio's accept task to build its
# transport, one for the protocol's connection_made, one to spare.
_ACCEPT_TURNS = 3


class _HasFileno(Protocol):
    def fileno(self) -> int: ...


def loopback_socket(port: int = 0) -> socket.socket:
    """A socket bound to 127.0.0.1 for a server to listen on; a restart may take the same port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past the last run's TIME_WAIT
    sock.bind(("127.0.0.1", port))
    return sock


async def stop_accepting(listening: Iterable[_HasFileno]) -> None:
    """Take no new connection on these sockets and let those already accepted attach."""
    # CPython's race (gh-109564, still open upstream): asyncio accepts in a reader callback
    # and attaches the transport in a task one loop turn later. A Server.close() in between
    # trips `assert self._sockets is not None` in Server._attach and drops the accepted
    # socket unclosed: a ResourceWarning at garbage collection, an error under pytest's
    # filterwarnings. Removing the reader first closes the window; the turns below are
    # asyncio's FIFO ready queue, not a guess at timing.
    loop = asyncio.get_running_loop()
    for sock in listening:
        loop.remove_reader(sock.fileno())
    for _ in range(_ACCEPT_TURNS):
        await asyncio.sleep(0)


async def stop_listening(server: asyncio.Server) -> None:
    """Close the listening sockets without the accept race. Connections stay the caller's:
    from Python 3.12 on, ``server.wait_closed()`` waits until they are closed too."""
    await stop_accepting(server.sockets)
    server.close()
