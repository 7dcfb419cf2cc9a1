"""Randomised faults for a while, then the ledger. CI runs a short fixed-seed run; `scripts/soak`
runs it for longer (SOAK_SECONDS, SOAK_SEED)."""

from __future__ import annotations

import os
import random
import time
from collections import Counter
from typing import Any

from loopback.tcpproxy import TcpProxy
from tests.conftest import wait_until
from tests.support.pipeline import Pipeline, build_pipeline, copilot_stream, supervise
from tests.support.sim import RunningSim, connected, history_holds, settle, start_sim

SECONDS = float(os.environ.get("SOAK_SECONDS", "8"))
SEED = int(os.environ.get("SOAK_SEED", "20261125"))
FAULTS = (
    "cut_mid_frame",
    "drop",
    "restart_with_gap",
    "dup_reorder",
    "replay_toggle",
    "stall",
    "database_cut",
)


async def _fault(
    name: str, rng: random.Random, sim: RunningSim, p: Pipeline, proxy: TcpProxy
) -> None:
    server, faults = sim.server, sim.server.faults
    if name == "cut_mid_frame":
        server.cut_all(mid_frame=True)
    elif name == "drop":
        server.cut_all(mid_frame=False)
    elif name == "restart_with_gap":
        await sim.stop()
        server.world.emit(rng.randint(5, 40))
        await sim.start()
    elif name == "dup_reorder":
        faults.duplicate_rate = rng.choice((0.0, 0.1, 0.3))
        faults.reorder_rate = rng.choice((0.0, 0.1, 0.3))
    elif name == "replay_toggle":
        faults.honour_last_entry_id = not faults.honour_last_entry_id
    elif name == "stall":
        before = p.sample("ingestor_stream_reconnects_total", group=p.group.key, reason="stall")
        faults.stall = True
        await wait_until(
            lambda: (
                p.sample("ingestor_stream_reconnects_total", group=p.group.key, reason="stall")
                > before
            ),
            timeout_s=10,
        )
        faults.stall = False
    elif name == "database_cut":
        await proxy.cut()
        await server.emit(rng.randint(5, 30))
        await wait_until(
            lambda: (
                p.sample("ingestor_db_errors_total", error="ConnectionResetError")
                + p.sample("ingestor_db_errors_total", error="ConnectionRefusedError")
                + p.sample("ingestor_db_errors_total", error="ConnectionDoesNotExistError")
                > 0
                or p.queue.empty()
            ),
            timeout_s=10,
        )
        await proxy.restore()


async def test_random_faults_end_in_the_ledger(database_url: str, pg: Any) -> None:
    rng = random.Random(SEED)
    host_port, _, dbname = database_url.rpartition("@")[2].partition("/")
    host, _, port = host_port.partition(":")
    proxy = TcpProxy(host, int(port or 5432))
    await proxy.start()
    # The vendor's historical budget (10 calls per 15 s) would make a test of repair a test of
    # patience: here it is 20 times larger, on both sides (tests/system/test_gaps.py keeps the
    # vendor's own).
    sim = await start_sim(seed=SEED, historical_calls_per_window=200)
    p = await build_pipeline(
        f"postgresql://postgres@127.0.0.1:{proxy.port}/{dbname}",
        sim,
        streams=[copilot_stream(["NBA", "NCAAB"])],
        rehydrate=True,
        stall_timeout_s=0.3,
    )
    # The writer and gap recovery both reach PostgreSQL through the proxy that we cut.
    supervise(p)
    done: Counter[str] = Counter()
    try:
        await connected(sim)
        first = len(sim.server.world.log)
        deadline = time.monotonic() + SECONDS
        while time.monotonic() < deadline:
            await sim.server.emit(rng.randint(5, 50))
            name = rng.choice(FAULTS)
            await _fault(name, rng, sim, p, proxy)
            done[name] += 1
        f = sim.server.faults
        f.duplicate_rate = f.reorder_rate = 0.0
        # Pings now come faster than the stall bound (0.3 s): an idle feed no longer looks
        # stalled, so the reconnects (and the gaps each leaves) end with the faults.
        f.ping_interval_s = 0.1
        await sim.server.emit(20)
        await settle(pg, sim, timeout_s=60, context=f"seed {SEED}, faults {dict(done)}: ")
        # A long run leaves thousands of gaps to repair at the vendor's (raised) budget: the
        # wait grows with it, and the check waits for the reconnects to stop.
        await history_holds(pg, sim, since=first, timeout_s=max(120, SECONDS * 2), quiet_s=3)
        print(
            f"seed {SEED}, {SECONDS:.0f}s, faults: {dict(done)}, "
            f"events {len(sim.server.world.log)}, connections {sim.server.connections_total}"
        )
        assert await p.shutdown() == 0
    finally:
        await p.close()
        await sim.stop()
        await proxy.close()
