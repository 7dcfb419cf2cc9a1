"""The benchmark: COPY ceiling, write path, end to end, latency, naive baseline, stall; each
end-to-end run and the stall checked against the feed's truth (``bench/ledger.py``).

    .venv/bin/python -m bench.run [--odds 1000000] [--latency-s 10] [--naive-s 15] [--stall-s 30]
                                  [--groups 3] [--e2e-runs 3]

The daemon runs as in production: several connection groups (``bench/workload.py``: about 100
fixtures over the groups' leagues, a realistic mix of updates, locks and settlements), and a
REST re-hydration after every connect, answered by the feed (``bench/feed.py``).

Everything runs in one go on one database (``BENCH_DB``, default ``ingestor_bench``, made afresh
on the server of ``BENCH_ADMIN_URL``) and prints a markdown table; JSON, markdown and the
daemon's logs land in ``bench/results/``.
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

from bench import ceiling, history, ledger
from bench.ceiling import history_records
from bench.daemon import Daemon, Pace, Run, run_daemon
from bench.feed import STREAM_PATH, Feed
from bench.workload import Workload, build, split_frame
from ingestor.config import WriterSettings
from ingestor.domain.decode import decode_event
from ingestor.logs import configure as configure_logs
from ingestor.metrics import Metrics
from ingestor.storage.migrations import upgrade
from ingestor.storage.write import Writer
from loopback.tcpproxy import TcpProxy

ROOT = Path(__file__).parents[1]
ADMIN = os.environ.get("BENCH_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
DB = os.environ.get("BENCH_DB", "ingestor_bench")  # dropped and created again by every run
TABLES = (
    "odds, odds_changes, change_events, history_marks, fixtures, fixture_status_history, "
    "stream_cursors, dead_letters"
)


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
    daemon_logs: dict[str, Any] = field(default_factory=dict)  # warnings and errors, by run
    ledger: dict[str, list[str]] = field(default_factory=dict)  # the check's problems, by run

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
    for g in w.groups:
        for frame, entry in zip(g.frames, g.entry_ids, strict=True):
            etype, data = split_frame(frame)
            out.append(decode_event(g.key, "copilot", etype, data, entry, now))
    return out


async def copy_ceiling(url: str, w: Workload, r: Results) -> None:
    """Binary COPY of the workload's history rows into the 0004-shaped reference table
    (``bench/ceiling.py``); the median of three fresh tables."""
    records = history_records(w)
    runs = await ceiling.copy_ceiling(url, records)
    r.add("copy_ceiling", rows=len(records), rows_per_s=runs[len(runs) // 2], runs_rows_per_s=runs)


async def copy_own(url: str, events: list[Any], r: Results) -> None:
    """The same rows, COPYed in this build's history shape (the ceiling of the shape)."""
    changes, evs = ceiling.own_records(events)
    runs = await ceiling.copy_own(url, changes, evs)
    r.add(
        "copy_own_shape",
        rows=len(changes),
        events=len(evs),
        rows_per_s=runs[len(runs) // 2],
        runs_rows_per_s=runs,
    )


HISTORY_SIZE = """
SELECT coalesce(sum(pg_total_relation_size(relid)), 0)::bigint FROM (
    SELECT relid FROM pg_partition_tree('odds_changes') WHERE isleaf
    UNION ALL SELECT relid FROM pg_partition_tree('change_events') WHERE isleaf) t
"""


async def history_size(url: str, received: int, r: Results) -> None:
    """Bytes on disk of history (both tables, every index), per odd received; after a vacuum
    (what autovacuum does to a table that only grows: the visibility map)."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("VACUUM ANALYZE odds_changes, change_events")
        size = await conn.fetchval(HISTORY_SIZE)
        rows = await conn.fetchval("SELECT count(*) FROM odds_changes")
        events = await conn.fetchval("SELECT count(*) FROM change_events")
    finally:
        await conn.close()
    r.add(
        "history_size",
        bytes=size,
        rows_stored=rows,
        events_stored=events,
        odds_received=received,
        bytes_per_odd_received=round(size / received, 1),
        bytes_per_row_stored=round(size / max(1, rows), 1),
    )


async def write_path(url: str, events: list[Any], r: Results) -> None:
    """The writer alone: staging COPY, history, newer-wins merge, cursor."""
    queue: asyncio.Queue[Any] = asyncio.Queue()
    for ev in events:
        queue.put_nowait(ev)
    queue.put_nowait(None)
    # The daemon's own batch cap and connection count.
    writer = Writer(url, queue, Metrics(), WriterSettings(flush_retry_max_s=1))
    rows = sum(len(e.odds) for e in events)
    started = time.perf_counter()
    await writer.run()
    elapsed = time.perf_counter() - started
    r.add(
        "write_path",
        rows=rows,
        seconds=round(elapsed, 2),
        rows_per_s=round(rows / elapsed),
        flushes=writer.health().flushes,
    )


def _rehydration(run: Run) -> dict[str, Any]:
    """What re-hydration cost: REST calls, snapshot rows, its longest group, reconnects."""
    log = run.log
    return {
        "rest_requests": run.rest_requests,
        "rehydrate_rows": log["rows"],
        "rehydrate_s_max": log["seconds_max"],
        "rehydrations": log["rehydrations"],
        "stream_connections": sum(run.connections.values()),
    }


async def _ledger(url: str, w: Workload, r: Results, name: str) -> None:
    """The run's ledger check (bench/ledger.py): stored is what the feed sent."""
    started = time.perf_counter()
    problems = r.ledger[name] = await ledger.check(url, w)
    took = time.perf_counter() - started
    print(f"  {name}: ledger check {problems or 'passed'} ({took:.1f} s)", flush=True)


def _problems(r: Results, run: Run, name: str) -> None:
    """The daemon's exit code and the warnings and errors it logged, kept for the report."""
    r.daemon_logs[name] = {"exit_code": run.exit_code, **run.log["problems"]}
    if run.log["problems"] or run.exit_code != 0:
        print(
            f"  {name}: daemon exit {run.exit_code}, log warnings/errors {run.log['problems']}",
            flush=True,
        )


async def end_to_end(
    db_url: str, pg_url: str, w: Workload, r: Results, name: str, tmp: Path
) -> None:
    """The daemon against the feed, every group flat out, until every odd is committed; the
    rate counts streamed odds only (snapshot rows are extra work, reported beside)."""
    await _truncate(pg_url)
    run = await run_daemon(db_url, pg_url, w, tmp / f"daemon-{name}.log")
    _problems(r, run, name)
    await _ledger(pg_url, w, r, name)
    elapsed = run.seconds
    r.add(
        name,
        odds=w.total_odds,
        events=w.total_frames,
        seconds=round(elapsed, 2),
        odds_per_s=round(w.total_odds / elapsed),
        events_per_s=round(w.total_frames / elapsed),
        mb_per_s=round(run.feed_bytes / elapsed / 1e6, 1),
        daemon_cpu=round(run.daemon_cpu_s / elapsed, 2),
        postgres_cpu=round(run.postgres_cpu_s / elapsed, 2),
        # CPU per streamed odd: the cost the rate hides when a side waits for the other.
        daemon_us_per_odd=round(run.daemon_cpu_s / w.total_odds * 1e6, 2),
        postgres_us_per_odd=round(run.postgres_cpu_s / w.total_odds * 1e6, 2),
        feed_cpu=round(run.bench_cpu_s / elapsed, 2),
        peak_rss_mb=round(run.peak_rss_mb),
        **_rehydration(run),
    )


async def end_to_ends(url: str, w: Workload, r: Results, tmp: Path, runs: int) -> None:
    """``runs`` end-to-end runs: the median (by rate) is ``end_to_end``, the spread beside it
    (machines here differ by 2x from run to run; a target met only on a fast run is not)."""
    names = [f"end_to_end_{i + 1}" for i in range(runs)]
    for name in names:
        await end_to_end(url, url, w, r, name, tmp)
    ordered = sorted((r.figures.pop(n) for n in names), key=lambda e: e["odds_per_s"])
    r.figures["end_to_end"] = ordered[len(ordered) // 2]
    spread = {k: [e[k] for e in ordered] for k in SPREAD}
    r.add("end_to_end_spread", runs=runs, **{k: f"{min(v)}-{max(v)}" for k, v in spread.items()})


SPREAD = ("odds_per_s", "daemon_us_per_odd", "postgres_us_per_odd", "peak_rss_mb")


def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def latency(url: str, rate: int, seconds: float, r: Results, tmp: Path) -> None:
    """Feed write to commit (read from the database) at a fixed offered rate, the sum over
    every group; all groups' frames together."""
    await _truncate(url)
    w = build(int(rate * seconds), seed=rate)
    run = await run_daemon(
        url, url, w, tmp / f"daemon-latency-{rate}.log", Pace(rate=rate, period_s=0.002)
    )
    _problems(r, run, f"latency_{rate}")
    # The first tenth of the run is start-up (and re-hydration beside it), not steady state.
    lat = run.latencies_ms(after=run.first_write + seconds / 10)
    r.add(
        f"latency_{rate}",
        offered_odds_per_s=rate,
        p50_ms=round(_pct(lat, 0.5), 1),
        p99_ms=round(_pct(lat, 0.99), 1),
        max_ms=round(max(lat), 1),
        events=len(lat),
        groups=len(w.groups),
        **_rehydration(run),
    )


async def naive(pg_url: str, w: Workload, r: Results, name: str, seconds: float) -> None:
    """The vendor-sample loop with one INSERT per odd, for ``seconds``, on the first group's
    stream (one loop reads one connection; it never gets to the end of it)."""
    await _truncate(pg_url)
    feed = Feed(w)
    port = await feed.start()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(ROOT / "bench" / "naive.py"),
        f"http://127.0.0.1:{port}{STREAM_PATH}",
        pg_url,
        *w.groups[0].leagues,
        stdout=asyncio.subprocess.PIPE,
    )
    await asyncio.sleep(seconds)  # the measurement window itself
    proc.send_signal(signal.SIGTERM)
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    await feed.close()
    got = orjson.loads(out.strip().splitlines()[-1])
    r.add(
        name,
        odds=got["odds"],
        seconds=round(got["seconds"], 1),
        odds_per_s=round(got["odds"] / got["seconds"]),
    )


def _port(url: str) -> int:
    return int(url.rpartition(":")[2].partition("/")[0])


async def stall(pg_url: str, w: Workload, r: Results, tmp: Path, outage_s: float) -> None:
    """PostgreSQL unreachable for ``outage_s`` at full feed rate: memory, then the drain."""
    await _truncate(pg_url)
    proxy = TcpProxy("127.0.0.1", _port(ADMIN))
    port = await proxy.start()

    async def outage(daemon: Daemon, _: Feed) -> dict[str, Any]:
        await asyncio.sleep(3)  # full rate first
        await proxy.cut()
        await asyncio.sleep(outage_s)  # the outage itself
        rss_during = daemon.peak_rss_mb()
        await proxy.restore()
        return {"rss_during": rss_during, "restored": time.time()}

    try:
        run = await run_daemon(
            _url(ADMIN, port),
            pg_url,
            w,
            tmp / "daemon-stall.log",
            Pace(period_s=0.05),
            during=outage,
        )
    finally:
        await proxy.close()
    _problems(r, run, "stall")
    await _ledger(pg_url, w, r, "stall")
    drained = run.first_write + run.seconds - run.extra["restored"]
    r.add(
        "stall",
        outage_s=outage_s,
        peak_rss_mb_during=round(run.extra["rss_during"]),
        peak_rss_mb=round(run.peak_rss_mb),
        drain_s=round(drained, 1),
    )


async def main(args: argparse.Namespace) -> int:
    r = Results()
    tmp = ROOT / "bench" / "results"
    tmp.mkdir(parents=True, exist_ok=True)
    url = await _fresh_db()
    print(f"building {args.odds} odds over {args.groups} groups ...", flush=True)
    w = build(args.odds, groups=args.groups)
    r.add("workload", **w.describe())
    await copy_ceiling(url, w, r)
    events = _decode(w)
    await copy_own(url, events, r)
    await _truncate(url)
    await write_path(url, events, r)
    del events
    await end_to_ends(url, w, r, tmp, args.e2e_runs)
    received = w.total_odds + r.figures["end_to_end"]["rehydrate_rows"]
    await history_size(url, received, r)
    for rate in (1500, 5000, 20000):
        await latency(url, rate, args.latency_s, r, tmp)
    small = build(min(args.odds, 300_000), seed=9, groups=args.groups)
    await naive(url, small, r, "naive_loopback", args.naive_s)
    proxy = TcpProxy("127.0.0.1", _port(ADMIN), delay_s=0.001)
    far = _url(ADMIN, await proxy.start())
    await naive(far, small, r, "naive_1ms", args.naive_s)
    far_w = build(min(args.odds, 500_000), seed=5, groups=args.groups)
    await end_to_end(far, url, far_w, r, "end_to_end_1ms", tmp)
    await proxy.close()
    await stall(url, w, r, tmp, args.stall_s)
    await at_scale(args.history_rows, r, tmp)
    _report(r, tmp, await _machine(url))
    return 0


async def at_scale(rows: int, r: Results, tmp: Path) -> None:
    """The README's analyst queries on a history of ``rows`` rows (bench/history.py)."""
    name = f"{DB}_history"
    conn = await asyncpg.connect(ADMIN)
    await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    await conn.execute(f"CREATE DATABASE {name}")
    await conn.close()
    url = f"{ADMIN.rpartition('/')[0]}/{name}"
    print(f"filling a history of {rows} rows ...", flush=True)
    r.add("history_at_scale", **await history.fill(url, rows))
    plans = []
    for query, result in (await history.queries(url)).items():
        plans.append(f"-- query ({query})\n{result.pop('plan')}\n")
        r.add(f"query_{query}", **result)
    (tmp / "plans.txt").write_text("\n".join(plans))
    conn = await asyncpg.connect(ADMIN)
    await conn.execute(f"DROP DATABASE {name} WITH (FORCE)")
    await conn.close()


async def _machine(url: str) -> dict[str, Any]:
    conn = await asyncpg.connect(url)
    try:
        postgres = await conn.fetchval("SHOW server_version")
    finally:
        await conn.close()
    return {
        "date": datetime.now(UTC).date().isoformat(),
        "cores": os.cpu_count(),
        "postgres": postgres,
        "python": platform.python_version(),
        "machine": platform.machine(),
    }


def _targets(f: dict[str, Any], ratios: dict[str, float]) -> list[tuple[str, float, str, bool]]:
    """The issues' targets: (name, measured, bound, met)."""
    at_least = [
        (name, ratios[name], bound)
        for name, bound in (
            ("end_to_end / copy_ceiling", 0.55),
            ("end_to_end / naive_loopback", 3),
            ("end_to_end_1ms / naive_1ms", 20),
        )
    ]
    at_most = [
        ("daemon CPU µs per odd (end to end)", f["end_to_end"]["daemon_us_per_odd"], 8),
        ("history bytes per odd received", f["history_size"]["bytes_per_odd_received"], 100),
        ("p99 ms at 5k odds/s", f["latency_5000"]["p99_ms"], 50),
        ("p99 ms at 20k odds/s", f["latency_20000"]["p99_ms"], 250),
        (
            "peak RSS MB (full load, stall)",
            max(f["end_to_end"]["peak_rss_mb"], f["stall"]["peak_rss_mb"]),
            200,
        ),
        *((f"query ({q}) server ms, warm", f[f"query_{q}"]["server_ms"], 10) for q in "abc"),
        *(
            (
                f"query ({q}) scans a whole partition",
                int(f[f"query_{q}"]["scans_a_whole_partition"]),
                0,
            )
            for q in "abc"
        ),
    ]
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
    wrong = sum(len(p) for p in r.ledger.values())
    targets = [
        *_targets(f, ratios),
        ("ledger check problems (every end-to-end run, the stall)", wrong, "<= 0", wrong == 0),
    ]
    out = {
        "machine": machine,
        "figures": f,
        "ratios": ratios,
        "targets": [{"target": t, "measured": m, "bound": b, "met": ok} for t, m, b, ok in targets],
        "daemon_logs": r.daemon_logs,
        "ledger": r.ledger,
    }
    (tmp / "latest.json").write_text(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode())
    lines = [f"Machine: {out['machine']}", "", "| measure | figures |", "|---|---|"]
    for k, v in f.items():
        lines.append(f"| {k} | " + ", ".join(f"{a}={b}" for a, b in v.items()) + " |")
    lines += ["", "| target | measured | bound | met |", "|---|---|---|---|"]
    lines += [f"| {t} | {m} | {b} | {'yes' if ok else 'NO'} |" for t, m, b, ok in targets]
    lines += ["", "Daemon logs (bench/results/daemon-*.log), exit code and warnings/errors:"]
    lines += [
        f"- {k}: " + ", ".join(f"{a}={b}" for a, b in v.items()) for k, v in r.daemon_logs.items()
    ]
    lines += ["", "Ledger check (bench/ledger.py), by run:"]
    lines += [f"- {k}: {p or 'passed'}" for k, p in r.ledger.items()]
    text = "\n".join(lines)
    (tmp / "latest.md").write_text(text + "\n")
    print("\n" + text)


def cli() -> None:
    """``python -m bench.run``."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--odds", type=int, default=1_000_000, help="odds in the end-to-end run")
    p.add_argument("--latency-s", type=float, default=10.0, help="seconds per offered rate")
    p.add_argument("--e2e-runs", type=int, default=3, help="end-to-end runs (median, spread)")
    p.add_argument("--naive-s", type=float, default=15.0, help="seconds per naive run")
    p.add_argument("--stall-s", type=float, default=30.0, help="database outage length")
    p.add_argument(
        "--history-rows",
        type=int,
        default=20_000_000,
        help="rows of the history the analyst queries run on",
    )
    p.add_argument("--groups", type=int, default=3, help="connections (2 leagues each)")
    args = p.parse_args()
    configure_logs("console", "warning")  # the in-process writer's per-flush lines are debug
    sys.exit(asyncio.run(main(args)))


if __name__ == "__main__":
    cli()
