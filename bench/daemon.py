"""The real daemon against the bench feed: one run, from start to every group's last entry
committed, with commit times read from the database cursors and the daemon's own log kept."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from bench.feed import API, Feed
from bench.workload import SPORT, Workload

CURSORS = "SELECT group_key, last_entry_id FROM stream_cursors"


def _stat(pid: str) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # gone meanwhile
        return None
    name = text[text.index("(") + 1 : text.rindex(")")]
    return [name, *text.rsplit(")", 1)[1].split()]


def postgres_cpu_s() -> float:
    """CPU seconds of every ``postgres`` process on this host so far, ended backends included
    (the postmaster's reaped children's time)."""
    ticks = 0
    for pid in os.listdir("/proc"):
        if pid.isdigit() and (fields := _stat(pid)) is not None and fields[0] == "postgres":
            # utime, stime, cutime, cstime: fields 14-17 of proc(5), 12-15 in this list
            ticks += sum(int(f) for f in fields[12:16])
    return ticks / os.sysconf("SC_CLK_TCK")


class Daemon:
    """``python -m ingestor run`` as a subprocess, its JSON log at info level in a file."""

    def __init__(
        self, feed_port: int, db_url: str, w: Workload, log_path: Path, rehydrate: bool = True
    ) -> None:
        self.config = log_path.with_suffix(".toml")
        leagues = ", ".join(f'"{lg}"' for lg in w.leagues)
        self.config.write_text(
            f'api_base_url = "http://127.0.0.1:{feed_port}{API}"\n'
            f"rehydrate = {'true' if rehydrate else 'false'}\n"
            f"leagues_per_connection = {w.leagues_per_connection}\n"
            'log_level = "info"\nlog_format = "json"\n'
            'metrics_port = 0\nmetrics_host = "127.0.0.1"\n'
            f'[[streams]]\nkind = "copilot"\nsport = "{SPORT}"\nleagues = [{leagues}]\n'
        )
        self.db_url = db_url
        self.log_path = log_path
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        """Spawn it with the database and a key in its environment."""
        env = {**os.environ, "INGESTOR_DATABASE_URL": self.db_url, "OPTICODDS_API_KEY": "bench"}
        env.pop("INGESTOR_CONFIG", None)
        with self.log_path.open("wb") as log:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "ingestor",
                "run",
                "--config",
                str(self.config),
                env=env,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
            )

    def cpu_s(self) -> float:
        """User and system CPU seconds so far."""
        assert self.proc is not None
        fields = _stat(str(self.proc.pid))
        assert fields is not None, "the daemon is gone"
        return (int(fields[12]) + int(fields[13])) / os.sysconf("SC_CLK_TCK")

    def peak_rss_mb(self) -> float:
        """Peak resident memory so far (VmHWM)."""
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def exited(self) -> bool:
        """Whether the process has ended (by itself or by ``stop``)."""
        return self.proc is not None and self.proc.returncode is not None

    async def stop(self) -> int:
        """SIGTERM (unless it already ended), then its exit code."""
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(self.proc.wait(), 60)
        except TimeoutError:
            self.proc.kill()  # never left behind
            await self.proc.wait()
            raise

    async def rehydrated(self, groups: int, timeout_s: float) -> None:
        """Wait until ``groups`` re-hydrations are logged as done (or ``timeout_s`` passed)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not self.exited():
            if self.log_path.read_bytes().count(b'"event":"rehydrate_done"') >= groups:
                return
            await asyncio.sleep(0.05)

    def log_summary(self) -> dict[str, Any]:
        """Re-hydration figures (``rehydrate_done`` lines) and the warnings and errors logged."""
        done: list[dict[str, Any]] = []
        problems: Counter[str] = Counter()
        for line in self.log_path.read_bytes().splitlines():
            try:
                e = orjson.loads(line)
            except orjson.JSONDecodeError:
                problems["(not JSON)"] += 1
                continue
            if e.get("event") == "rehydrate_done":
                done.append(e)
            if e.get("level") in ("warning", "error", "critical"):
                problems[f"{e['level']}:{e.get('event')}"] += 1
        return {
            "rehydrations": len(done),
            "rows": sum(e.get("rows", 0) for e in done),
            "seconds_max": max((e.get("seconds", 0.0) for e in done), default=0.0),
            "results": dict(Counter(e.get("result") for e in done)),
            "problems": dict(problems),
        }


@dataclass
class Run:
    """What one run measured; times are wall clock (``time.time()``)."""

    written_at: dict[str, list[float]]
    committed_at: dict[str, list[float]]
    first_write: float
    seconds: float  # first frame written to the last group's last entry committed
    daemon_cpu_s: float
    peak_rss_mb: float
    exit_code: int
    feed_bytes: int
    connections: dict[str, int]
    rest_requests: int
    log: dict[str, Any]
    postgres_cpu_s: float  # every postgres process of the host, the writer's backends and more
    bench_cpu_s: float  # this process: the feed and the cursor watcher
    extra: dict[str, Any] = field(default_factory=dict)

    def latencies_ms(self, after: float = 0.0) -> list[float]:
        """Write-to-commit of every frame written at ``after`` or later, all groups together."""
        return [
            (c - s) * 1000
            for key, written in self.written_at.items()
            for s, c in zip(written, self.committed_at[key], strict=True)
            if s >= after
        ]


async def watch_cursors(
    url: str, w: Workload, period_s: float, idle_timeout_s: float, daemon: Daemon | None = None
) -> dict[str, list[float]]:
    """Poll every group's committed cursor; the commit (visibility) time of every frame."""
    index = {g.key: {e: i for i, e in enumerate(g.entry_ids)} for g in w.groups}
    committed = {g.key: [0.0] * len(g.entry_ids) for g in w.groups}
    done = dict.fromkeys(index, 0)
    left = {g.key for g in w.groups if g.entry_ids}
    moved = time.monotonic()
    conn = await asyncpg.connect(url)
    try:
        while left:
            rows = await conn.fetch(CURSORS)
            now = time.time()
            for key, cursor in rows:
                i = index.get(key, {}).get(cursor)
                if i is None or i < done[key]:
                    continue
                committed[key][done[key] : i + 1] = [now] * (i + 1 - done[key])
                done[key] = i + 1
                moved = time.monotonic()
                if done[key] == len(committed[key]):
                    left.discard(key)
            if daemon is not None and daemon.exited():
                raise RuntimeError(f"the daemon exited early; its log: {daemon.log_path}")
            if time.monotonic() - moved > idle_timeout_s:
                raise TimeoutError(
                    f"no cursor moved for {idle_timeout_s} s; still waiting for "
                    f"{sorted(left)}; positions {done}"
                )
            await asyncio.sleep(period_s)
    finally:
        await conn.close()
    return committed


During = Callable[[Daemon, Feed], Awaitable[dict[str, Any]]]


@dataclass(frozen=True)
class Pace:
    """How a run is offered and watched: ``rate`` odds/s over all groups (0: flat out), the
    cursor poll period, how long the cursors may stand still before the run is given up."""

    rate: float = 0.0
    period_s: float = 0.01
    idle_timeout_s: float = 120.0


async def run_daemon(
    db_url: str,
    pg_url: str,
    w: Workload,
    log_path: Path,
    pace: Pace = Pace(),
    during: During | None = None,
) -> Run:
    """The daemon (reaching PostgreSQL at ``db_url``) reads ``w`` from a fresh feed, flat out or
    at ``rate`` odds/s over all groups, until every group's last entry is committed (read at
    ``pg_url``); ``during`` runs beside it (a database outage) and adds its figures."""
    feed = Feed(w, rate=pace.rate)
    daemon = Daemon(await feed.start(), db_url, w, log_path)
    code = -1
    watcher: asyncio.Task[dict[str, list[float]]] | None = None
    try:
        await daemon.start()
        watcher = asyncio.create_task(
            watch_cursors(pg_url, w, pace.period_s, pace.idle_timeout_s, daemon)
        )
        writing = asyncio.ensure_future(feed.writing.wait())
        await asyncio.wait([writing, watcher], return_when=asyncio.FIRST_COMPLETED)
        writing.cancel()
        cpu0, pg0, own0 = daemon.cpu_s(), postgres_cpu_s(), time.process_time()
        extra = await during(daemon, feed) if during is not None else {}
        committed = await watcher
        cpu, rss = daemon.cpu_s() - cpu0, daemon.peak_rss_mb()
        pg_cpu, own_cpu = postgres_cpu_s() - pg0, time.process_time() - own0
        # Not measured: a short run may end before the snapshots do; the report wants them.
        await daemon.rehydrated(len(w.groups), pace.idle_timeout_s)
    finally:
        if watcher is not None and not watcher.done():
            watcher.cancel()
        feed.done.set()
        if daemon.proc is not None:
            code = await daemon.stop()
        await feed.close()
    last = max(c[-1] for c in committed.values() if c)
    return Run(
        feed.written_at,
        committed,
        feed.first_write,
        last - feed.first_write,
        cpu,
        rss,
        code,
        feed.bytes,
        dict(feed.connections),
        sum(feed.rest_requests.values()),
        daemon.log_summary(),
        pg_cpu,
        own_cpu,
        extra,
    )
