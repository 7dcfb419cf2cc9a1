"""``ingestor simulate``: the simulator as a long-running server with a steady event rate."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys

import structlog
from aiohttp import web

from ingestor.errors import PortUnavailable
from ingestor.simulator.server import Faults, SimServer
from ingestor.simulator.world import World

log = structlog.get_logger("ingestor.simulator")

DEFAULT_LEAGUES = (
    "basketball:NBA,basketball:NCAAB,football:NFL,baseball:MLB,"
    "soccer:England - Premier League,soccer:Spain - La Liga"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``simulate`` subcommand's options."""
    a = parser.add_argument
    parser.formatter_class = argparse.ArgumentDefaultsHelpFormatter  # every default shown
    a("--host", default="0.0.0.0", help="listen address")
    a("--port", type=int, default=8080, help="listen port")
    a("--seed", type=int, default=1, help="random seed: the same seed gives the same world")
    a(
        "-r",
        "--events-per-s",
        type=float,
        default=50.0,
        help="events emitted per second, all leagues and streams together",
    )
    a("--leagues", default=DEFAULT_LEAGUES, help="comma list of sport:league")
    a(
        "--fixtures-per-league",
        type=int,
        default=4,
        help="fixtures each league starts with (finished ones are replaced)",
    )
    a(
        "--sportsbooks",
        default="DraftKings,FanDuel",
        help="comma list of the regular stream's books",
    )
    a("--api-key", default=None, help="accept only this key; none: any key")
    a(
        "--ping-interval-s",
        type=float,
        default=5.0,
        help="seconds between ping events on an idle stream",
    )
    a("--retry-ms", type=int, default=5000, help="the retry: value sent on every event")
    a("--ignore-last-entry-id", action="store_true", help="never replay: restart at 'now'")
    a("--duplicate-rate", type=float, default=0.0, help="share of events sent twice")
    a("--reorder-rate", type=float, default=0.0, help="share of events sent one step late")
    a("--drop-every-s", type=float, default=0.0, help="cut every stream this often (0: never)")
    a("--stall-every-s", type=float, default=0.0, help="go silent this often (0: never)")
    a(
        "--stall-for-s",
        type=float,
        default=20.0,
        help="how long each stall lasts (with --stall-every-s)",
    )


def parse_leagues(text: str) -> list[tuple[str, str]]:
    """``sport:league,...`` into pairs; a clear error names a bad item."""
    pairs = []
    for item in filter(None, (p.strip() for p in text.split(","))):
        sport, sep, league = item.partition(":")
        if not sep or not sport or not league:
            raise ValueError(f"--leagues: {item!r} is not sport:league")
        pairs.append((sport, league))
    if not pairs:
        raise ValueError("--leagues: at least one sport:league is needed")
    return pairs


async def _every(seconds: float, action: object, stop: asyncio.Event) -> None:
    while seconds > 0 and not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds)
        if not stop.is_set():
            await action()  # type: ignore[operator]


async def serve(args: argparse.Namespace) -> int:
    """Run until SIGTERM/SIGINT."""
    world = World(
        parse_leagues(args.leagues),
        seed=args.seed,
        fixtures_per_league=args.fixtures_per_league,
        sportsbooks=tuple(b.strip() for b in args.sportsbooks.split(",") if b.strip()),
    )
    faults = Faults(
        honour_last_entry_id=not args.ignore_last_entry_id,
        ping_interval_s=args.ping_interval_s,
        retry_ms=args.retry_ms,
        duplicate_rate=args.duplicate_rate,
        reorder_rate=args.reorder_rate,
        api_key=args.api_key,
    )
    server = SimServer(world, faults)
    runner = web.AppRunner(server.app(), access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    try:
        await web.TCPSite(runner, args.host, args.port).start()
    except OSError as exc:
        await runner.cleanup()
        raise PortUnavailable(
            f"simulate: port {args.host}:{args.port} cannot be opened: {exc.strerror or exc} "
            "(choose another with --port)"
        ) from None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info(
        "simulator_started",
        host=args.host,
        port=args.port,
        seed=args.seed,
        events_per_s=args.events_per_s,
        leagues=len(world.leagues),
    )

    async def generate() -> None:
        tick = 0.05
        carry = 0.0
        while not stop.is_set():
            carry += args.events_per_s * tick
            n, carry = int(carry), carry - int(carry)
            if n:
                await server.emit(n)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), tick)

    async def drop() -> None:
        log.info("simulator_drop", streams=server.cut_all(mid_frame=True))

    async def stall() -> None:
        faults.stall = True
        log.info("simulator_stall", seconds=args.stall_for_s)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), args.stall_for_s)
        faults.stall = False

    tasks = [
        asyncio.create_task(generate(), name="generate"),
        asyncio.create_task(_every(args.drop_every_s, drop, stop), name="drop"),
        asyncio.create_task(_every(args.stall_every_s, stall, stop), name="stall"),
    ]
    await stop.wait()
    server.cut_all(mid_frame=False)
    await asyncio.gather(*tasks)
    await runner.cleanup()
    log.info("simulator_stopped", events=len(world.log))
    return 0


def main(args: argparse.Namespace) -> int:
    """Entry of ``ingestor simulate``."""
    try:
        parse_leagues(args.leagues)
    except ValueError as exc:
        print(f"ingestor simulate: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(serve(args))
