"""``ingestor demo``: the whole demo in one command, without containers.

A database of its own (created when missing), the schema migrated, the bundled simulator on a
free loopback port and the daemon reading it; Ctrl-C (or SIGTERM) stops the daemon first, so
that it flushes what it accepted, then the simulator. Each child runs in its own session, so
that the terminal's Ctrl-C reaches only this process, which stops them in that order."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import sys
import urllib.request
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit, urlunsplit

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/odds_demo"
# The daemon's own bound (shutdown_timeout_s, 10 s by default) and a margin for its exit.
DAEMON_STOP_S = 30.0
SIMULATOR_STOP_S = 10.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``demo`` subcommand's options."""
    a = parser.add_argument
    a(
        "--database-url",
        default=None,
        help=f"the demo's database, created when missing "
        f"(default: $INGESTOR_DATABASE_URL, else {DEFAULT_URL})",
    )
    a("--config", type=Path, default=None, help="TOML config file (default: as for run)")
    a("--metrics-port", type=int, default=None, help="the daemon's /metrics port (default 9108)")
    a("--events-per-s", type=float, default=50.0, help="the simulator's event rate (default 50)")


def masked(url: str) -> str:
    """The URL with any password hidden (in the authority or as a query parameter)."""
    parts = urlsplit(url)
    user, at, hosts = parts.netloc.rpartition("@")
    if at and ":" in user:
        user = user.split(":", 1)[0] + ":***"
    query = "&".join(
        f"{k}=***" if k == "password" else f"{k}={v}" for k, v in parse_qsl(parts.query, True)
    )
    return urlunsplit(parts._replace(netloc=f"{user}{at}{hosts}", query=query))


def free_port() -> int:
    """A free loopback port for the simulator."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def prepare(url: str) -> None:
    """Create the database when missing and migrate it to the newest schema."""
    from ingestor.storage.db import create_database  # the composition root's storage imports
    from ingestor.storage.migrations import migrate

    created = asyncio.run(create_database(url, wait_s=10))
    print(f"demo: database {masked(url)} {'created' if created else 'exists'}", file=sys.stderr)
    print(f"demo: {migrate(url, 'head')}", file=sys.stderr)


def main(args: argparse.Namespace) -> int:
    """Entry of ``ingestor demo``."""
    url = args.database_url or os.environ.get("INGESTOR_DATABASE_URL") or DEFAULT_URL
    prepare(url)
    return asyncio.run(_run(args, url))


async def _spawn(*args: str, env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ingestor", *args, env=env, start_new_session=True
    )


async def _simulator_answers(
    base: str, proc: asyncio.subprocess.Process, stop: asyncio.Event
) -> None:
    """Wait until the simulator serves its REST listing (or fail if it exited); returns
    early when the demo is asked to stop."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    probe = f"{base}/copilot/fixtures?league=NBA"
    while not stop.is_set():
        if proc.returncode is not None:
            raise SystemExit(f"demo: the simulator exited with {proc.returncode}")
        try:
            await asyncio.to_thread(urllib.request.urlopen, probe, timeout=2)
            return
        except OSError:
            if loop.time() > deadline:
                raise SystemExit("demo: the simulator did not answer within 30 s") from None
            await asyncio.sleep(0.2)


async def _stop(proc: asyncio.subprocess.Process, within_s: float) -> int:
    """SIGTERM, then SIGKILL after ``within_s``; the exit code."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), within_s)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode


async def _run(args: argparse.Namespace, url: str) -> int:
    stop = asyncio.Event()  # Ctrl-C or SIGTERM, from the start: no child is ever left behind
    loop = asyncio.get_running_loop()
    # SIGHUP too: a closed terminal must not leave the children (sessions of their own) behind.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, stop.set)
    children: list[asyncio.subprocess.Process] = []  # the daemon first: it stops first
    try:
        return await _serve(args, url, stop, children)
    finally:
        for proc, within_s in zip(children, (DAEMON_STOP_S, SIMULATOR_STOP_S), strict=False):
            await _stop(proc, within_s)


async def _serve(
    args: argparse.Namespace,
    url: str,
    stop: asyncio.Event,
    children: list[asyncio.subprocess.Process],
) -> int:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPTICODDS_API_KEY")}
    port = free_port()
    base = f"http://127.0.0.1:{port}/api/v3"
    rate = str(args.events_per_s)
    sim = await _spawn("simulate", "--host", "127.0.0.1", "--port", str(port), "-r", rate, env=env)
    children.append(sim)
    await _simulator_answers(base, sim, stop)
    if stop.is_set():
        return 0
    env |= {"INGESTOR_DEMO": "true", "INGESTOR_DEMO_API_BASE_URL": base}
    env["INGESTOR_DATABASE_URL"] = url
    if args.metrics_port is not None:
        env["INGESTOR_METRICS_PORT"] = str(args.metrics_port)
    run = ["run", *(["--config", str(args.config)] if args.config else [])]
    daemon = await _spawn(*run, env=env)
    children.insert(0, daemon)
    print(
        f"demo: simulator {base} (pid {sim.pid}), daemon pid {daemon.pid}; in another shell:\n"
        f"  psql '{masked(url)}' -c 'SELECT league, status, count(*) FROM odds GROUP BY 1, 2'\n"
        f"Ctrl-C stops both.",
        file=sys.stderr,
    )
    waits = {asyncio.ensure_future(w) for w in (stop.wait(), daemon.wait(), sim.wait())}
    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for w in waits:
        w.cancel()
    failed = not stop.is_set()  # a child ended by itself
    code = await _stop(daemon, DAEMON_STOP_S)
    await _stop(sim, SIMULATOR_STOP_S)
    if failed:
        print(f"demo: stopped, the daemon exited with {code}", file=sys.stderr)
        return code or 1
    print(f"demo: stopped (daemon exit code {code})", file=sys.stderr)
    return code
