"""The supervisor's drain: bounded, in order, honest about what it could not commit."""

from __future__ import annotations

import asyncio

from loopback.tcpproxy import TcpProxy
from tests.conftest import wait_until
from tests.support.fakefeed import FakeFeed, odd, odds_frame
from tests.support.pipeline import PipelineFactory, build_pipeline, supervise


async def test_shutdown_is_bounded_when_the_database_hangs(database_url: str) -> None:
    host_port, _, dbname = database_url.rpartition("@")[2].partition("/")
    host, _, port = host_port.partition(":")
    proxy = TcpProxy(host, int(port or 5432))
    await proxy.start()
    feed = FakeFeed()
    await feed.start()
    p = await build_pipeline(f"postgresql://postgres@127.0.0.1:{proxy.port}/{dbname}", feed)
    p.shutdown_timeout_s = 1.0
    supervise(p)
    try:
        await feed.wait_connections(1)
        # A hang, not a refusal: new connections are accepted and then never answered.
        proxy.delay_s = 3600
        await proxy.cut()
        await proxy.restore()
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


async def test_readiness_counts_only_the_groups_this_process_streams(
    make_pipeline: PipelineFactory, database_url: str
) -> None:
    """A group handed to another process must not keep /readyz at 503 with its old failures."""
    from types import SimpleNamespace

    from ingestor.config import ServiceSettings
    from ingestor.readiness import Readiness
    from ingestor.storage.db import Pinger
    from ingestor.supervisor import Supervisor

    p = await make_pipeline(
        answer=(503, {"Content-Type": "application/json"}, '{"error": "maintenance"}')
    )
    settings = ServiceSettings(shutdown_timeout_s=5, worker_restart_max_s=1, ready_max_failures=3)
    sup = Supervisor(p.writer, p.workers, p.metrics, p.stop, settings, workers_on_demand=True)
    key = p.group.key
    leases = SimpleNamespace(owned={key}, standby=[])
    pinger = Pinger(database_url)
    ready = Readiness(settings, pinger, p.writer, sup, leases)  # type: ignore[arg-type]
    p.start(sup)
    try:
        await sup.start_worker(key)
        await wait_until(lambda: p.workers[0].failures >= 3)
        ok, text = await ready.check()
        assert not ok and text == f"groups failing: {key}"
        await sup.stop_worker(key)  # another process took it over
        leases.owned = set()
        assert await ready.check() == (True, "streaming 0 group(s)")
        assert p.sample("ingestor_stream_consecutive_failures", group=key) == 0
    finally:
        await pinger.close()
