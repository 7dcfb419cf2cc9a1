"""The supervisor's drain: bounded, in order, honest about what it could not commit."""

from __future__ import annotations

import asyncio

from tests.conftest import wait_until
from tests.support.fakefeed import FakeFeed, odd
from tests.support.pipeline import build_pipeline, supervise
from tests.support.tcpproxy import TcpProxy


async def test_shutdown_is_bounded_when_the_database_hangs(database_url: str) -> None:
    host_port, _, dbname = database_url.rpartition("@")[2].partition("/")
    host, _, port = host_port.partition(":")
    proxy = TcpProxy(host, int(port or 5432))
    await proxy.start()
    feed = FakeFeed()
    await feed.start()
    p = await build_pipeline(f"postgresql://postgres@127.0.0.1:{proxy.port}/{dbname}", feed,
                             shutdown_timeout_s=1.0)  # fmt: skip
    supervise(p)
    try:
        await feed.wait_connections(1)
        await proxy.cut()
        from tests.support.fakefeed import odds_frame

        feed.send(odds_frame("copilot-odds", "1-0", [odd("a")]))
        await wait_until(lambda: p.sample("ingestor_events_queued_total") >= 1)
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert await p.shutdown() == 1  # the writer could not commit: say so, do not hang
        assert loop.time() - started < 3
    finally:
        await p.close()
        await feed.stop()
        await proxy.close()
