"""The benchmark: COPY ceiling, write path, end to end, latency, naive baseline, stall.

    .venv/bin/python -m bench.run [--odds 1000000] [--latency-s 10] [--naive-s 15] [--stall-s 30]

Everything runs in one go on one database (``BENCH_DATABASE_URL``, default a fresh
``ingestor_bench`` on the local server) and prints a markdown table; JSON and markdown land in
``bench/results/``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import signal
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from bench.feed import Feed, Workload, build
from ingestor.config import Settings
from ingestor.domain.decode import decode_event
from ingestor.metrics import Metrics
from ingestor.storage import sql
from ingestor.storage.batch import build_batch
from ingestor.storage.migrations import upgrade
from ingestor.storage.writer import Writer
from tests.support.tcpproxy import TcpProxy

ROOT = Path(__file__).parents[1]
ADMIN = os.environ.get("BENCH_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
DB = "ingestor_bench"
TABLES = "odds, odds_history, fixtures, fixture_status_history, stream_cursors"


def _url(base: str, port: int | None = None) -> str:
    head, _, _ = base.rpartition("/")
    if port is not None:
        user, _, _ = head.removeprefix("postgresql://").partition("@")
        head = f"postgresql://{user}@127.0.0.1:{port}"
    return f"{head}/{DB}"


@dataclass
class Results:
    """Every figure of one run."""

    figures: dict[str, Any] = field(default_factory=dict)

    def add(self, name: str, **values: Any) -> None:
        self.figures[name] = values
        print(f"  {name}: {values}", flush=True)


async def _fresh_db() -> str:
    conn = await asyncpg.connect(ADMIN)
    await conn.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
    await conn.execute(f"CREATE DATABASE {DB}")
    await conn.close()
    url = _url(ADMIN)
    await asyncio.to_thread(upgrade, url)
    conn = await asyncpg.connect(url)
    await conn.execute(
        "CREATE TABLE naive_odds (id text PRIMARY KEY, fixture_id text, market text, name text,"
        " price double precision, points double precision, status text, updated_at timestamptz)"
    )
    await conn.close()
    return url


async def _truncate(url: str) -> None:
    conn = await asyncpg.connect(url)
    await conn.execute(f"TRUNCATE {TABLES}, naive_odds")
    await conn.execute("CHECKPOINT")
    await conn.close()


def _decode(w: Workload) -> list[Any]:
    now = datetime.now(UTC)
    out = []
    for frame, entry in zip(w.frames, w.entry_ids, strict=True):
        head, _, data = frame.partition(b"\ndata: ")
        etype = head.split(b"\n", 1)[0].removeprefix(b"event: ").decode()
        out.append(decode_event("bench", "copilot", etype, data.rstrip(b"\n"), entry, now))
    return out


async def copy_ceiling(url: str, events: list[Any], r: Results, repeats: int = 3) -> None:
    """Binary COPY of the same history rows into a table shaped and indexed like odds_history;
    the median of ``repeats`` fresh tables, because one COPY run varies by 10-20% here."""
    records = build_batch(events).odds_history
    conn = await asyncpg.connect(url)
    runs = []
    for _ in range(repeats):
        await conn.execute("DROP TABLE IF EXISTS copy_ceiling")
        await conn.execute("CREATE TABLE copy_ceiling (LIKE odds_history INCLUDING ALL)")
        await conn.execute("CHECKPOINT")
        started = time.perf_counter()
        for i in range(0, len(records), 5000):
            await conn.copy_records_to_table(
                "copy_ceiling", records=records[i : i + 5000], columns=sql.ODDS_HISTORY_COLUMNS
            )
        runs.append(round(len(records) / (time.perf_counter() - started)))
    await conn.execute("DROP TABLE copy_ceiling")
    await conn.close()
    runs.sort()
    r.add("copy_ceiling", rows=len(records), rows_per_s=runs[len(runs) // 2],
          runs_rows_per_s=runs)  # fmt: skip


async def write_path(url: str, events: list[Any], r: Results) -> None:
    """The writer alone: staging COPY, history, newer-wins merge, cursor."""
    queue: asyncio.Queue[Any] = asyncio.Queue()
    for ev in events:
        queue.put_nowait(ev)
    queue.put_nowait(None)
    defaults = Settings.model_fields  # the daemon's own batch cap and connection count
    writer = Writer(url, queue, Metrics(), batch_max_rows=defaults["writer_batch_max_rows"].default,
                    retry_max_s=1, connections=defaults["writer_connections"].default)  # fmt: skip
    rows = sum(len(e.odds) for e in events)
    started = time.perf_counter()
    await writer.run()
    elapsed = time.perf_counter() - started
    r.add("write_path", rows=rows, seconds=round(elapsed, 2), rows_per_s=round(rows / elapsed),
          flushes=writer.flushes)  # fmt: skip


class Daemon:
    """The real daemon as a subprocess, with CPU and memory readings."""

    def __init__(self, feed_port: int, db_url: str, tmp: Path) -> None:
        self.config = tmp / "bench.toml"
        self.config.write_text(
            f'api_base_url = "http://127.0.0.1:{feed_port}/api/v3"\nrehydrate = false\n'
            'log_level = "warning"\nmetrics_port = 0\nmetrics_host = "127.0.0.1"\n'
            '[[streams]]\nkind = "copilot"\nsport = "basketball"\nleagues = ["NBA"]\n'
        )
        self.db_url = db_url
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        env = {**os.environ, "INGESTOR_DATABASE_URL": self.db_url, "OPTICODDS_API_KEY": "bench"}
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "ingestor", "run", "--config", str(self.config), env=env,
            stdout=asyncio.subprocess.DEVNULL,
        )  # fmt: skip

    def cpu_s(self) -> float:
        assert self.proc is not None
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def peak_rss_mb(self) -> float:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return 0.0

    async def stop(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(self.proc.wait(), 60)


async def _watch_cursor(url: str, w: Workload, feed: Feed, period_s: float) -> list[float]:
    """Poll the committed cursor; returns the commit (visibility) time of every entry."""
    index = {e: i for i, e in enumerate(w.entry_ids)}
    committed_at = [0.0] * len(w.entry_ids)
    done = 0
    conn = await asyncpg.connect(url)
    try:
        while done < len(w.entry_ids):
            cursor = await conn.fetchval("SELECT last_entry_id FROM stream_cursors")
            now = time.time()
            if cursor is not None:
                upto = index[cursor] + 1
                for i in range(done, upto):
                    committed_at[i] = now
                done = max(done, upto)
            await asyncio.sleep(period_s)
    finally:
        await conn.close()
    feed.done.set()
    return committed_at


async def end_to_end(db_url: str, pg_url: str, w: Workload, r: Results, name: str,
                     tmp: Path) -> None:  # fmt: skip
    """The daemon against the feed flat out, until every odd is committed."""
    await _truncate(pg_url)
    feed = Feed(w)
    daemon = Daemon(await feed.start(), db_url, tmp)
    await daemon.start()
    cpu0 = None
    watcher = asyncio.create_task(_watch_cursor(pg_url, w, feed, 0.01))
    while not feed.written_at:
        await asyncio.sleep(0.01)
    cpu0 = daemon.cpu_s()
    committed = await watcher
    elapsed = committed[-1] - feed.written_at[0]
    cpu = daemon.cpu_s() - cpu0
    rss = daemon.peak_rss_mb()
    await daemon.stop()
    await feed.close()
    r.add(name, odds=w.total_odds, events=len(w.frames), seconds=round(elapsed, 2),
          odds_per_s=round(w.total_odds / elapsed), events_per_s=round(len(w.frames) / elapsed),
          mb_per_s=round(feed.bytes / elapsed / 1e6, 1), daemon_cpu=round(cpu / elapsed, 2),
          peak_rss_mb=round(rss))  # fmt: skip


def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def latency(url: str, rate: int, seconds: float, r: Results, tmp: Path) -> None:
    """Feed write to commit (read from the database) at a fixed offered rate."""
    await _truncate(url)
    w = build(int(rate * seconds), seed=rate)
    feed = Feed(w, rate=rate)
    daemon = Daemon(await feed.start(), url, tmp)
    await daemon.start()
    committed = await _watch_cursor(url, w, feed, 0.002)
    await daemon.stop()
    await feed.close()
    lat = [(c - s) * 1000 for c, s in zip(committed, feed.written_at, strict=True)]
    skip = len(lat) // 10  # the first second is start-up, not steady state
    lat = lat[skip:]
    r.add(f"latency_{rate}", offered_odds_per_s=rate, p50_ms=round(_pct(lat, 0.5), 1),
          p99_ms=round(_pct(lat, 0.99), 1), max_ms=round(max(lat), 1), events=len(lat))  # fmt: skip


async def naive(pg_url: str, w: Workload, r: Results, name: str, seconds: float) -> None:
    """The vendor-sample loop with one INSERT per odd, for ``seconds``."""
    await _truncate(pg_url)
    feed = Feed(w)
    port = await feed.start()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "bench" / "naive.py"),
        f"http://127.0.0.1:{port}/api/v3/stream/copilot/basketball/odds", pg_url,
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    await asyncio.sleep(seconds)  # the measurement window itself
    proc.send_signal(signal.SIGTERM)
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    feed.done.set()
    await feed.close()
    got = orjson.loads(out.strip().splitlines()[-1])
    r.add(name, odds=got["odds"], seconds=round(got["seconds"], 1),
          odds_per_s=round(got["odds"] / got["seconds"]))  # fmt: skip


def _port(url: str) -> int:
    return int(url.rpartition(":")[2].partition("/")[0])


async def stall(pg_url: str, w: Workload, r: Results, tmp: Path, outage_s: float) -> None:
    """PostgreSQL unreachable for ``outage_s`` at full feed rate: memory, then the drain."""
    await _truncate(pg_url)
    proxy = TcpProxy("127.0.0.1", _port(ADMIN))
    port = await proxy.start()
    feed = Feed(w)
    daemon = Daemon(await feed.start(), _url(ADMIN, port), tmp)
    await daemon.start()
    watcher = asyncio.create_task(_watch_cursor(pg_url, w, feed, 0.05))
    await asyncio.sleep(3)  # full rate first
    await proxy.cut()
    await asyncio.sleep(outage_s)  # the outage itself
    rss_during = daemon.peak_rss_mb()
    await proxy.restore()
    restored = time.time()
    committed = await watcher
    rss = daemon.peak_rss_mb()
    await daemon.stop()
    await feed.close()
    await proxy.close()
    r.add("stall", outage_s=outage_s, peak_rss_mb_during=round(rss_during),
          peak_rss_mb=round(rss), drain_s=round(committed[-1] - restored, 1))  # fmt: skip


async def main(args: argparse.Namespace) -> int:
    r = Results()
    tmp = ROOT / "bench" / "results"
    tmp.mkdir(parents=True, exist_ok=True)
    url = await _fresh_db()
    print(f"building {args.odds} odds ...", flush=True)
    w = build(args.odds)
    events = _decode(w)
    await copy_ceiling(url, events, r)
    await _truncate(url)
    await write_path(url, events, r)
    del events
    await end_to_end(url, url, w, r, "end_to_end", tmp)
    for rate in (1500, 5000, 20000):
        await latency(url, rate, args.latency_s, r, tmp)
    small = build(min(args.odds, 300_000), seed=9)
    await naive(url, small, r, "naive_loopback", args.naive_s)
    proxy = TcpProxy("127.0.0.1", _port(ADMIN), delay_s=0.001)
    far = _url(ADMIN, await proxy.start())
    await naive(far, small, r, "naive_1ms", args.naive_s)
    await end_to_end(far, url, build(min(args.odds, 500_000), seed=5), r, "end_to_end_1ms", tmp)
    await proxy.close()
    await stall(url, w, r, tmp, args.stall_s)
    _report(r, tmp, await _machine(url))
    return 0


async def _machine(url: str) -> dict[str, Any]:
    conn = await asyncpg.connect(url)
    try:
        postgres = await conn.fetchval("SHOW server_version")
    finally:
        await conn.close()
    return {"date": datetime.now(UTC).date().isoformat(), "cores": os.cpu_count(),
            "postgres": postgres, "python": platform.python_version(),
            "machine": platform.machine()}  # fmt: skip


def _targets(f: dict[str, Any], ratios: dict[str, float]) -> list[tuple[str, float, str, bool]]:
    """The issue's targets: (name, measured, bound, met)."""
    at_least = [(name, ratios[name], bound) for name, bound in (
        ("end_to_end / copy_ceiling", 0.35), ("end_to_end / naive_loopback", 3),
        ("end_to_end_1ms / naive_1ms", 20))]  # fmt: skip
    at_most = [
        ("p99 ms at 5k odds/s", f["latency_5000"]["p99_ms"], 100),
        ("p99 ms at 20k odds/s", f["latency_20000"]["p99_ms"], 250),
        ("peak RSS MB (full load, stall)",
         max(f["end_to_end"]["peak_rss_mb"], f["stall"]["peak_rss_mb"]), 200),
    ]  # fmt: skip
    return [(n, v, f">= {b}", v >= b) for n, v, b in at_least] + [
        (n, v, f"<= {b}", v <= b) for n, v, b in at_most
    ]


def _report(r: Results, tmp: Path, machine: dict[str, Any]) -> None:
    f = r.figures
    e2e, copy = f["end_to_end"]["odds_per_s"], f["copy_ceiling"]["rows_per_s"]
    ratios = {
        "end_to_end / copy_ceiling": round(e2e / copy, 3),
        "end_to_end / naive_loopback": round(e2e / f["naive_loopback"]["odds_per_s"], 1),
        "end_to_end_1ms / naive_1ms": round(
            f["end_to_end_1ms"]["odds_per_s"] / f["naive_1ms"]["odds_per_s"], 1
        ),
    }
    targets = _targets(f, ratios)
    out = {"machine": machine, "figures": f, "ratios": ratios,
           "targets": [{"target": t, "measured": m, "bound": b, "met": ok}
                       for t, m, b, ok in targets]}  # fmt: skip
    (tmp / "latest.json").write_text(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode())
    lines = [f"Machine: {out['machine']}", "", "| measure | figures |", "|---|---|"]
    for k, v in f.items():
        lines.append(f"| {k} | " + ", ".join(f"{a}={b}" for a, b in v.items()) + " |")
    lines += ["", "| target | measured | bound | met |", "|---|---|---|---|"]
    lines += [f"| {t} | {m} | {b} | {'yes' if ok else 'NO'} |" for t, m, b, ok in targets]
    text = "\n".join(lines)
    (tmp / "latest.md").write_text(text + "\n")
    print("\n" + text)


def cli() -> None:
    """``python -m bench.run``."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--odds", type=int, default=1_000_000, help="odds in the end-to-end run")
    p.add_argument("--latency-s", type=float, default=10.0, help="seconds per offered rate")
    p.add_argument("--naive-s", type=float, default=15.0, help="seconds per naive run")
    p.add_argument("--stall-s", type=float, default=30.0, help="database outage length")
    sys.exit(asyncio.run(main(p.parse_args())))


if __name__ == "__main__":
    cli()
