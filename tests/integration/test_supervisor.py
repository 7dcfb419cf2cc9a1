"""The supervisor's drain: bounded, in order, honest about what it could not commit."""

from __future__ import annotations

import asyncio
import re
from typing import Any

from loopback.tcpproxy import TcpProxy
from tests.conftest import free_port, wait_until
from tests.support.fakefeed import FakeFeed, Unreachable, odd, odds_frame
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
        assert not ok and re.fullmatch(
            rf"{re.escape(key)} connecting for \d+ s, \d+ failed attempts?", text
        ), text
        await sup.stop_worker(key)  # another process took it over
        leases.owned = set()
        assert await ready.check() == (True, "streaming 0 group(s)")
        # and it no longer says anything of the group's connection (the owner does)
        labels = {"group": key}
        for name in ("ingestor_stream_consecutive_failures", "ingestor_stream_connected"):
            assert p.metrics.registry.get_sample_value(name, labels) is None, name
        assert p.metrics.registry.get_sample_value("ingestor_stream_wanted", labels) == 1
    finally:
        await pinger.close()


async def _readiness(p: Any, database_url: str, **settings: Any) -> tuple[Any, Any, Any]:
    """Supervisor, readiness and pinger over a pipeline whose one group this process owns."""
    from types import SimpleNamespace

    from ingestor.config import ServiceSettings
    from ingestor.readiness import Readiness
    from ingestor.storage.db import Pinger
    from ingestor.supervisor import Supervisor

    service = ServiceSettings(shutdown_timeout_s=5, worker_restart_max_s=1, **settings)
    sup = Supervisor(p.writer, p.workers, p.metrics, p.stop, service, workers_on_demand=True)
    leases = SimpleNamespace(owned={p.group.key}, standby=[])
    pinger = Pinger(database_url)
    return sup, Readiness(service, pinger, p.writer, sup, leases), pinger  # type: ignore[arg-type]


async def test_not_ready_while_an_owned_group_has_not_connected_within_the_bound(
    make_pipeline: PipelineFactory, database_url: str
) -> None:
    """Feed unreachable: ready while the first attempts run, 503 once the group has been
    without a connection for ready_connect_s, naming it; ready again once it streams."""
    port = free_port()
    p = await make_pipeline(feed=Unreachable(f"http://127.0.0.1:{port}/api/v3"))
    sup, ready, pinger = await _readiness(
        p, database_url, ready_connect_s=1.5, ready_max_failures=10_000
    )
    key = p.group.key
    p.start(sup)
    try:
        await sup.start_worker(key)
        ok, text = await ready.check()  # the first attempts, within the bound
        assert ok and text.startswith(f"streaming 1 group(s): {key} connecting for "), text
        _, text = await wait_until(_not_ready(ready), timeout_s=5)
        assert re.fullmatch(rf"{re.escape(key)} connecting for \d+ s, \d+ failed attempts?", text)
        feed = FakeFeed(port=port)  # the feed comes up where it was expected
        await feed.start()
        try:
            await wait_until(_ready(ready), timeout_s=10)
            assert (await ready.check())[1] == f"streaming 1 group(s): {key} connected"
        finally:
            await sup.stop_worker(key)
            await feed.stop()
    finally:
        await pinger.close()


async def test_not_ready_while_the_key_is_refused(
    make_pipeline: PipelineFactory, database_url: str
) -> None:
    p = await make_pipeline(api_key="wrong-key-0000")
    sup, ready, pinger = await _readiness(p, database_url)
    key = p.group.key
    p.start(sup)
    try:
        await sup.start_worker(key)
        _, text = await wait_until(_not_ready(ready))
        assert text == f"{key} refused (HTTP 401: Invalid or inactive API key)", text
        await sup.stop_worker(key)
    finally:
        await pinger.close()


def _not_ready(ready: Any) -> Any:
    async def check() -> tuple[bool, str] | None:
        ok, text = await ready.check()
        return None if ok else (ok, text)

    return check


def _ready(ready: Any) -> Any:
    async def check() -> bool:
        return bool((await ready.check())[0])

    return check
